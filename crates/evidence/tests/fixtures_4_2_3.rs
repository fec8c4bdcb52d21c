//! Evidence derived from the real Bazel 4.2.3 captures, checked against what
//! the other files of each capture (bep.json, execution_log.json,
//! processes.txt, command.txt, exit_code.txt) say.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proof_evidence::summary::parse_process_summary;
use proof_evidence::{
    derive_from_delimited, Evidence, ImageSource, OptionSource, ProcessSource, RunnerClass,
};
use serde_json::Value;

fn dir(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
}

fn read(scenario: &str, file: &str) -> Vec<u8> {
    let p = dir(scenario).join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn derive(scenario: &str) -> Evidence {
    let bep = read(scenario, "bep.bin");
    let log = read(scenario, "execution_log.bin");
    derive_from_delimited(&bep[..], Some(&log[..])).unwrap()
}

fn bep_json(scenario: &str) -> Vec<Value> {
    String::from_utf8(read(scenario, "bep.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runner counts of the JSON execution log (concatenated pretty objects).
fn json_log_runners(scenario: &str) -> BTreeMap<String, u64> {
    let text = String::from_utf8(read(scenario, "execution_log.json")).unwrap();
    let mut out = BTreeMap::new();
    for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let v = v.unwrap();
        *out.entry(v["runner"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// The container image passed on the command line in command.txt, if any.
fn command_image(scenario: &str) -> Option<String> {
    let text = String::from_utf8(read(scenario, "command.txt")).unwrap();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("--remote_default_exec_properties=container-image="))
        .map(str::to_string)
}

fn command_executor(scenario: &str) -> Option<String> {
    let text = String::from_utf8(read(scenario, "command.txt")).unwrap();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("--remote_executor="))
        .map(str::to_string)
}

/// Checks every scenario-independent fact against the capture's other files.
fn check_common(scenario: &str, ev: &Evidence) {
    let events = bep_json(scenario);
    assert_eq!(ev.event_count, events.len() as u64);
    let started = events.iter().find_map(|e| e.get("started")).unwrap();
    assert_eq!(ev.invocation_id, started["uuid"].as_str().unwrap());
    assert_eq!(ev.command, started["command"].as_str().unwrap());
    assert_eq!(ev.bazel_version, None, "Debian's 4.2.3 sends no version");
    let finished = events.iter().find_map(|e| e.get("finished")).unwrap();
    let exit: i32 = String::from_utf8(read(scenario, "exit_code.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exit_code = ev.exit_code.as_ref().unwrap();
    assert_eq!(exit_code.code, exit);
    assert_eq!(
        exit_code.name,
        finished["exitCode"]["name"].as_str().unwrap()
    );
    assert_eq!(ev.success, exit == 0);
    assert!(ev.complete);
    // started_at is start_time_millis rendered as RFC 3339.
    let millis: i64 = started["startTimeMillis"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let t = time::OffsetDateTime::parse(
        ev.started_at.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((t.unix_timestamp_nanos() / 1_000_000) as i64, millis);
    assert!(ev.finished_at.as_deref().unwrap() > ev.started_at.as_deref().unwrap());

    // The process figures equal processes.txt, and the exec-log figure equals
    // the JSON execution log.
    let printed = String::from_utf8(read(scenario, "processes.txt")).unwrap();
    let printed = parse_process_summary(&printed).unwrap();
    let by_source = |s| ev.processes.sources.iter().find(|f| f.source == s);
    for s in [
        ProcessSource::ProcessStatsLog,
        ProcessSource::ProgressInfoLine,
    ] {
        let f = by_source(s).unwrap_or_else(|| panic!("{scenario}: no {s:?} figure"));
        assert_eq!(f.total, Some(printed.total), "{scenario} {s:?}");
        assert_eq!(f.runners, printed.runners, "{scenario} {s:?}");
    }
    assert!(by_source(ProcessSource::RunnerCount).is_none());
    assert_eq!(ev.processes.source, Some(ProcessSource::ProcessStatsLog));
    assert_eq!(
        ev.processes.remote_executions,
        Some(printed.runners.get("remote").copied().unwrap_or(0))
    );
    let log_runners = json_log_runners(scenario);
    let log = ev.exec_log.as_ref().unwrap();
    assert_eq!(log.runners, log_runners);
    assert_eq!(log.spawns, log_runners.values().sum::<u64>());
    assert_eq!(
        by_source(ProcessSource::ExecLog).unwrap().runners,
        log_runners
    );
    assert!(
        log.remote_action_digests.is_empty(),
        "4.2.3 logs carry no action digest"
    );
    assert_eq!(log.remote_metrics.spawns, 0, "4.2.3 logs carry no metrics");

    // Executor configuration equals the command line of command.txt.
    assert_eq!(ev.executor.source, Some(OptionSource::CanonicalCommandLine));
    assert_eq!(ev.executor.remote_executor, command_executor(scenario));
    assert_eq!(
        ev.executor.exec_properties.get("container-image").cloned(),
        command_image(scenario)
    );
    assert_eq!(
        ev.executor.bes_backend.as_deref(),
        Some("grpc://127.0.0.1:50061")
    );

    // Targets: every completed target of bep.json with its success.
    let mut expected = BTreeMap::new();
    for e in &events {
        if let Some(c) = e.get("completed") {
            let label = e["id"]["targetCompleted"]["label"].as_str().unwrap();
            expected.insert(label.to_string(), c["success"].as_bool().unwrap_or(false));
        }
    }
    let got: BTreeMap<_, _> = ev
        .targets
        .iter()
        .filter_map(|(l, t)| t.success.map(|s| (l.clone(), s)))
        .collect();
    assert_eq!(got, expected);

    // Deterministic, and the JSON round-trips to an equal value.
    assert_eq!(&derive(scenario), ev);
    let json = serde_json::to_value(ev).unwrap();
    let back: Evidence = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
}

const IMAGE: &str = "docker://example.invalid/worker@sha256:8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217";

#[test]
fn remote_build_is_forced_with_eight_remote_executions() {
    let ev = derive("remote-build");
    check_common("remote-build", &ev);
    assert_eq!(ev.patterns, vec!["//..."]);
    assert!(ev.executor.forced, "{:?}", ev.executor.not_forced_reasons);
    assert!(ev.executor.not_forced_reasons.is_empty());
    assert_eq!(
        ev.executor.remote_executor.as_deref(),
        Some("grpc://127.0.0.1:50051")
    );
    assert_eq!(ev.processes.remote_executions, Some(8));
    assert_eq!(ev.exec_log.as_ref().unwrap().runners["remote"], 8);
    assert_eq!(ev.worker_images.len(), 1);
    let img = &ev.worker_images[0];
    assert_eq!(img.image, IMAGE);
    assert!(img.pinned);
    assert_eq!(img.source, ImageSource::ExecLog);
    assert_eq!(img.remote_spawns, Some(8));
    assert_eq!(ev.all_remote_images_pinned, Some(true));
    let stats = &ev.processes.sources[0];
    assert_eq!(stats.by_class[&RunnerClass::RemoteExecution], 8);
    assert_eq!(stats.by_class[&RunnerClass::Internal], 10);
    assert_eq!(
        ev.targets["//:greeting"].kind.as_deref(),
        Some("genrule rule")
    );
    assert_eq!(ev.build_metrics.actions_created, Some(58));
    assert_eq!(ev.build_metrics.actions_executed, Some(18));
    assert_eq!(ev.build_metrics.action_cache_hits, None);
    assert_eq!(
        ev.build_metrics.elapsed_time_log.as_deref(),
        Some("11.181000")
    );
    assert!(ev
        .build_metrics
        .critical_path_log
        .as_deref()
        .unwrap()
        .starts_with("Critical Path: 2.83s, Remote (96.72% of the time)"));
    assert_eq!(ev.workspace_status["BUILD_HOST"], "vm");
}

#[test]
fn without_exec_log_the_image_comes_from_default_exec_properties() {
    let bep = read("remote-build", "bep.bin");
    let ev = derive_from_delimited(&bep[..], None::<&[u8]>).unwrap();
    assert!(ev.exec_log.is_none());
    assert_eq!(ev.worker_images.len(), 1);
    assert_eq!(ev.worker_images[0].image, IMAGE);
    assert_eq!(
        ev.worker_images[0].source,
        ImageSource::DefaultExecProperties
    );
    assert_eq!(ev.worker_images[0].remote_spawns, None);
    assert_eq!(ev.all_remote_images_pinned, Some(true));
    assert_eq!(ev.processes.remote_executions, Some(8));
    assert!(ev
        .processes
        .sources
        .iter()
        .all(|f| f.source != ProcessSource::ExecLog));
}

#[test]
fn remote_cache_hit_has_no_remote_execution() {
    let ev = derive("remote-cache-hit");
    check_common("remote-cache-hit", &ev);
    assert!(ev.executor.forced);
    assert_eq!(ev.processes.remote_executions, Some(0));
    assert_eq!(ev.processes.remote_cache_hits, Some(8));
    assert_eq!(ev.exec_log.as_ref().unwrap().runners["remote cache hit"], 8);
    let img = &ev.worker_images[0];
    assert_eq!(
        (img.remote_spawns, img.cache_hit_spawns),
        (Some(0), Some(8))
    );
    assert_eq!(ev.all_remote_images_pinned, None, "no remote execution");
}

#[test]
fn local_only_is_not_forced() {
    let ev = derive("local-only");
    check_common("local-only", &ev);
    assert_eq!(ev.executor.remote_executor, None);
    assert!(!ev.executor.forced);
    assert_eq!(ev.executor.not_forced_reasons.len(), 1);
    assert!(ev.executor.not_forced_reasons[0].contains("--remote_executor is not set"));
    assert_eq!(ev.processes.remote_executions, Some(0));
    assert_eq!(ev.processes.sources[0].runners["linux-sandbox"], 8);
    assert_eq!(ev.exec_log.as_ref().unwrap().runners["linux-sandbox"], 8);
    assert!(ev.worker_images.is_empty());
    assert_eq!(ev.all_remote_images_pinned, None);
}

#[test]
fn failing_build_reports_build_failure() {
    let ev = derive("failing-build");
    check_common("failing-build", &ev);
    let code = ev.exit_code.as_ref().unwrap();
    assert_eq!((code.name.as_str(), code.code), ("BUILD_FAILURE", 1));
    assert!(!ev.success);
    assert_eq!(ev.patterns, vec!["//failing:broken"]);
    assert_eq!(ev.targets["//failing:broken"].success, Some(false));
    // 4.2.3 leaves the failed remote spawn out of its summary; the exec log has it.
    assert_eq!(ev.processes.remote_executions, Some(0));
    let log = ev.exec_log.as_ref().unwrap();
    assert_eq!(log.runners["remote"], 1);
    assert_eq!(log.failed_spawns, 1);
}

#[test]
fn remote_test_ran_its_test_remotely() {
    let ev = derive("remote-test");
    check_common("remote-test", &ev);
    let t = &ev.tests["//:hello_test"];
    assert_eq!(t.status, "PASSED");
    assert_eq!(t.strategy.as_deref(), Some("remote"));
    assert_eq!(t.attempts, 1);
    assert!(!t.cached_locally && !t.cached_remotely);
    assert_eq!(ev.processes.remote_executions, Some(2));
    assert!(ev.executor.forced);
}

#[test]
fn truncated_stream_is_incomplete_or_an_error() {
    let bep = read("remote-build", "bep.bin");
    // Cut inside a record: a framing error naming the problem.
    let err = derive_from_delimited(&bep[..bep.len() - 3], None::<&[u8]>).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // Drop the start: no BuildStarted.
    let records = proof_stream::delimited::split_delimited(&bep, usize::MAX).unwrap();
    let mut b = proof_evidence::EvidenceBuilder::new();
    for r in &records[1..] {
        b.push_event(r).unwrap();
    }
    let err = b.finish().unwrap_err();
    assert!(err.to_string().contains("no BuildStarted"), "{err}");
    // Drop the tail: not complete, no exit code.
    let mut b = proof_evidence::EvidenceBuilder::new();
    for r in &records[..records.len() / 2] {
        b.push_event(r).unwrap();
    }
    let ev = b.finish().unwrap();
    assert!(!ev.complete && !ev.success);
    assert_eq!(ev.exit_code, None);
}

/// The BES capture (bes/build_tool_events.bin: PublishBuildToolEventStream
/// requests whose `bazel_event` Any carries each BEP event) gives exactly the
/// evidence that the BEP file gives: both transports carry the same events.
#[test]
fn bes_capture_gives_the_same_evidence_as_the_bep_file() {
    use proof_proto::bes::{build_event::Event, PublishBuildToolEventStreamRequest};
    use prost::Message;
    for scenario in [
        "remote-build",
        "remote-test",
        "remote-cache-hit",
        "local-only",
        "failing-build",
    ] {
        let requests = read(scenario, "bes/build_tool_events.bin");
        let mut b = proof_evidence::EvidenceBuilder::new();
        let mut fed = 0;
        for rec in proof_stream::delimited::DelimitedReader::new(&requests[..]) {
            let req = PublishBuildToolEventStreamRequest::decode(&rec.unwrap()[..]).unwrap();
            let ev = req.ordered_build_event.and_then(|o| o.event);
            if let Some(Event::BazelEvent(any)) = ev.and_then(|e| e.event) {
                assert_eq!(any.type_url, proof_proto::BEP_EVENT_TYPE_URL);
                b.push_event(&any.value).unwrap();
                fed += 1;
            }
        }
        assert!(fed > 0, "{scenario}: no bazel_event in the capture");
        let log = read(scenario, "execution_log.bin");
        b.push_exec_log(&log[..]).unwrap();
        assert_eq!(b.finish().unwrap(), derive(scenario), "{scenario}");
    }
}
