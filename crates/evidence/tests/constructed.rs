//! Streams shaped like those of Bazel 6, 7, 8 and 9 (wire-facts §2–§4),
//! built with prost, and compact / binary execution logs built the way Bazel
//! writes them.

use proof_evidence::execlog::{ExecLogReader, ZSTD_MAGIC};
use proof_evidence::{
    derive_from_delimited, Evidence, EvidenceBuilder, EvidenceError, ExecLogFormat, ImageSource,
    OptionSource, ProcessSource,
};
use proof_proto::bep::{self, build_event, build_event_id, BuildEvent, BuildEventId};
use proof_proto::command_line as cl;
use proof_proto::execlog as xl;
use proof_stream::delimited::write_delimited;
use prost::Message;

const UUID: &str = "3f1c0e52-7b7e-4c55-9a55-2a3f3c1d0b11";
const PINNED: &str =
    "docker://reg.example/rbe/worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn event(id: build_event_id::Id, payload: Option<build_event::Payload>) -> BuildEvent {
    BuildEvent {
        id: Some(BuildEventId { id: Some(id) }),
        payload,
        ..BuildEvent::default()
    }
}

fn started(version: &str, description: &str) -> BuildEvent {
    event(
        build_event_id::Id::Started(build_event_id::BuildStartedId {}),
        Some(build_event::Payload::Started(bep::BuildStarted {
            uuid: UUID.into(),
            start_time_millis: 1_700_000_000_123,
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
            build_tool_version: version.into(),
            options_description: description.into(),
            command: "build".into(),
            ..bep::BuildStarted::default()
        })),
    )
}

fn command_line(label: &str, options: &[(&str, &str)]) -> BuildEvent {
    let option = options
        .iter()
        .map(|(name, value)| cl::Option {
            combined_form: format!("--{name}={value}"),
            option_name: (*name).into(),
            option_value: (*value).into(),
            ..cl::Option::default()
        })
        .collect();
    let sections = vec![
        cl::CommandLineSection {
            section_label: "executable".into(),
            section_type: Some(cl::command_line_section::SectionType::ChunkList(
                cl::ChunkList {
                    chunk: vec!["bazel".into()],
                },
            )),
        },
        cl::CommandLineSection {
            section_label: "command options".into(),
            section_type: Some(cl::command_line_section::SectionType::OptionList(
                cl::OptionList { option },
            )),
        },
    ];
    event(
        build_event_id::Id::StructuredCommandLine(build_event_id::StructuredCommandLineId {
            command_line_label: label.into(),
        }),
        Some(build_event::Payload::StructuredCommandLine(
            cl::CommandLine {
                command_line_label: label.into(),
                sections,
            },
        )),
    )
}

fn unstructured(args: &[&str]) -> BuildEvent {
    event(
        build_event_id::Id::UnstructuredCommandLine(build_event_id::UnstructuredCommandLineId {}),
        Some(build_event::Payload::UnstructuredCommandLine(
            bep::UnstructuredCommandLine {
                args: args.iter().map(|a| a.to_string()).collect(),
            },
        )),
    )
}

fn options_parsed(cmd_line: &[&str]) -> BuildEvent {
    event(
        build_event_id::Id::OptionsParsed(build_event_id::OptionsParsedId {}),
        Some(build_event::Payload::OptionsParsed(bep::OptionsParsed {
            cmd_line: cmd_line.iter().map(|a| a.to_string()).collect(),
            ..bep::OptionsParsed::default()
        })),
    )
}

fn pattern(p: &str) -> BuildEvent {
    event(
        build_event_id::Id::Pattern(build_event_id::PatternExpandedId {
            pattern: vec![p.into()],
        }),
        Some(build_event::Payload::Expanded(
            bep::PatternExpanded::default(),
        )),
    )
}

fn progress(stderr: &str) -> BuildEvent {
    event(
        build_event_id::Id::Progress(build_event_id::ProgressId { opaque_count: 7 }),
        Some(build_event::Payload::Progress(bep::Progress {
            stderr: stderr.into(),
            ..bep::Progress::default()
        })),
    )
}

fn finished(name: &str, code: i32) -> BuildEvent {
    event(
        build_event_id::Id::BuildFinished(build_event_id::BuildFinishedId {}),
        Some(build_event::Payload::Finished(bep::BuildFinished {
            exit_code: Some(bep::build_finished::ExitCode {
                name: name.into(),
                code,
            }),
            finish_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_042,
                nanos: 0,
            }),
            ..bep::BuildFinished::default()
        })),
    )
}

fn tool_logs(process_stats: &str) -> BuildEvent {
    event(
        build_event_id::Id::BuildToolLogs(build_event_id::BuildToolLogsId {}),
        Some(build_event::Payload::BuildToolLogs(bep::BuildToolLogs {
            log: vec![bep::File {
                name: "process stats".into(),
                file: Some(bep::file::File::Contents(process_stats.as_bytes().to_vec())),
                ..bep::File::default()
            }],
        })),
    )
}

fn metrics(runners: &[(&str, i32, &str)], cache_hits: Option<i32>) -> BuildEvent {
    let runner_count = runners
        .iter()
        .map(
            |(name, count, kind)| bep::build_metrics::action_summary::RunnerCount {
                name: (*name).into(),
                count: *count,
                exec_kind: (*kind).into(),
            },
        )
        .collect();
    let mut ev = event(
        build_event_id::Id::BuildMetrics(build_event_id::BuildMetricsId {}),
        Some(build_event::Payload::BuildMetrics(bep::BuildMetrics {
            action_summary: Some(bep::build_metrics::ActionSummary {
                actions_created: 120,
                actions_executed: 51,
                runner_count,
                action_cache_statistics: cache_hits.map(|hits| bep::ActionCacheStatistics {
                    hits,
                    misses: 51,
                    ..bep::ActionCacheStatistics::default()
                }),
                ..bep::build_metrics::ActionSummary::default()
            }),
            timing_metrics: Some(bep::build_metrics::TimingMetrics {
                wall_time_in_ms: 42_000,
                critical_path_time: Some(prost_types::Duration {
                    seconds: 16,
                    nanos: 410_000_000,
                }),
                ..bep::build_metrics::TimingMetrics::default()
            }),
            ..bep::BuildMetrics::default()
        })),
    );
    ev.last_message = true;
    ev
}

fn test_result(label: &str, attempt: i32, strategy: &str, cached_remotely: bool) -> BuildEvent {
    event(
        build_event_id::Id::TestResult(build_event_id::TestResultId {
            label: label.into(),
            run: 1,
            shard: 1,
            attempt,
            configuration: None,
        }),
        Some(build_event::Payload::TestResult(bep::TestResult {
            status: bep::TestStatus::Passed as i32,
            execution_info: Some(bep::test_result::ExecutionInfo {
                strategy: strategy.into(),
                cached_remotely,
                ..bep::test_result::ExecutionInfo::default()
            }),
            ..bep::TestResult::default()
        })),
    )
}

fn frame(events: &[BuildEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        write_delimited(&mut out, &e.encode_to_vec());
    }
    out
}

fn derive(events: &[BuildEvent], log: Option<&[u8]>) -> Result<Evidence, EvidenceError> {
    derive_from_delimited(&frame(events)[..], log)
}

/// A Bazel 8 remote build whose --remote_executor came from `--config=rbe`:
/// "original" lacks it, "canonical" and OptionsParsed have it, and the rc
/// line of another, inactive config points elsewhere.
fn bazel8_stream(extra_canonical: &[(&str, &str)]) -> Vec<BuildEvent> {
    let image = format!("container-image={PINNED}");
    let mut canonical = vec![
        ("remote_executor", "grpcs://rbe.example:443"),
        ("remote_instance_name", "main"),
        ("remote_default_exec_properties", "OSFamily=Linux"),
        ("remote_default_exec_properties", image.as_str()),
        ("remote_upload_local_results", "0"),
        ("remote_header", "x-buildbuddy-api-key=sekrit-value"),
        ("bes_header", "authorization=Bearer tok"),
        ("bes_instance_name", "ci"),
    ];
    canonical.extend_from_slice(extra_canonical);
    vec![
        started("8.3.1", "--config=rbe"),
        unstructured(&[
            "build",
            "--default_override=0:build:other=--remote_executor=grpc://elsewhere:1",
            "--config=rbe",
        ]),
        command_line("original", &[("config", "rbe")]),
        command_line("canonical", &canonical),
        command_line("tool", &[]),
        options_parsed(&["--remote_executor=grpcs://rbe.example:443"]),
        pattern("//..."),
        progress("\u{1b}[32mINFO: \u{1b}[0m51 processes: 4 internal, 47 remote.\n"),
        finished("SUCCESS", 0),
        tool_logs("51 processes: 4 internal, 47 remote."),
        metrics(
            &[
                ("total", 51, ""),
                ("internal", 4, ""),
                ("remote", 47, "Remote"),
            ],
            Some(3),
        ),
    ]
}

#[test]
fn bazel8_runner_count_and_config_expanded_executor() {
    let ev = derive(&bazel8_stream(&[]), None).unwrap();
    assert_eq!(ev.bazel_version.as_deref(), Some("8.3.1"));
    assert_eq!(ev.started_at.as_deref(), Some("2023-11-14T22:13:20.123Z"));
    assert_eq!(ev.finished_at.as_deref(), Some("2023-11-14T22:14:02Z"));
    assert!(ev.complete && ev.success);
    let x = &ev.executor;
    assert_eq!(x.source, Some(OptionSource::CanonicalCommandLine));
    assert_eq!(
        x.remote_executor.as_deref(),
        Some("grpcs://rbe.example:443")
    );
    assert_eq!(x.remote_instance_name.as_deref(), Some("main"));
    assert_eq!(x.bes_instance_name.as_deref(), Some("ci"));
    assert_eq!(x.remote_upload_local_results, Some(false));
    assert_eq!(x.exec_properties["OSFamily"], "Linux");
    assert_eq!(x.header_keys["remote_header"], vec!["x-buildbuddy-api-key"]);
    assert_eq!(x.header_keys["bes_header"], vec!["authorization"]);
    assert!(x.forced, "{:?}", x.not_forced_reasons);
    let json = serde_json::to_string(&ev).unwrap();
    assert!(!json.contains("sekrit") && !json.contains("Bearer tok"));
    assert!(!json.contains("elsewhere"), "rc lines must not be used");

    assert_eq!(ev.processes.source, Some(ProcessSource::RunnerCount));
    assert_eq!(ev.processes.remote_executions, Some(47));
    let rc = &ev.processes.sources[0];
    assert_eq!(rc.total, Some(51));
    assert_eq!(rc.exec_kinds["remote"], "Remote");
    assert!(!rc.runners.contains_key("total"));
    let order: Vec<_> = ev.processes.sources.iter().map(|f| f.source).collect();
    assert_eq!(
        order,
        [
            ProcessSource::RunnerCount,
            ProcessSource::ProcessStatsLog,
            ProcessSource::ProgressInfoLine
        ]
    );
    assert_eq!(ev.build_metrics.action_cache_hits, Some(3));
    assert_eq!(ev.build_metrics.critical_path_ms, Some(16_410));
    // No exec log: the image comes from the effective default properties.
    assert_eq!(ev.worker_images.len(), 1);
    assert_eq!(
        ev.worker_images[0].source,
        ImageSource::DefaultExecProperties
    );
    assert_eq!(ev.all_remote_images_pinned, Some(true));
}

#[test]
fn runner_count_outranks_text_even_when_they_differ() {
    let mut events = bazel8_stream(&[]);
    let last = events.len() - 1;
    events[last] = metrics(
        &[("total", 51), ("remote", 40)].map(|(n, c)| (n, c, "")),
        None,
    );
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.processes.remote_executions, Some(40));
    assert_eq!(ev.processes.sources[1].runners["remote"], 47);
}

#[test]
fn tag_only_image_is_not_pinned() {
    let mut events = bazel8_stream(&[]);
    events[3] = command_line(
        "canonical",
        &[
            ("remote_executor", "grpc://rbe:8980"),
            (
                "remote_default_exec_properties",
                "container-image=docker://x/y:latest",
            ),
        ],
    );
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.worker_images[0].image, "docker://x/y:latest");
    assert!(!ev.worker_images[0].pinned);
    assert_eq!(ev.all_remote_images_pinned, Some(false));
    for almost in [
        "docker://x/y@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        "docker://x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        "docker://x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
    ] {
        assert!(!proof_evidence::is_pinned_image(almost), "{almost}");
    }
    assert!(proof_evidence::is_pinned_image(PINNED));
}

#[test]
fn emptied_executor_is_not_forced() {
    // An rc file set it; the command line emptied it; the last one wins.
    let mut events = bazel8_stream(&[("remote_executor", "")]);
    events[5] = options_parsed(&[
        "--remote_executor=grpcs://rbe.example:443",
        "--remote_executor=",
    ]);
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.executor.remote_executor, None);
    assert!(!ev.executor.forced);
    assert!(
        ev.executor.not_forced_reasons[0].contains("empty value"),
        "{:?}",
        ev.executor.not_forced_reasons
    );
}

#[test]
fn local_spawn_strategy_and_local_strategy_are_not_forced() {
    let ev = derive(&bazel8_stream(&[("spawn_strategy", "local")]), None).unwrap();
    assert!(!ev.executor.forced);
    assert_eq!(ev.executor.spawn_strategy.as_deref(), Some("local"));
    assert!(ev.executor.not_forced_reasons[0].contains("--spawn_strategy=local"));

    let ev = derive(&bazel8_stream(&[("spawn_strategy", "remote")]), None).unwrap();
    assert!(ev.executor.forced);

    let ev = derive(&bazel8_stream(&[("strategy", "Genrule=local")]), None).unwrap();
    assert!(!ev.executor.forced);
    assert_eq!(ev.executor.strategies, vec!["Genrule=local"]);
    assert!(ev.executor.not_forced_reasons[0].contains("Genrule"));

    let ev = derive(
        &bazel8_stream(&[("strategy_regexp", "//third_party/.*=local")]),
        None,
    )
    .unwrap();
    assert!(!ev.executor.forced);
    assert_eq!(ev.executor.strategy_regexps, vec!["//third_party/.*=local"]);
    assert!(ev.executor.not_forced_reasons[0].contains("//third_party/.*"));

    // A later --strategy for the same mnemonic overrides the local one.
    let ev = derive(
        &bazel8_stream(&[
            ("strategy", "Genrule=local"),
            ("strategy", "Genrule=remote"),
        ]),
        None,
    )
    .unwrap();
    assert!(ev.executor.forced, "{:?}", ev.executor.not_forced_reasons);
}

#[test]
fn bazel6_options_parsed_and_description_fallbacks() {
    // No canonical command line: OptionsParsed is used.
    let events = vec![
        started("6.5.0", "--remote_executor=grpc://from-description:1"),
        options_parsed(&[
            "--remote_executor=grpc://rbe:8980",
            "--noremote_accept_cached",
            "--remote_default_exec_properties=container-image=docker://x/y:6",
        ]),
        finished("", 0),
        metrics(
            &[("total", 4, ""), ("internal", 1, ""), ("remote", 3, "")],
            None,
        ),
    ];
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.executor.source, Some(OptionSource::OptionsParsed));
    assert_eq!(
        ev.executor.remote_executor.as_deref(),
        Some("grpc://rbe:8980")
    );
    assert_eq!(ev.executor.remote_accept_cached, Some(false));
    assert_eq!(ev.exit_code.as_ref().unwrap().name, "SUCCESS");
    assert_eq!(ev.processes.remote_executions, Some(3));
    assert!(ev.processes.sources[0].exec_kinds.is_empty());

    // Only BuildStarted.options_description, with a quoted value.
    let events = vec![
        started(
            "6.4.0",
            "--remote_executor=grpc://d:1 --remote_default_exec_properties='container-image=docker://x/y:tag' --spawn_strategy=remote,local",
        ),
        finished("BUILD_FAILURE", 1),
    ];
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.executor.source, Some(OptionSource::OptionsDescription));
    assert_eq!(ev.executor.remote_executor.as_deref(), Some("grpc://d:1"));
    assert_eq!(
        ev.executor.exec_properties["container-image"],
        "docker://x/y:tag"
    );
    assert!(ev.executor.forced);
    assert!(!ev.success && !ev.complete);
    assert_eq!(ev.processes.remote_executions, None);
}

#[test]
fn bazel9_redacted_headers_and_canonical_after_tool() {
    let events = vec![
        started("9.0.0", ""),
        command_line("original", &[]),
        command_line("tool", &[]),
        command_line(
            "canonical",
            &[
                ("remote_executor", "grpc://rbe:8980"),
                ("remote_header", "<REDACTED>"),
                ("bes_header", "x-token=<REDACTED>"),
            ],
        ),
        finished("SUCCESS", 0),
        metrics(
            &[
                ("total", 3118, ""),
                ("internal", 1131, ""),
                ("local", 22, "Local"),
                ("processwrapper-sandbox", 1965, "Local"),
            ],
            None,
        ),
    ];
    let ev = derive(&events, None).unwrap();
    assert_eq!(ev.executor.header_keys["remote_header"], vec!["<REDACTED>"]);
    assert_eq!(ev.executor.header_keys["bes_header"], vec!["x-token"]);
    assert_eq!(ev.processes.remote_executions, Some(0));
    assert_eq!(ev.processes.sources[0].total, Some(3118));
}

#[test]
fn tests_record_strategy_and_cache_state() {
    let mut events = bazel8_stream(&[]);
    events.insert(8, test_result("//:a", 1, "remote", false));
    events.insert(8, test_result("//:b", 1, "remote", true));
    events.insert(8, test_result("//:c", 1, "linux-sandbox", false));
    events.insert(8, test_result("//:c", 2, "remote", false));
    let ev = derive(&events, None).unwrap();
    let a = &ev.tests["//:a"];
    assert_eq!(
        (a.strategy.as_deref(), a.cached_remotely),
        (Some("remote"), false)
    );
    assert!(ev.tests["//:b"].cached_remotely);
    let c = &ev.tests["//:c"];
    assert_eq!(c.strategy, None);
    assert_eq!(c.strategies, vec!["linux-sandbox", "remote"]);
    assert_eq!((c.attempts, c.status.as_str()), (2, "PASSED"));
}

// ---------------------------------------------------------------- exec logs

fn metrics_ms(total: i64, queue: i64, exec: i64) -> xl::SpawnMetrics {
    let d = |ms: i64| {
        Some(prost_types::Duration {
            seconds: ms / 1000,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        })
    };
    xl::SpawnMetrics {
        total_time: d(total),
        queue_time: d(queue),
        execution_wall_time: d(exec),
        fetch_time: d(5),
        upload_time: d(7),
        ..xl::SpawnMetrics::default()
    }
}

fn platform(image: &str) -> Option<xl::Platform> {
    Some(xl::Platform {
        properties: vec![
            xl::platform::Property {
                name: "OSFamily".into(),
                value: "Linux".into(),
            },
            xl::platform::Property {
                name: "container-image".into(),
                value: image.into(),
            },
        ],
    })
}

fn compact_spawn(
    runner: &str,
    image: &str,
    hash: &str,
    m: Option<xl::SpawnMetrics>,
) -> xl::ExecLogEntry {
    xl::ExecLogEntry {
        id: 0,
        r#type: Some(xl::exec_log_entry::Type::Spawn(xl::exec_log_entry::Spawn {
            args: vec!["/bin/true".into()],
            platform: platform(image),
            input_set_id: 3,
            target_label: "//:t".into(),
            mnemonic: "Genrule".into(),
            runner: runner.into(),
            cache_hit: runner.contains("cache hit"),
            remotable: true,
            digest: Some(xl::Digest {
                hash: hash.into(),
                size_bytes: 140,
                hash_function_name: String::new(),
            }),
            metrics: m,
            ..xl::exec_log_entry::Spawn::default()
        })),
    }
}

/// A 7.4+/8.x compact log: invocation, file, input set, then spawns.
fn compact_log(invocation_id: &str) -> Vec<u8> {
    let other = "docker://x/y:latest";
    let entries = vec![
        xl::ExecLogEntry {
            id: 0,
            r#type: Some(xl::exec_log_entry::Type::Invocation(
                xl::exec_log_entry::Invocation {
                    hash_function_name: "SHA-256".into(),
                    workspace_runfiles_directory: "_main".into(),
                    id: invocation_id.into(),
                    ..Default::default()
                },
            )),
        },
        xl::ExecLogEntry {
            id: 2,
            r#type: Some(xl::exec_log_entry::Type::File(xl::exec_log_entry::File {
                path: "in.txt".into(),
                digest: Some(xl::Digest {
                    hash: "ff".repeat(32),
                    size_bytes: 3,
                    hash_function_name: String::new(),
                }),
            })),
        },
        xl::ExecLogEntry {
            id: 3,
            r#type: Some(xl::exec_log_entry::Type::InputSet(
                xl::exec_log_entry::InputSet {
                    input_ids: vec![2],
                    transitive_set_ids: vec![],
                },
            )),
        },
        compact_spawn(
            "remote",
            PINNED,
            &"bb".repeat(32),
            Some(metrics_ms(1500, 200, 900)),
        ),
        compact_spawn(
            "remote",
            PINNED,
            &"aa".repeat(32),
            Some(metrics_ms(2500, 300, 1800)),
        ),
        compact_spawn(
            "remote",
            other,
            &"cc".repeat(32),
            Some(metrics_ms(1000, 100, 700)),
        ),
        compact_spawn(
            "remote cache hit",
            PINNED,
            &"dd".repeat(32),
            Some(metrics_ms(50, 0, 0)),
        ),
        compact_spawn("linux-sandbox", "", &"ee".repeat(32), None),
    ];
    let mut plain = Vec::new();
    for e in entries {
        write_delimited(&mut plain, &e.encode_to_vec());
    }
    zstd::encode_all(&plain[..], 3).unwrap()
}

#[test]
fn compact_exec_log_digests_metrics_and_images() {
    let log = compact_log(UUID);
    assert_eq!(log[..4], ZSTD_MAGIC);
    let reader = ExecLogReader::open(&log[..]).unwrap();
    assert_eq!(reader.format(), ExecLogFormat::Compact);
    let spawns: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(spawns.len(), 5);
    assert_eq!(spawns[0].platform_property("container-image"), Some(PINNED));

    let ev = derive(&bazel8_stream(&[]), Some(&log)).unwrap();
    let x = ev.exec_log.as_ref().unwrap();
    assert_eq!(x.format, ExecLogFormat::Compact);
    assert_eq!(x.invocation_id.as_deref(), Some(UUID));
    assert_eq!(x.hash_function.as_deref(), Some("SHA-256"));
    assert_eq!(x.spawns, 5);
    assert_eq!(x.runners["remote"], 3);
    let hashes: Vec<_> = x
        .remote_action_digests
        .iter()
        .map(|d| d.hash.clone())
        .collect();
    assert_eq!(
        hashes,
        vec!["aa".repeat(32), "bb".repeat(32), "cc".repeat(32)]
    );
    assert!(x.remote_action_digests.iter().all(|d| d.size_bytes == 140));
    let m = x.remote_metrics;
    assert_eq!(m.spawns, 3);
    assert_eq!(m.total_ms, 5000);
    assert_eq!(m.queue_ms, 600);
    assert_eq!(m.execution_wall_ms, 3400);
    assert_eq!(m.fetch_ms, 15);
    assert_eq!(m.upload_ms, 21);

    // Two images: both listed, never merged; one is tag-only.
    let images: Vec<_> = ev
        .worker_images
        .iter()
        .map(|i| {
            (
                i.image.as_str(),
                i.pinned,
                i.remote_spawns,
                i.cache_hit_spawns,
            )
        })
        .collect();
    assert_eq!(
        images,
        vec![
            (PINNED, true, Some(2), Some(1)),
            ("docker://x/y:latest", false, Some(1), Some(0)),
        ],
        "sorted by image"
    );
    assert!(ev
        .worker_images
        .iter()
        .all(|i| i.source == ImageSource::ExecLog));
    assert_eq!(ev.all_remote_images_pinned, Some(false));
    // runner_count still outranks the exec log.
    assert_eq!(ev.processes.remote_executions, Some(47));
    assert_eq!(
        ev.processes.sources.last().unwrap().source,
        ProcessSource::ExecLog
    );
}

#[test]
fn exec_log_of_another_invocation_is_refused() {
    let log = compact_log("00000000-0000-0000-0000-000000000000");
    let err = derive(&bazel8_stream(&[]), Some(&log)).unwrap_err();
    assert!(
        matches!(err, EvidenceError::InvocationMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("same Bazel command"));
}

#[test]
fn local_fallback_with_fallen_back_spawns_is_not_forced() {
    let log = compact_log(UUID);
    let ev = derive(
        &bazel8_stream(&[("remote_local_fallback", "1")]),
        Some(&log),
    )
    .unwrap();
    assert_eq!(ev.executor.remote_local_fallback, Some(true));
    assert!(!ev.executor.forced);
    assert!(ev.executor.not_forced_reasons[0].contains("1 remotable spawn"));
    // Fallback allowed but nothing fell back: still forced.
    let ev = derive(&bazel8_stream(&[("remote_local_fallback", "1")]), None).unwrap();
    assert!(ev.executor.forced, "{:?}", ev.executor.not_forced_reasons);
    // Without an exec log, local processes in the counts are suspects.
    let mut events = bazel8_stream(&[("remote_local_fallback", "true")]);
    let last = events.len() - 1;
    events[last] = metrics(
        &[
            ("total", 51, ""),
            ("remote", 45, "Remote"),
            ("linux-sandbox", 2, "Local"),
        ],
        None,
    );
    let ev = derive(&events, None).unwrap();
    assert!(!ev.executor.forced);
    assert!(ev.executor.not_forced_reasons[0].contains("2 process(es) ran locally"));
}

#[test]
fn binary_exec_log_with_digests_bazel6_shape() {
    let mut log = Vec::new();
    for (runner, hash) in [("remote", "12"), ("remote", "34"), ("worker", "56")] {
        let s = xl::SpawnExec {
            runner: runner.into(),
            platform: platform(PINNED),
            digest: Some(xl::Digest {
                hash: hash.repeat(32),
                size_bytes: 99,
                hash_function_name: "SHA-256".into(),
            }),
            metrics: Some(metrics_ms(1000, 10, 500)),
            exit_code: if hash == "34" { 1 } else { 0 },
            ..xl::SpawnExec::default()
        };
        write_delimited(&mut log, &s.encode_to_vec());
    }
    let mut b = EvidenceBuilder::new();
    for e in bazel8_stream(&[]) {
        b.push_event(&e.encode_to_vec()).unwrap();
    }
    b.push_exec_log(&log[..]).unwrap();
    let ev = b.finish().unwrap();
    let x = ev.exec_log.unwrap();
    assert_eq!(x.format, ExecLogFormat::Binary);
    assert_eq!(x.remote_action_digests.len(), 2);
    assert_eq!(x.remote_metrics.total_ms, 2000);
    assert_eq!(x.failed_spawns, 1);
    assert_eq!(x.runners["worker"], 1);
}

#[test]
fn corrupt_inputs_give_errors_that_say_what_is_wrong() {
    let mut b = EvidenceBuilder::new();
    let err = b.push_event(&[0x0a, 0x05, 0x01]).unwrap_err();
    assert!(
        err.to_string()
            .contains("not a valid build_event_stream.BuildEvent"),
        "{err}"
    );

    let mut bad = ZSTD_MAGIC.to_vec();
    bad.extend_from_slice(&[0xff; 16]);
    let err = EvidenceBuilder::new().push_exec_log(&bad[..]).unwrap_err();
    assert!(matches!(err, EvidenceError::Zstd(_)), "{err}");

    let mut log = compact_log(UUID);
    log.truncate(log.len() - 8);
    assert!(EvidenceBuilder::new().push_exec_log(&log[..]).is_err());

    let err = EvidenceBuilder::new()
        .push_exec_log(&[0x05, 0x01, 0x02][..])
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let two = [started("8.3.1", ""), started("8.3.1", "")];
    let err = derive(&two, None).unwrap_err();
    assert!(matches!(err, EvidenceError::SecondBuildStarted { .. }));
}

#[test]
fn evidence_json_is_deterministic() {
    let log = compact_log(UUID);
    let a = serde_json::to_value(derive(&bazel8_stream(&[]), Some(&log)).unwrap()).unwrap();
    let b = serde_json::to_value(derive(&bazel8_stream(&[]), Some(&log)).unwrap()).unwrap();
    assert_eq!(a, b);
    let back: Evidence = serde_json::from_value(a.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), a);
    assert_eq!(a["predicate_version"], "v1");
    assert_eq!(a["processes"]["source"], "runner_count");
    assert_eq!(a["executor"]["source"], "canonical_command_line");
}
