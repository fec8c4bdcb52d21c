//! KPIs and diagnosis on the real Bazel 4.2.3 fixture runs
//! (tests/fixtures/bazel-4.2.3, captured against BuildGrid).

use std::path::PathBuf;

use proof_kpi::{
    Analysis, Analyzer, CasSource, Cause, CountSource, CriticalPathSource, TimingSource,
};
use proof_stream::delimited::DelimitedReader;

fn dir(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
}

fn analyze(scenario: &str, with_log: bool) -> Analysis {
    let d = dir(scenario);
    let mut a = Analyzer::new();
    let bep = std::fs::File::open(d.join("bep.bin")).unwrap();
    for rec in DelimitedReader::new(std::io::BufReader::new(bep)) {
        a.push_event(&rec.unwrap()).unwrap();
    }
    if with_log {
        let p = d.join("execution_log.bin");
        a.push_exec_log(|| std::fs::File::open(&p)).unwrap();
    }
    a.finish().unwrap()
}

#[test]
fn remote_build_all_misses_and_queue_dominated_critical_path() {
    let a = analyze("remote-build", true);
    let k = &a.kpis;
    let m = k.process_mix.as_ref().unwrap();
    assert_eq!(m.source, CountSource::ExecLog);
    assert_eq!((m.remote_execution, m.remote_cache_hit, m.local), (8, 0, 0));
    assert_eq!(m.internal, None, "the exec log has no internal entries");
    assert_eq!(m.remote_share, Some(1.0));
    assert_eq!(k.cache.lookups, Some(8));
    assert_eq!(k.cache.remote_hit_rate, Some(0.0));
    // 4.2.3 logs have no SpawnMetrics: no start times, no time split.
    assert_eq!(k.time_to_first_cache_hit.ms, None);
    assert_eq!(k.time_to_first_remote_execution.ms, None);
    assert_eq!(k.remote_time, None);
    assert_eq!(
        k.cache.local_action_cache, None,
        "4.2.3 has no action_cache_statistics"
    );
    // …nor action digests.
    assert_eq!(k.spawns_without_digest, Some(8));
    assert!(k.actions.is_empty());
    // CAS: listed input digests of the 8 remote spawns, outputs' sizes.
    let cas = k.cas.as_ref().unwrap();
    assert_eq!(cas.input_source, Some(CasSource::ListedInputs));
    assert_eq!(cas.remote_input_files, Some(23));
    assert_eq!(cas.remote_input_bytes, Some(34572));
    assert_eq!(cas.remote_output_bytes, Some(21385));
    // Critical path from the tool log: "Critical Path: 2.83s, Remote (96.72% …): [… queue: 50.64% …]".
    let cp = k.critical_path.as_ref().unwrap();
    assert_eq!(cp.source, CriticalPathSource::CriticalPathLog);
    assert_eq!(cp.ms, Some(2830));
    assert_eq!(cp.remote_pct, Some(96.72));
    assert_eq!(cp.breakdown_pct["queue"], 50.64);
    assert_eq!(k.wall_time_ms, Some(11181));
    assert_eq!(k.analysis_cache.fully_reused, Some(false));
    assert_eq!(k.analysis_cache.targets_configured, Some(105));

    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::Queueing, "{}", d.summary);
    assert!(d.summary.contains("50.6%"), "{}", d.summary);
    let causes: Vec<Cause> = d.findings.iter().map(|f| f.cause).collect();
    assert_eq!(causes, vec![Cause::Queueing, Cause::CacheMiss]);
    assert_eq!(d.evidence[0].fact, "critical_path.breakdown_pct.queue");
}

#[test]
fn remote_test_reuses_analysis_and_times_the_remote_test_from_bep() {
    let a = analyze("remote-test", true);
    let k = &a.kpis;
    assert_eq!(k.analysis_cache.fully_reused, Some(true));
    assert_eq!(k.analysis_cache.packages_loaded, Some(0));
    // The remote test attempt started 566 ms after the build (BEP TestResult).
    assert_eq!(k.time_to_first_remote_execution.ms, Some(566));
    assert_eq!(
        k.time_to_first_remote_execution.source,
        Some(TimingSource::BepTestResult)
    );
    assert_eq!(k.time_to_first_cache_hit.ms, None);
    assert_eq!(
        k.critical_path.as_ref().unwrap().breakdown_pct["queue"],
        37.16
    );
    // 2 remote executions are below the cache_miss minimum; queue < 50%.
    assert_eq!(a.diagnosis.dominant_cause, Cause::None);
    assert!(a.diagnosis.findings.is_empty());
}

#[test]
fn remote_cache_hit_is_all_hits() {
    let a = analyze("remote-cache-hit", true);
    let k = &a.kpis;
    assert_eq!(k.cache.remote_hit_rate, Some(1.0));
    assert_eq!(k.cache.disk_hit_rate, Some(0.0));
    assert_eq!(k.process_mix.as_ref().unwrap().remote_share, Some(0.0));
    let cas = k.cas.as_ref().unwrap();
    assert_eq!(
        cas.cache_hit_output_bytes,
        Some(21385),
        "same outputs as remote-build"
    );
    assert_eq!(cas.remote_input_bytes, None, "nothing executed remotely");
    assert_eq!(a.diagnosis.dominant_cause, Cause::None);
    assert!(
        a.diagnosis.summary.contains("8 remote cache hits"),
        "{}",
        a.diagnosis.summary
    );
}

#[test]
fn local_only_is_an_eligibility_problem() {
    let a = analyze("local-only", true);
    let m = a.kpis.process_mix.as_ref().unwrap();
    assert_eq!((m.local, m.remote_execution), (8, 0));
    assert_eq!(a.kpis.cas.as_ref().unwrap().remote_input_bytes, None);
    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::Eligibility);
    assert!(
        d.summary.contains("8 ran on the Bazel host"),
        "{}",
        d.summary
    );
    assert!(
        d.summary.contains("--remote_executor is not set"),
        "{}",
        d.summary
    );
}

#[test]
fn failing_build_is_not_blamed_on_the_backend() {
    let a = analyze("failing-build", true);
    let k = &a.kpis;
    assert_eq!(k.signals.failed_spawns, Some(1));
    assert_eq!(k.signals.failed_remote_spawns, Some(1));
    assert!(k.signals.remote_failures.is_empty());
    assert_eq!(
        k.critical_path.as_ref().unwrap().breakdown_pct["queue"],
        46.03
    );
    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::None);
    assert!(d.summary.contains("BUILD_FAILURE"), "{}", d.summary);
    assert!(d.summary.contains("1 spawn(s) failed"), "{}", d.summary);
}

#[test]
fn without_the_exec_log_counts_come_from_process_stats() {
    // 4.2.3 has no runner_count; the "process stats" tool log is next.
    let a = analyze("remote-build", false);
    let m = a.kpis.process_mix.as_ref().unwrap();
    assert_eq!(m.source, CountSource::ProcessStatsLog);
    assert_eq!((m.remote_execution, m.internal), (8, Some(10)));
    assert_eq!(a.kpis.cas, None);
    assert_eq!(a.kpis.signals.failed_spawns, None, "unknown, not 0");
    assert!(!a.kpis.exec_log);
    assert!(a
        .diagnosis
        .missing
        .iter()
        .any(|m| m.starts_with("execution log")));
    // failing-build: 4.2.3 leaves the failed remote spawn out of its count.
    let f = analyze("failing-build", false);
    let m = f.kpis.process_mix.as_ref().unwrap();
    assert_eq!((m.remote_execution, m.internal), (0, Some(2)));
    assert_eq!(m.remote_share, None, "no spawn to divide by");
}

#[test]
fn kpi_json_keeps_absent_values_as_null() {
    let a = analyze("remote-build", true);
    let v = serde_json::to_value(&a.kpis).unwrap();
    assert_eq!(v["kpi_version"], "1");
    assert!(v["time_to_first_cache_hit"]["ms"].is_null());
    assert!(v["remote_time"].is_null());
    assert!(
        v.get("actions").is_none(),
        "per-action data is not in the JSON"
    );
    let d = serde_json::to_value(&a.diagnosis).unwrap();
    assert_eq!(d["diagnosis_version"], "1");
    assert_eq!(d["dominant_cause"], "queueing");
    assert_eq!(d["findings"][1]["cause"], "cache_miss");
}
