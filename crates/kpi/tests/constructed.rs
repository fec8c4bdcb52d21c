//! Bazel 7/8-shaped streams built with prost (runner_count with exec_kind,
//! action_cache_statistics, critical_path_time) and compact zstd execution
//! logs with SpawnMetrics incl. queue_time and start_time: every KPI and
//! the diagnosis are checked against values known by construction.

use proof_kpi::fleet::{FleetBuilder, FleetEntry, TargetClassMap, NO_TENANT};
use proof_kpi::{Analysis, Analyzer, Cause, CountSource, CriticalPathSource, TimingSource};
use proof_proto::bep::{self, build_event, build_event_id, BuildEvent, BuildEventId};
use proof_proto::command_line as cl;
use proof_proto::execlog as xl;
use proof_stream::delimited::write_delimited;
use prost::Message;

const T0_MS: i64 = 1_700_000_000_000;
const PINNED: &str =
    "docker://reg.example/rbe/worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn event(id: build_event_id::Id, payload: build_event::Payload) -> BuildEvent {
    BuildEvent {
        id: Some(BuildEventId { id: Some(id) }),
        payload: Some(payload),
        ..BuildEvent::default()
    }
}

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn dur(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn started(uuid: &str) -> BuildEvent {
    event(
        build_event_id::Id::Started(build_event_id::BuildStartedId {}),
        build_event::Payload::Started(bep::BuildStarted {
            uuid: uuid.into(),
            start_time: ts(T0_MS),
            build_tool_version: "8.1.1".into(),
            command: "build".into(),
            ..bep::BuildStarted::default()
        }),
    )
}

fn canonical(options: &[(&str, &str)]) -> BuildEvent {
    let option = options
        .iter()
        .map(|(n, v)| cl::Option {
            combined_form: format!("--{n}={v}"),
            option_name: (*n).into(),
            option_value: (*v).into(),
            ..cl::Option::default()
        })
        .collect();
    event(
        build_event_id::Id::StructuredCommandLine(build_event_id::StructuredCommandLineId {
            command_line_label: "canonical".into(),
        }),
        build_event::Payload::StructuredCommandLine(cl::CommandLine {
            command_line_label: "canonical".into(),
            sections: vec![cl::CommandLineSection {
                section_label: "command options".into(),
                section_type: Some(cl::command_line_section::SectionType::OptionList(
                    cl::OptionList { option },
                )),
            }],
        }),
    )
}

fn metadata(repo: &str) -> BuildEvent {
    event(
        build_event_id::Id::BuildMetadata(build_event_id::BuildMetadataId {}),
        build_event::Payload::BuildMetadata(bep::BuildMetadata {
            metadata: [("REPO".to_string(), repo.to_string())]
                .into_iter()
                .collect(),
        }),
    )
}

fn pattern(p: &str) -> BuildEvent {
    event(
        build_event_id::Id::Pattern(build_event_id::PatternExpandedId {
            pattern: vec![p.into()],
        }),
        build_event::Payload::Expanded(bep::PatternExpanded::default()),
    )
}

fn progress(stderr: &str) -> BuildEvent {
    event(
        build_event_id::Id::Progress(build_event_id::ProgressId { opaque_count: 3 }),
        build_event::Payload::Progress(bep::Progress {
            stderr: stderr.into(),
            ..bep::Progress::default()
        }),
    )
}

fn fetch(url: &str, success: bool) -> BuildEvent {
    event(
        build_event_id::Id::Fetch(build_event_id::FetchId {
            url: url.into(),
            downloader: 0,
        }),
        build_event::Payload::Fetch(bep::Fetch { success }),
    )
}

fn aborted_remote() -> BuildEvent {
    event(
        build_event_id::Id::TargetCompleted(build_event_id::TargetCompletedId {
            label: "//app:bin".into(),
            ..Default::default()
        }),
        build_event::Payload::Aborted(bep::Aborted {
            reason: bep::aborted::AbortReason::RemoteEnvironmentFailure as i32,
            description: "Failed to execute remotely: connection reset".into(),
        }),
    )
}

/// runner_count as Bazel 8 writes it (with "total" and exec_kind).
fn metrics(runners: &[(&str, i32, &str)]) -> BuildEvent {
    let runner_count = runners
        .iter()
        .map(
            |(n, c, k)| bep::build_metrics::action_summary::RunnerCount {
                name: (*n).into(),
                count: *c,
                exec_kind: (*k).into(),
            },
        )
        .collect();
    event(
        build_event_id::Id::BuildMetrics(build_event_id::BuildMetricsId {}),
        build_event::Payload::BuildMetrics(bep::BuildMetrics {
            action_summary: Some(bep::build_metrics::ActionSummary {
                actions_created: 40,
                actions_executed: 12,
                runner_count,
                action_cache_statistics: Some(bep::ActionCacheStatistics {
                    hits: 30,
                    misses: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            timing_metrics: Some(bep::build_metrics::TimingMetrics {
                wall_time_in_ms: 6000,
                critical_path_time: dur(4200),
                ..Default::default()
            }),
            target_metrics: Some(bep::build_metrics::TargetMetrics {
                targets_loaded: 12,
                targets_configured: 0,
                ..Default::default()
            }),
            package_metrics: Some(bep::build_metrics::PackageMetrics { packages_loaded: 0 }),
            ..Default::default()
        }),
    )
}

fn finished() -> BuildEvent {
    let mut e = event(
        build_event_id::Id::BuildFinished(build_event_id::BuildFinishedId {}),
        build_event::Payload::Finished(bep::BuildFinished {
            overall_success: true,
            exit_code: Some(bep::build_finished::ExitCode {
                name: "SUCCESS".into(),
                code: 0,
            }),
            finish_time: ts(T0_MS + 6000),
            ..Default::default()
        }),
    );
    e.last_message = false;
    e
}

struct SpawnSpec {
    runner: &'static str,
    image: &'static str,
    hash: String,
    start_ms: Option<i64>,
    total: i64,
    queue: i64,
    exec: i64,
    input_bytes: i64,
    output_file_id: u32,
    exit_code: i32,
}

fn spawn(
    runner: &'static str,
    hash: &str,
    start: i64,
    total: i64,
    queue: i64,
    exec: i64,
) -> SpawnSpec {
    SpawnSpec {
        runner,
        image: PINNED,
        hash: hash.repeat(32),
        start_ms: Some(T0_MS + start),
        total,
        queue,
        exec,
        input_bytes: 1000,
        output_file_id: 2,
        exit_code: 0,
    }
}

fn compact_log(uuid: &str, spawns: &[SpawnSpec], output_hash: &str) -> Vec<u8> {
    let mut entries = vec![
        xl::ExecLogEntry {
            id: 0,
            r#type: Some(xl::exec_log_entry::Type::Invocation(
                xl::exec_log_entry::Invocation {
                    hash_function_name: "SHA-256".into(),
                    id: uuid.into(),
                    ..Default::default()
                },
            )),
        },
        xl::ExecLogEntry {
            id: 2,
            r#type: Some(xl::exec_log_entry::Type::File(xl::exec_log_entry::File {
                path: "bazel-out/k8-fastbuild/bin/out.o".into(),
                digest: Some(xl::Digest {
                    hash: output_hash.repeat(32),
                    size_bytes: 500,
                    hash_function_name: String::new(),
                }),
            })),
        },
    ];
    for s in spawns {
        entries.push(xl::ExecLogEntry {
            id: 0,
            r#type: Some(xl::exec_log_entry::Type::Spawn(xl::exec_log_entry::Spawn {
                args: vec!["/bin/cc".into()],
                platform: Some(xl::Platform {
                    properties: vec![xl::platform::Property {
                        name: "container-image".into(),
                        value: s.image.into(),
                    }],
                }),
                outputs: vec![xl::exec_log_entry::Output {
                    r#type: Some(xl::exec_log_entry::output::Type::OutputId(s.output_file_id)),
                }],
                target_label: "//app:lib".into(),
                mnemonic: "CppCompile".into(),
                exit_code: s.exit_code,
                runner: s.runner.into(),
                cache_hit: s.runner.contains("cache hit"),
                remotable: true,
                cacheable: true,
                digest: Some(xl::Digest {
                    hash: s.hash.clone(),
                    size_bytes: 140,
                    hash_function_name: String::new(),
                }),
                metrics: Some(xl::SpawnMetrics {
                    total_time: dur(s.total),
                    queue_time: dur(s.queue),
                    execution_wall_time: dur(s.exec),
                    fetch_time: dur(50),
                    upload_time: dur(20),
                    input_bytes: s.input_bytes,
                    input_files: 4,
                    start_time: s.start_ms.and_then(ts),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
    }
    let mut plain = Vec::new();
    for e in entries {
        write_delimited(&mut plain, &e.encode_to_vec());
    }
    zstd::encode_all(&plain[..], 3).unwrap()
}

const FORCED: &[(&str, &str)] = &[
    ("remote_executor", "grpcs://rbe.example:443"),
    ("remote_default_exec_properties", "OSFamily=Linux"),
];

fn stream(uuid: &str, extra: Vec<BuildEvent>) -> Vec<BuildEvent> {
    let mut v = vec![
        started(uuid),
        metadata("github.com/acme/app"),
        canonical(FORCED),
        pattern("//app/..."),
    ];
    v.extend(extra);
    v.push(finished());
    v.push(metrics(&[
        ("total", 12, ""),
        ("internal", 4, ""),
        ("remote", 2, "Remote"),
        ("remote cache hit", 2, "Remote"),
        ("disk cache hit", 1, ""),
        ("linux-sandbox", 1, "Local"),
    ]));
    v.last_mut().unwrap().last_message = true;
    v
}

fn analyze(events: &[BuildEvent], log: Option<&[u8]>) -> Analysis {
    let mut a = Analyzer::new();
    for e in events {
        a.push_event(&e.encode_to_vec()).unwrap();
    }
    if let Some(log) = log {
        a.push_exec_log(|| Ok::<_, std::io::Error>(log)).unwrap();
    }
    a.finish().unwrap()
}

/// Two remote executions (queue 600 of 1000 ms, 1400 of 2000 ms), two
/// remote cache hits, a disk cache hit and a local spawn.
fn queueing_spawns() -> Vec<SpawnSpec> {
    let mut local = spawn("linux-sandbox", "e1", 500, 100, 0, 100);
    local.input_bytes = 0;
    vec![
        spawn("remote", "a1", 3000, 1000, 600, 300),
        spawn("remote", "a2", 2000, 2000, 1400, 400),
        spawn("remote cache hit", "b1", 1500, 40, 0, 0),
        spawn("remote cache hit", "b2", 2500, 40, 0, 0),
        spawn("disk cache hit", "c1", 4000, 5, 0, 0),
        local,
    ]
}

const UUID: &str = "8f6b1b1e-3a55-4d8e-9d3f-000000000001";

#[test]
fn bazel8_compact_log_gives_exact_timings_rates_and_queueing() {
    let log = compact_log(UUID, &queueing_spawns(), "0f");
    let a = analyze(&stream(UUID, vec![]), Some(&log));
    let k = &a.kpis;
    assert_eq!(k.bazel_version.as_deref(), Some("8.1.1"));
    assert_eq!(k.repo.as_deref(), Some("github.com/acme/app"));
    // First cache hit started 1500 ms after BuildStarted, first remote execution 2000 ms.
    assert_eq!(k.time_to_first_cache_hit.ms, Some(1500));
    assert_eq!(
        k.time_to_first_cache_hit.source,
        Some(TimingSource::ExecLogStartTime)
    );
    assert_eq!(k.time_to_first_remote_execution.ms, Some(2000));
    // Exec-log mix: 2 remote, 2 remote hits, 1 disk hit, 1 local → 6 lookups.
    let m = k.process_mix.as_ref().unwrap();
    assert_eq!(m.source, CountSource::ExecLog);
    assert_eq!(m.lookups(), 6);
    assert_eq!(m.remote_share, Some(0.3333));
    assert_eq!(k.cache.remote_hit_rate, Some(0.3333));
    assert_eq!(k.cache.disk_hit_rate, Some(0.1667));
    let lac = k.cache.local_action_cache.as_ref().unwrap();
    assert_eq!((lac.hits, lac.misses, lac.hit_rate), (30, 10, Some(0.75)));
    // Time split over the 2 remote executions.
    let r = k.remote_time.as_ref().unwrap();
    assert_eq!(r.spawns, 2);
    assert_eq!(
        (r.total_ms, r.queue_ms, r.execution_wall_ms),
        (3000, 2000, 700)
    );
    assert_eq!((r.fetch_ms, r.upload_ms), (100, 40));
    assert_eq!(r.queue_share, Some(0.6667));
    let cas = k.cas.as_ref().unwrap();
    assert_eq!(cas.remote_input_bytes, Some(2000));
    assert_eq!(cas.remote_input_files, Some(8));
    assert_eq!(cas.remote_output_bytes, Some(1000));
    assert_eq!(cas.cache_hit_output_bytes, Some(1500));
    let cp = k.critical_path.as_ref().unwrap();
    assert_eq!(
        (cp.ms, cp.source),
        (Some(4200), CriticalPathSource::TimingMetrics)
    );
    assert_eq!(k.analysis_cache.fully_reused, Some(true));
    assert_eq!(k.wall_time_ms, Some(6000));
    assert_eq!(k.actions.len(), 6);
    assert_eq!(k.spawns_without_digest, Some(0));

    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::Queueing, "{}", d.summary);
    assert!(d.summary.contains("66.7%"), "{}", d.summary);
    assert_eq!(d.evidence[0].fact, "remote_time");
    assert_eq!(d.evidence[0].value["queue_ms"], 2000);
    assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
    assert!(d.missing.is_empty(), "{:?}", d.missing);
}

#[test]
fn bazel8_without_exec_log_uses_runner_count() {
    let a = analyze(&stream(UUID, vec![]), None);
    let k = &a.kpis;
    let m = k.process_mix.as_ref().unwrap();
    assert_eq!(m.source, CountSource::RunnerCount);
    assert_eq!(m.internal, Some(4));
    assert_eq!(
        (
            m.remote_execution,
            m.remote_cache_hit,
            m.disk_cache_hit,
            m.local
        ),
        (2, 2, 1, 1)
    );
    assert_eq!(
        k.time_to_first_cache_hit.ms, None,
        "needs exec-log start times"
    );
    assert_eq!(k.remote_time, None);
    assert_eq!(a.diagnosis.dominant_cause, Cause::None);
}

#[test]
fn many_remote_executions_with_few_hits_is_cache_miss() {
    let mut spawns: Vec<SpawnSpec> = (0..8)
        .map(|i| {
            spawn(
                "remote",
                &format!("{:02x}", i + 0x10),
                1000 + i * 10,
                1000,
                100,
                800,
            )
        })
        .collect();
    spawns.push(spawn("remote cache hit", "b1", 900, 40, 0, 0));
    let log = compact_log(UUID, &spawns, "0f");
    let a = analyze(&stream(UUID, vec![]), Some(&log));
    assert_eq!(a.kpis.time_to_first_cache_hit.ms, Some(900));
    assert_eq!(a.kpis.cache.remote_hit_rate, Some(0.1111));
    assert_eq!(a.kpis.remote_time.as_ref().unwrap().queue_share, Some(0.1));
    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::CacheMiss, "{}", d.summary);
    assert!(d.summary.contains("only 1 of 9"), "{}", d.summary);
}

#[test]
fn rule_precedence_quota_backend_external_image() {
    let log = compact_log(UUID, &queueing_spawns(), "0f");
    // RESOURCE_EXHAUSTED beats everything.
    let a = analyze(
        &stream(
            UUID,
            vec![
                progress("\u{1b}[31mERROR:\u{1b}[0m RESOURCE_EXHAUSTED: quota exceeded for instance main\n"),
                aborted_remote(),
            ],
        ),
        Some(&log),
    );
    assert_eq!(a.diagnosis.dominant_cause, Cause::Quota);
    assert_eq!(
        a.kpis.signals.resource_exhausted,
        vec!["ERROR: RESOURCE_EXHAUSTED: quota exceeded for instance main"]
    );
    let causes: Vec<Cause> = a.diagnosis.findings.iter().map(|f| f.cause).collect();
    assert_eq!(
        causes,
        vec![Cause::Quota, Cause::BackendHealth, Cause::Queueing]
    );

    let a = analyze(&stream(UUID, vec![aborted_remote()]), Some(&log));
    assert_eq!(a.diagnosis.dominant_cause, Cause::BackendHealth);
    assert!(
        a.diagnosis.summary.contains("REMOTE_ENVIRONMENT_FAILURE"),
        "{}",
        a.diagnosis.summary
    );

    let a = analyze(
        &stream(
            UUID,
            vec![
                fetch("https://mirror.example/zlib-1.3.tar.gz", false),
                fetch("https://ok.example/x", true),
            ],
        ),
        Some(&log),
    );
    assert_eq!(a.diagnosis.dominant_cause, Cause::ExternalInput);
    assert_eq!(
        a.kpis.signals.failed_fetches,
        vec!["https://mirror.example/zlib-1.3.tar.gz"]
    );

    let mut spawns = queueing_spawns();
    spawns[0].image = "docker://reg.example/rbe/worker:latest";
    let a = analyze(
        &stream(UUID, vec![]),
        Some(&compact_log(UUID, &spawns, "0f")),
    );
    assert_eq!(a.diagnosis.dominant_cause, Cause::WorkerImage);
    assert!(
        a.diagnosis.summary.contains("worker:latest"),
        "{}",
        a.diagnosis.summary
    );
}

#[test]
fn local_fallback_is_eligibility() {
    let mut opts = FORCED.to_vec();
    opts.push(("remote_local_fallback", "true"));
    let mut events = stream(UUID, vec![]);
    events[2] = canonical(&opts);
    let log = compact_log(UUID, &queueing_spawns(), "0f");
    let a = analyze(&events, Some(&log));
    let d = &a.diagnosis;
    assert_eq!(d.dominant_cause, Cause::Eligibility, "{}", d.summary);
    assert!(
        d.summary.contains("1 ran on the Bazel host"),
        "{}",
        d.summary
    );
    assert!(
        d.summary.contains("--remote_local_fallback"),
        "{}",
        d.summary
    );
}

#[test]
fn fleet_groups_fairness_and_poison() {
    // Two invocations of tenant acme produce different outputs for action a1.
    let a1 = analyze(
        &stream(UUID, vec![]),
        Some(&compact_log(UUID, &queueing_spawns(), "0f")),
    );
    let id2 = "8f6b1b1e-3a55-4d8e-9d3f-000000000002";
    let a2 = analyze(
        &stream(id2, vec![]),
        Some(&compact_log(id2, &queueing_spawns(), "1e")),
    );
    // A third of tenant beta, slow to its first hit, with a failing cached result.
    let id3 = "8f6b1b1e-3a55-4d8e-9d3f-000000000003";
    let mut spawns = vec![
        spawn("remote", "f1", 1000, 1000, 0, 1000),
        spawn("remote cache hit", "b9", 5000, 40, 0, 0),
    ];
    spawns[1].exit_code = 1;
    let a3 = analyze(&stream(id3, vec![]), Some(&compact_log(id3, &spawns, "0f")));
    let id4 = "8f6b1b1e-3a55-4d8e-9d3f-000000000004";
    let a4 = analyze(&stream(id4, vec![]), Some(&compact_log(id4, &spawns, "0f")));

    let mut f = FleetBuilder::new(TargetClassMap::parse("//app/=app").unwrap());
    for (a, tenant) in [
        (&a1, None),
        (&a2, Some("acme")),
        (&a3, Some("beta")),
        (&a4, Some("beta")),
    ] {
        f.push(FleetEntry {
            tenant,
            kpis: &a.kpis,
            evidence: &a.evidence,
            cause: Some(a.diagnosis.dominant_cause),
        });
    }
    let fleet = f.finish();
    assert_eq!(fleet.invocations, 4);
    // a1 has no store tenant: REPO metadata names it.
    assert!(fleet.by_tenant.contains_key("github.com/acme/app"));
    assert!(!fleet.by_tenant.contains_key(NO_TENANT));
    let beta = &fleet.by_tenant["beta"];
    assert_eq!(beta.invocations, 2);
    assert_eq!(beta.remote_hit_rate, Some(0.5));
    assert_eq!(
        (beta.ttfch_ms.p50, beta.ttfch_ms.p90),
        (Some(5000), Some(5000))
    );
    assert_eq!(beta.executor_ms, Some(2000));
    assert_eq!(fleet.overall.ttfch_ms.count, 4);
    assert_eq!(fleet.overall.ttfch_ms.p50, Some(1500));
    assert_eq!(fleet.overall.ttfch_ms.p90, Some(5000));
    assert_eq!(fleet.by_target_class["app"].invocations, 4);
    // Executor time: acme-from-REPO 700, acme 700, beta 2000 → shares.
    assert_eq!(fleet.fairness.basis, "execution_wall_ms");
    assert_eq!(fleet.fairness.shares["beta"], 0.5882);
    assert_eq!(fleet.fairness.max_over_fair, Some(1.7647));
    // Poison: every digest of queueing_spawns() gave two different outputs.
    let p = &fleet.poison;
    assert_eq!(p.invocations_with_digests, 4);
    let divergent: Vec<&str> = p.divergent_outputs.iter().map(|d| &d.digest[..2]).collect();
    assert_eq!(divergent, vec!["a1", "a2", "b1", "b2", "c1", "e1"]);
    assert_eq!(
        p.divergent_outputs[0].invocations,
        vec![UUID.to_string(), id2.to_string()]
    );
    assert_eq!(p.failing_cached_results.len(), 1);
    assert_eq!(&p.failing_cached_results[0].key[..2], "b9");
    assert_eq!(
        p.failing_cached_results[0].invocations,
        vec![id3.to_string(), id4.to_string()]
    );
    assert_eq!(fleet.by_tenant["acme"].causes[&Cause::Queueing], 1);
}

#[test]
fn damaged_exec_logs_say_what_is_wrong() {
    use proof_kpi::{KpiBuilder, KpiError};
    // A truncated compact log: the zstd frame ends early.
    let log = compact_log(UUID, &queueing_spawns(), "0f");
    let err = KpiBuilder::new()
        .push_exec_log(&log[..log.len() / 2])
        .unwrap_err();
    assert!(
        matches!(
            err,
            KpiError::ExecLog(proof_evidence::EvidenceError::Zstd(_))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("pass the file exactly as Bazel wrote it"),
        "{err}"
    );
    // A BEP file is not a SpawnExec stream.
    let bep: Vec<u8> = stream(UUID, vec![])
        .iter()
        .flat_map(|e| {
            let mut v = Vec::new();
            write_delimited(&mut v, &e.encode_to_vec());
            v
        })
        .collect();
    let err = KpiBuilder::new().push_exec_log(&bep[..]).unwrap_err();
    assert!(
        err.to_string().contains("--execution_log_binary_file")
            || err.to_string().contains("cannot be framed"),
        "{err}"
    );
    // A bad BEP event names its index.
    let mut b = KpiBuilder::new();
    b.push_event(&started(UUID).encode_to_vec()).unwrap();
    let err = b.push_event(&[0xff, 0xff, 0xff]).unwrap_err();
    assert!(
        err.to_string().starts_with("BEP event #1 is not a valid"),
        "{err}"
    );
}

/// A Bazel 6/7-style binary SpawnExec log: metrics with start_time, digests
/// and actual outputs listed inline.
fn binary_spawn(
    runner: &str,
    hash: &str,
    start: i64,
    queue: i64,
    out_hash: &str,
    input_bytes: i64,
) -> Vec<u8> {
    let s = xl::SpawnExec {
        command_args: vec!["/bin/cc".into()],
        inputs: vec![xl::File {
            path: "a.c".into(),
            digest: Some(xl::Digest {
                hash: "11".repeat(32),
                size_bytes: 300,
                hash_function_name: "SHA-256".into(),
            }),
            ..Default::default()
        }],
        actual_outputs: vec![xl::File {
            path: "a.o".into(),
            digest: Some(xl::Digest {
                hash: out_hash.repeat(32),
                size_bytes: 700,
                hash_function_name: "SHA-256".into(),
            }),
            ..Default::default()
        }],
        runner: runner.into(),
        cache_hit: runner.contains("cache hit"),
        remotable: true,
        mnemonic: "CppCompile".into(),
        target_label: "//lib:a".into(),
        digest: Some(xl::Digest {
            hash: hash.repeat(32),
            size_bytes: 150,
            hash_function_name: "SHA-256".into(),
        }),
        metrics: Some(xl::SpawnMetrics {
            total_time: dur(1000),
            queue_time: dur(queue),
            execution_wall_time: dur(1000 - queue),
            input_bytes,
            start_time: ts(T0_MS + start),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut v = Vec::new();
    write_delimited(&mut v, &s.encode_to_vec());
    v
}

#[test]
fn binary_log_with_metrics_outputs_and_listed_inputs() {
    let mut log = binary_spawn("remote", "a1", 700, 100, "0f", 0);
    log.extend(binary_spawn("disk cache hit", "b1", 300, 0, "0e", 0));
    let a = analyze(&stream(UUID, vec![]), Some(&log));
    let k = &a.kpis;
    assert_eq!(k.time_to_first_cache_hit.ms, Some(300));
    assert_eq!(k.time_to_first_remote_execution.ms, Some(700));
    assert_eq!(k.cache.disk_hit_rate, Some(0.5));
    assert_eq!(k.cache.remote_hit_rate, Some(0.0));
    let cas = k.cas.as_ref().unwrap();
    // input_bytes is 0 in the metrics: the listed input digests are summed instead.
    assert_eq!(cas.input_source, Some(proof_kpi::CasSource::ListedInputs));
    assert_eq!(
        (cas.remote_input_bytes, cas.remote_input_files),
        (Some(300), Some(1))
    );
    assert_eq!(
        (cas.remote_output_bytes, cas.cache_hit_output_bytes),
        (Some(700), Some(700))
    );
    assert_eq!(k.remote_time.as_ref().unwrap().queue_share, Some(0.1));
    // Same action, other output bytes in a second invocation → poison.
    let id2 = "8f6b1b1e-3a55-4d8e-9d3f-0000000000b2";
    let log2 = binary_spawn("remote", "a1", 700, 100, "0d", 4096);
    let b = analyze(&stream(id2, vec![]), Some(&log2));
    assert_eq!(
        b.kpis.cas.as_ref().unwrap().input_source,
        Some(proof_kpi::CasSource::SpawnMetrics)
    );
    assert_eq!(b.kpis.cas.as_ref().unwrap().remote_input_bytes, Some(4096));
    let mut f = FleetBuilder::new(TargetClassMap::default());
    for x in [&a, &b] {
        f.push(FleetEntry {
            tenant: None,
            kpis: &x.kpis,
            evidence: &x.evidence,
            cause: None,
        });
    }
    let fleet = f.finish();
    assert_eq!(fleet.poison.divergent_outputs.len(), 1);
    assert_eq!(
        fleet.poison.divergent_outputs[0].digest,
        format!("{}/150", "a1".repeat(32))
    );
    assert_eq!(fleet.poison.divergent_outputs[0].target_label, "//lib:a");
}
