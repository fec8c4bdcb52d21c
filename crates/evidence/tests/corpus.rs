//! The corpus of real streams that Bazel 6.0.0-pre, 7.x, 8.x and 9.x wrote,
//! kept outside the repository in the shared folder beside it
//! (`<repo>/../shared/fixtures/real`, provenance in its SOURCES file; see
//! `proof_fixtures`): every file reads through our schema without a single
//! conversion warning, and the evidence derived from it is checked field by
//! field twice — against what the raw file says (JSON walked here with
//! serde_json; binary files decoded here by hand from the protobuf wire
//! format into the same JSON shape; both independently of our schema, reader
//! and evidence builder) and against the facts pinned in the table below (so
//! a fixture swapped for another fails too).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use proof_evidence::{Evidence, EvidenceBuilder, ProcessSource};
use proof_fixtures::{real_dir, real_file};
use proof_stream::bepfile::{BepFileReader, BepFormat, ConversionWarning};
use serde_json::Value;

/// What each file says, read off the file (see SOURCES in the shared folder).
struct Fixture {
    dir: &'static str,
    file: &'static str,
    format: BepFormat,
    invocation_id: &'static str,
    version: &'static str,
    command: &'static str,
    exit_name: &'static str,
    exit_code: i32,
    events: u64,
    remote_executor: Option<&'static str>,
    remote_instance: Option<&'static str>,
    remote_cache: Option<&'static str>,
    forced: bool,
    /// Spawns the runner counts show on a remote executor.
    remote_executions: u64,
    remote_cache_hits: u64,
    /// Top-level targets (labels; a label configured again under an aspect
    /// is one target).
    targets: usize,
    /// The "process stats" BuildToolLogs entry.
    process_stats: &'static str,
}

const CORPUS: &[Fixture] = &[
    Fixture {
        dir: "bazel-6.0.0-pre-build-binary",
        file: "bep.bin",
        format: BepFormat::Binary,
        invocation_id: "3829ed9b-29fe-4d58-b605-035ce2b1c047",
        version: "6.0.0-pre.20211110.1",
        command: "build",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 955,
        // --remote_executor=grpc://buildfarm.crpt.tech:8980 is only inside
        // --default_override (config remote_shared, not selected): not in force.
        remote_executor: None,
        remote_instance: None,
        remote_cache: Some("grpc://buildfarm.crpt.tech:8980"),
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        // 30 TargetConfigured and 30 TargetCompleted events: 15 labels, each
        // also under the IntelliJ aspect.
        targets: 15,
        process_stats: "1 process: 1 internal.",
    },
    Fixture {
        dir: "bazel-7.1.0-test",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "fd03240f-697e-4b64-95bc-888e27445bf9",
        version: "7.1.0",
        command: "test",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 284,
        remote_executor: None,
        remote_instance: None,
        remote_cache: None,
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        targets: 63,
        process_stats: "3 processes: 1 internal, 1 darwin-sandbox, 1 local.",
    },
    Fixture {
        dir: "bazel-7.1.0-test-fail",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "08ae089d-4c85-405c-83fc-dbe9fc1dc942",
        version: "7.1.0",
        command: "test",
        exit_name: "BUILD_FAILURE",
        exit_code: 1,
        events: 262,
        remote_executor: None,
        remote_instance: None,
        remote_cache: None,
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        targets: 63,
        process_stats: "3 processes: 2 internal, 1 local.",
    },
    Fixture {
        dir: "bazel-7.4.0-flaky-test",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "337be0c6-0b6a-47fa-a573-19a33412c719",
        version: "7.4.0",
        command: "test",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 39,
        remote_executor: None,
        remote_instance: None,
        remote_cache: None,
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        targets: 2,
        // Tool-log contents emptied upstream (see SOURCES).
        process_stats: "",
    },
    Fixture {
        dir: "bazel-8.1.1-no-build",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "76651929-40d8-4f79-a2de-6a4a5092b76c",
        version: "8.1.1",
        command: "build",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 453,
        remote_executor: None,
        remote_instance: None,
        remote_cache: None,
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        targets: 216,
        process_stats: "0 processes.",
    },
    Fixture {
        dir: "bazel-8.2.1-binary",
        file: "bep.bin",
        format: BepFormat::Binary,
        invocation_id: "7dec38b3-dffc-460d-b48b-362a2738af78",
        version: "8.2.1",
        command: "test",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 735,
        remote_executor: None,
        remote_instance: None,
        remote_cache: Some("grpcs://buildbarn2.build.trunk-staging.io:1986"),
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 1840,
        targets: 129,
        process_stats: "9417 processes: 9496 action cache hit, 1840 remote cache hit, 1993 internal, 5497 linux-sandbox, 87 local.",
    },
    Fixture {
        dir: "bazel-8.3.1-remote",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "eb510b31-a9cc-441f-8898-5104ef0025fd",
        version: "8.3.1",
        command: "test",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 111,
        remote_executor: Some("grpc://localhost:8980"),
        remote_instance: Some("fuse"),
        remote_cache: None,
        forced: true,
        remote_executions: 47,
        remote_cache_hits: 0,
        targets: 1,
        process_stats: "51 processes: 4 internal, 47 remote.",
    },
    Fixture {
        dir: "bazel-9.0.0-build",
        file: "bep.ndjson",
        format: BepFormat::Json,
        invocation_id: "8e56d2d7-ca9b-45e6-a08f-85e7749e3c83",
        version: "9.0.0",
        command: "build",
        exit_name: "SUCCESS",
        exit_code: 0,
        events: 1157,
        remote_executor: None,
        remote_instance: None,
        remote_cache: None,
        forced: false,
        remote_executions: 0,
        remote_cache_hits: 0,
        targets: 215,
        process_stats: "3118 processes: 1131 internal, 22 local, 1965 processwrapper-sandbox.",
    },
];

fn path(fx: &Fixture) -> PathBuf {
    real_file(&format!("{}/{}", fx.dir, fx.file))
}

/// Reads a BEP file through our reader; returns the events, the warnings
/// and the evidence.
fn derive_bytes(bytes: &[u8]) -> (BepFormat, Vec<Vec<u8>>, Vec<ConversionWarning>, Evidence) {
    let mut reader = BepFileReader::open(bytes).unwrap();
    let events: Vec<Vec<u8>> = (&mut reader).collect::<Result<_, _>>().unwrap();
    let mut b = EvidenceBuilder::new();
    for e in &events {
        b.push_event(e).unwrap();
    }
    let warnings = reader.take_warnings();
    (reader.format(), events, warnings, b.finish().unwrap())
}

/// The events of a `--build_event_binary_file`, decoded by hand from the
/// protobuf wire format (varint-delimited records; field numbers as in
/// Bazel's build_event_stream.proto, command_line.proto and
/// action_cache.proto) into the JSON Bazel's `--build_event_json_file` would
/// write for the fields these checks read. Independent of our schema, of
/// prost and of our readers: what the binary files are checked against.
mod wire {
    use base64::Engine as _;
    use serde_json::{Map, Value};

    /// How a field's value becomes JSON.
    #[derive(Clone, Copy)]
    enum Kind {
        Str,
        Int,
        Bool,
        /// Bytes, as base64 (proto3 JSON).
        Bytes,
        /// Presence only: an empty object.
        Present,
        Msg(&'static [F]),
    }
    use Kind::*;

    /// Field number, JSON name, kind, repeated.
    type F = (u64, &'static str, Kind, bool);

    const LABEL_ASPECT: &[F] = &[(1, "label", Str, false), (2, "aspect", Str, false)];
    const ID: &[F] = &[
        (5, "targetCompleted", Msg(LABEL_ASPECT), false),
        (16, "targetConfigured", Msg(LABEL_ASPECT), false),
    ];
    const STARTED: &[F] = &[
        (1, "uuid", Str, false),
        (3, "buildToolVersion", Str, false),
        (5, "command", Str, false),
    ];
    const EXIT_CODE: &[F] = &[(1, "name", Str, false), (2, "code", Int, false)];
    const FINISHED: &[F] = &[(3, "exitCode", Msg(EXIT_CODE), false)];
    const OPTION: &[F] = &[
        (1, "combinedForm", Str, false),
        (2, "optionName", Str, false),
        (3, "optionValue", Str, false),
    ];
    const OPTION_LIST: &[F] = &[(1, "option", Msg(OPTION), true)];
    const SECTION: &[F] = &[
        (1, "sectionLabel", Str, false),
        (3, "optionList", Msg(OPTION_LIST), false),
    ];
    const COMMAND_LINE: &[F] = &[
        (1, "commandLineLabel", Str, false),
        (2, "sections", Msg(SECTION), true),
    ];
    const RUNNER_COUNT: &[F] = &[(1, "name", Str, false), (2, "count", Int, false)];
    const ACTION_CACHE: &[F] = &[(3, "hits", Int, false), (4, "misses", Int, false)];
    const ACTION_SUMMARY: &[F] = &[
        (6, "runnerCount", Msg(RUNNER_COUNT), true),
        (7, "actionCacheStatistics", Msg(ACTION_CACHE), false),
    ];
    const METRICS: &[F] = &[(1, "actionSummary", Msg(ACTION_SUMMARY), false)];
    const FILE: &[F] = &[(1, "name", Str, false), (3, "contents", Bytes, false)];
    const TOOL_LOGS: &[F] = &[(1, "log", Msg(FILE), true)];
    const CONFIGURED: &[F] = &[(1, "targetKind", Str, false)];
    const COMPLETED: &[F] = &[(1, "success", Bool, false), (5, "targetKind", Str, false)];
    const EVENT: &[F] = &[
        (1, "id", Msg(ID), false),
        (4, "aborted", Present, false),
        (5, "started", Msg(STARTED), false),
        (8, "completed", Msg(COMPLETED), false),
        (14, "finished", Msg(FINISHED), false),
        (18, "configured", Msg(CONFIGURED), false),
        (20, "lastMessage", Bool, false),
        (22, "structuredCommandLine", Msg(COMMAND_LINE), false),
        (23, "buildToolLogs", Msg(TOOL_LOGS), false),
        (24, "buildMetrics", Msg(METRICS), false),
    ];

    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
        }
        panic!("a varint longer than 10 bytes at {at}");
    }

    fn message(b: &[u8], schema: &[F]) -> Value {
        let mut out = Map::new();
        let mut at = 0;
        while at < b.len() {
            let key = varint(b, &mut at);
            let (number, wire_type) = (key >> 3, key & 7);
            let (num, bytes): (u64, &[u8]) = match wire_type {
                0 => (varint(b, &mut at), &[]),
                1 => {
                    at += 8;
                    (0, &[])
                }
                2 => {
                    let len = usize::try_from(varint(b, &mut at)).unwrap();
                    at += len;
                    (0, &b[at - len..at])
                }
                5 => {
                    at += 4;
                    (0, &[])
                }
                other => panic!("wire type {other} (field {number})"),
            };
            let Some(&(_, name, kind, repeated)) = schema.iter().find(|f| f.0 == number) else {
                continue;
            };
            let value = match kind {
                Str => Value::from(String::from_utf8(bytes.to_vec()).unwrap()),
                // int32 and int64 alike: two's complement in 64 bits.
                Int => Value::from(num as i64),
                Bool => Value::from(num != 0),
                Bytes => Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
                Present => Value::Object(Map::new()),
                Msg(fields) => message(bytes, fields),
            };
            if repeated {
                let list = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                list.as_array_mut().unwrap().push(value);
            } else {
                out.insert(name.to_string(), value);
            }
        }
        assert_eq!(at, b.len(), "a field runs past the end of its message");
        Value::Object(out)
    }

    /// Every record of the file, as JSON.
    pub fn events(file: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < file.len() {
            let len = usize::try_from(varint(file, &mut at)).unwrap();
            out.push(message(&file[at..at + len], EVENT));
            at += len;
        }
        assert_eq!(
            at,
            file.len(),
            "the last record runs past the end of the file"
        );
        out
    }
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of `--NAME` in the canonical structured command line.
fn canonical_option(events: &[Value], name: &str) -> Option<String> {
    let canonical = events.iter().find_map(|e| {
        let cl = e.get("structuredCommandLine")?;
        (cl["commandLineLabel"] == "canonical").then_some(cl)
    })?;
    let mut found = None;
    for section in canonical["sections"].as_array()? {
        for opt in section["optionList"]["option"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if opt["optionName"] == name {
                found = opt["optionValue"].as_str().map(str::to_string);
            }
        }
    }
    found
}

/// Runner-count entries of the BuildMetrics event: name → count.
fn runner_count(events: &[Value], name: &str) -> u64 {
    events
        .iter()
        .filter_map(|e| e["buildMetrics"]["actionSummary"]["runnerCount"].as_array())
        .flatten()
        .filter(|r| r["name"] == name)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Top-level targets as the events state them: label → (kind, success).
/// A TargetConfigured counts without an aspect only; every TargetCompleted
/// (aspects too) and every Aborted of either counts towards the outcome.
fn targets_of(events: &[Value]) -> BTreeMap<String, (Option<String>, Option<bool>)> {
    let mut out: BTreeMap<String, (Option<String>, Option<bool>)> = BTreeMap::new();
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    for e in events {
        let aborted = e.get("aborted").is_some();
        if let Some(t) = e["id"].get("targetConfigured") {
            if text(&t["aspect"]).is_none() && (aborted || e.get("configured").is_some()) {
                let entry = out.entry(text(&t["label"]).unwrap()).or_default();
                if let Some(kind) = text(&e["configured"]["targetKind"]) {
                    entry.0 = Some(kind);
                }
                if aborted {
                    entry.1 = Some(false);
                }
            }
        }
        if let Some(t) = e["id"].get("targetCompleted") {
            if let Some(c) = e.get("completed") {
                let entry = out.entry(text(&t["label"]).unwrap()).or_default();
                entry.1 = Some(entry.1.unwrap_or(true) && c["success"] == true);
                if entry.0.is_none() {
                    entry.0 = text(&c["targetKind"]);
                }
            } else if aborted {
                out.entry(text(&t["label"]).unwrap()).or_default().1 = Some(false);
            }
        }
    }
    out
}

/// The text of the "process stats" BuildToolLogs entry.
fn process_stats_log(events: &[Value]) -> Option<String> {
    let log = events
        .iter()
        .filter_map(|e| e["buildToolLogs"]["log"].as_array())
        .flatten()
        .find(|l| l["name"] == "process stats")?;
    let contents = base64::engine::general_purpose::STANDARD
        .decode(log["contents"].as_str().unwrap_or(""))
        .unwrap();
    Some(String::from_utf8(contents).unwrap())
}

/// `N process[es]: c1 name1, c2 name2.` read naively: (N, name → count).
fn split_process_stats(text: &str) -> (u64, BTreeMap<String, u64>) {
    let text = text.strip_suffix('.').unwrap();
    let (head, list) = text.split_once(": ").unwrap_or((text, ""));
    let total = head.split(' ').next().unwrap().parse().unwrap();
    let runners = list
        .split(", ")
        .filter(|i| !i.is_empty())
        .map(|i| {
            let (n, name) = i.split_once(' ').unwrap();
            (name.to_string(), n.parse().unwrap())
        })
        .collect();
    (total, runners)
}

/// Every evidence field the file states (its JSON, or its binary decoded by
/// hand into the same JSON), compared with the evidence our pipeline derived.
fn check_against_json(fx: &Fixture, events: &[Value], ev: &Evidence) {
    let d = fx.dir;
    assert_eq!(ev.event_count, events.len() as u64, "{d}");
    let started = events.iter().find_map(|e| e.get("started")).unwrap();
    assert_eq!(ev.invocation_id, started["uuid"].as_str().unwrap(), "{d}");
    assert_eq!(
        ev.bazel_version.as_deref(),
        started["buildToolVersion"].as_str(),
        "{d}"
    );
    assert_eq!(ev.command, started["command"].as_str().unwrap(), "{d}");
    let finished = events.iter().find_map(|e| e.get("finished")).unwrap();
    let exit = ev.exit_code.as_ref().unwrap();
    assert_eq!(
        exit.name,
        finished["exitCode"]["name"].as_str().unwrap(),
        "{d}"
    );
    assert_eq!(
        i64::from(exit.code),
        finished["exitCode"]["code"].as_i64().unwrap_or(0),
        "{d}"
    );
    assert_eq!(ev.success, exit.code == 0, "{d}");
    let last = events.iter().any(|e| e["lastMessage"] == true);
    assert_eq!(ev.complete, last, "{d}");
    assert_eq!(
        ev.executor.remote_executor,
        canonical_option(events, "remote_executor"),
        "{d}"
    );
    assert_eq!(
        ev.executor.remote_instance_name,
        canonical_option(events, "remote_instance_name"),
        "{d}"
    );
    assert_eq!(
        ev.executor.remote_cache,
        canonical_option(events, "remote_cache"),
        "{d}"
    );
    assert_eq!(
        ev.processes.remote_executions,
        Some(runner_count(events, "remote")),
        "{d}"
    );
    assert_eq!(
        ev.processes.remote_cache_hits,
        Some(runner_count(events, "remote cache hit")),
        "{d}"
    );
    assert_eq!(ev.processes.source, Some(ProcessSource::RunnerCount), "{d}");
    // No execution log and no --remote_default_exec_properties in these
    // builds: no image may be claimed.
    assert_eq!(
        canonical_option(events, "remote_default_exec_properties"),
        None,
        "{d}"
    );
    assert!(ev.worker_images.is_empty(), "{d}: {:?}", ev.worker_images);
    let acs = events
        .iter()
        .find_map(|e| e["buildMetrics"]["actionSummary"].get("actionCacheStatistics"));
    let count = |v: Option<&Value>| v.and_then(Value::as_i64).unwrap_or(0);
    assert_eq!(
        ev.build_metrics.action_cache_hits,
        acs.map(|a| count(a.get("hits"))),
        "{d}"
    );
    assert_eq!(
        ev.build_metrics.action_cache_misses,
        acs.map(|a| count(a.get("misses"))),
        "{d}"
    );
    let targets: BTreeMap<String, (Option<String>, Option<bool>)> = ev
        .targets
        .iter()
        .map(|(l, t)| (l.clone(), (t.kind.clone(), t.success)))
        .collect();
    assert_eq!(targets, targets_of(events), "{d}");
    // The "process stats" log, as a figure of its own.
    let figure = ev
        .processes
        .sources
        .iter()
        .find(|f| f.source == ProcessSource::ProcessStatsLog)
        .map(|f| (f.total.unwrap(), f.runners.clone()));
    let stats = process_stats_log(events).filter(|t| !t.is_empty());
    assert_eq!(figure, stats.as_deref().map(split_process_stats), "{d}");
}

/// The facts pinned in the table.
fn check_against_table(fx: &Fixture, ev: &Evidence) {
    let d = fx.dir;
    assert_eq!(ev.invocation_id, fx.invocation_id, "{d}");
    assert_eq!(ev.bazel_version.as_deref(), Some(fx.version), "{d}");
    assert_eq!(ev.command, fx.command, "{d}");
    let exit = ev.exit_code.as_ref().unwrap();
    assert_eq!(
        (exit.name.as_str(), exit.code),
        (fx.exit_name, fx.exit_code),
        "{d}"
    );
    assert_eq!(ev.event_count, fx.events, "{d}");
    assert!(ev.complete, "{d}: every corpus stream is whole");
    assert_eq!(
        ev.executor.remote_executor.as_deref(),
        fx.remote_executor,
        "{d}"
    );
    assert_eq!(
        ev.executor.remote_instance_name.as_deref(),
        fx.remote_instance,
        "{d}"
    );
    assert_eq!(ev.executor.remote_cache.as_deref(), fx.remote_cache, "{d}");
    assert_eq!(ev.executor.forced, fx.forced, "{d}");
    assert_eq!(
        ev.processes.remote_executions,
        Some(fx.remote_executions),
        "{d}"
    );
    assert_eq!(
        ev.processes.remote_cache_hits,
        Some(fx.remote_cache_hits),
        "{d}"
    );
    assert_eq!(ev.targets.len(), fx.targets, "{d}");
    let figure = ev
        .processes
        .sources
        .iter()
        .find(|f| f.source == ProcessSource::ProcessStatsLog);
    match fx.process_stats {
        "" => assert_eq!(figure, None, "{d}"),
        text => assert_eq!(
            figure.map(|f| (f.total.unwrap(), f.runners.clone())),
            Some(split_process_stats(text)),
            "{d}"
        ),
    }
}

fn run(dir: &str) {
    let fx = CORPUS.iter().find(|f| f.dir == dir).unwrap();
    let bytes = std::fs::read(path(fx)).unwrap();
    let (format, events, warnings, ev) = derive_bytes(&bytes);
    assert_eq!(format, fx.format, "{dir}");
    assert!(
        warnings.is_empty(),
        "{dir}: the schema does not fit Bazel {}'s own output: {warnings:#?}",
        fx.version
    );
    assert_eq!(events.len() as u64, fx.events, "{dir}");
    check_against_table(fx, &ev);
    let raw = match format {
        BepFormat::Json => lines(&bytes),
        BepFormat::Binary => wire::events(&bytes),
    };
    check_against_json(fx, &raw, &ev);
    assert_eq!(
        process_stats_log(&raw).unwrap_or_default(),
        fx.process_stats,
        "{dir}"
    );
    // The headline strings are in the raw bytes (base64 aside), whatever decodes them.
    for s in [Some(fx.invocation_id), Some(fx.version), fx.remote_cache]
        .into_iter()
        .flatten()
    {
        assert!(
            bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "{dir}: {s} is not in the file"
        );
    }
}

/// A Bazel 6.x pre-release (the corpus's only 6.x file): an IntelliJ sync
/// (`--aspects`), a remote cache configured, nothing executed. Besides what
/// every file is checked for: the remote executor named only in an rc config
/// that was not selected is not taken as configured, and the process figures
/// of all three sources agree on "1 process: 1 internal.".
#[test]
fn bazel_6_0_0_pre_build_binary() {
    run("bazel-6.0.0-pre-build-binary");
    let fx = &CORPUS[0];
    let bytes = std::fs::read(path(fx)).unwrap();
    let raw = wire::events(&bytes);
    let (_, _, _, ev) = derive_bytes(&bytes);
    // --remote_executor is in the canonical command line only as the value
    // of --default_override (1:build:remote_shared=--remote_executor=…).
    let overrides: Vec<&str> = raw
        .iter()
        .filter(|e| e["structuredCommandLine"]["commandLineLabel"] == "canonical")
        .flat_map(|e| e["structuredCommandLine"]["sections"].as_array().unwrap())
        .filter_map(|s| s["optionList"]["option"].as_array())
        .flatten()
        .filter(|o| {
            o["combinedForm"]
                .as_str()
                .unwrap()
                .contains("remote_executor")
        })
        .map(|o| o["optionName"].as_str().unwrap())
        .collect();
    assert_eq!(overrides, ["default_override"]);
    assert_eq!(ev.executor.remote_executor, None);
    assert!(
        ev.executor.not_forced_reasons[0].starts_with("--remote_executor is not set"),
        "{:?}",
        ev.executor.not_forced_reasons
    );
    // Nor its rc config's exec properties and spawn strategy.
    assert!(ev.executor.exec_properties.is_empty());
    assert_eq!(ev.executor.spawn_strategy, None);
    assert_eq!(ev.executor.remote_upload_local_results, Some(true));
    // 30 TargetConfigured and 30 TargetCompleted events: 15 labels, once
    // plain and once under the IntelliJ aspect, all built.
    let count = |id: &str, aspect: bool| {
        raw.iter()
            .filter_map(|e| e["id"].get(id))
            .filter(|t| t["aspect"].as_str().is_some_and(|a| !a.is_empty()) == aspect)
            .count()
    };
    assert_eq!(
        [
            count("targetConfigured", false),
            count("targetConfigured", true),
            count("targetCompleted", false),
            count("targetCompleted", true),
        ],
        [15, 15, 15, 15]
    );
    assert!(ev.targets.values().all(|t| t.success == Some(true)));
    // One process, internal, in runner_count, the tool log and Progress.
    let figures: Vec<_> = ev
        .processes
        .sources
        .iter()
        .map(|f| (f.source, f.total, f.runners.clone()))
        .collect();
    let one_internal = BTreeMap::from([("internal".to_string(), 1)]);
    assert_eq!(
        figures,
        [
            (ProcessSource::RunnerCount, Some(1), one_internal.clone()),
            (
                ProcessSource::ProcessStatsLog,
                Some(1),
                one_internal.clone()
            ),
            (ProcessSource::ProgressInfoLine, Some(1), one_internal),
        ]
    );
}

#[test]
fn bazel_7_1_0_test() {
    run("bazel-7.1.0-test");
}

#[test]
fn bazel_7_1_0_test_fail() {
    run("bazel-7.1.0-test-fail");
}

#[test]
fn bazel_7_4_0_flaky_test() {
    run("bazel-7.4.0-flaky-test");
}

#[test]
fn bazel_8_1_1_no_build() {
    run("bazel-8.1.1-no-build");
}

#[test]
fn bazel_8_2_1_binary() {
    run("bazel-8.2.1-binary");
}

#[test]
fn bazel_8_3_1_remote() {
    run("bazel-8.3.1-remote");
}

#[test]
fn bazel_9_0_0_build() {
    run("bazel-9.0.0-build");
}

#[test]
fn every_fixture_directory_has_a_test() {
    let root = real_dir();
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|f| f.dir.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}

/// SOURCES is the provenance of every file here: each fixture has its entry
/// (`<dir>/<file>` at the start of a line), the sha256 recorded there is the
/// sha256 of the bytes in the repository (a fixture swapped or edited after
/// its provenance was written fails), and no entry names a file that is not
/// in the corpus.
#[test]
fn sources_records_every_fixture_and_its_sha256() {
    use sha2::{Digest, Sha256};
    let root = real_dir();
    let sources = std::fs::read_to_string(root.join("SOURCES")).unwrap();
    let lines: Vec<&str> = sources.lines().collect();
    // Entries: an unindented line whose first word is `bazel-…/<file>`.
    let entries: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let first = l.split_whitespace().next()?;
            (!l.starts_with(char::is_whitespace)
                && first.starts_with("bazel-")
                && first.contains('/'))
            .then_some((i, first))
        })
        .collect();
    let mut named: Vec<String> = entries.iter().map(|(_, e)| e.to_string()).collect();
    named.sort();
    let mut corpus: Vec<String> = CORPUS
        .iter()
        .map(|f| format!("{}/{}", f.dir, f.file))
        .collect();
    corpus.sort();
    assert_eq!(named, corpus, "SOURCES entries vs the corpus");
    for (k, (start, entry)) in entries.iter().enumerate() {
        let end = entries.get(k + 1).map_or(lines.len(), |(i, _)| *i);
        let recorded: Vec<&str> = lines[start + 1..end]
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("sha256")).then(|| w.next()).flatten()
            })
            .collect();
        assert_eq!(recorded.len(), 1, "{entry}: one sha256 line expected");
        let bytes = std::fs::read(root.join(entry)).unwrap();
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(recorded[0], actual, "{entry}: SOURCES sha256 vs the file");
    }
}

/// The miss reasons of the issue (#9): Bazel writes MissReason by name, and
/// they arrive as the enum values they are.
#[test]
fn miss_reasons_of_real_files_arrive_as_enum_values() {
    use proof_proto::bep::build_event::Payload;
    use proof_proto::blaze::action_cache_statistics::MissReason;
    let fx = CORPUS
        .iter()
        .find(|f| f.dir == "bazel-8.3.1-remote")
        .unwrap();
    let bytes = std::fs::read(path(fx)).unwrap();
    let (_, events, _, _) = derive_bytes(&bytes);
    let metrics = events
        .iter()
        .find_map(|e| {
            match <proof_proto::bep::BuildEvent as prost::Message>::decode(&e[..])
                .unwrap()
                .payload
            {
                Some(Payload::BuildMetrics(m)) => Some(m),
                _ => None,
            }
        })
        .unwrap();
    let acs = metrics
        .action_summary
        .unwrap()
        .action_cache_statistics
        .unwrap();
    let json = lines(&bytes);
    let expected: Vec<(String, i64)> = json
        .iter()
        .find_map(|e| {
            e["buildMetrics"]["actionSummary"]["actionCacheStatistics"]["missDetails"].as_array()
        })
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["reason"]
                    .as_str()
                    .unwrap_or("DIFFERENT_ACTION_KEY")
                    .to_string(),
                d["count"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let got: Vec<(String, i64)> = acs
        .miss_details
        .iter()
        .map(|d| {
            (
                MissReason::try_from(d.reason)
                    .unwrap()
                    .as_str_name()
                    .to_string(),
                i64::from(d.count),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(got.iter().any(|(r, n)| r == "NOT_CACHED" && *n == 49));
}

/// A test copy of a real file with deliberately mistyped fields: an enum
/// name that does not exist, a string where a number goes. Each costs only
/// its field, with a warning naming line and field; every event is kept.
#[test]
fn mistyped_fields_cost_the_field_not_the_event() {
    let fx = CORPUS
        .iter()
        .find(|f| f.dir == "bazel-8.3.1-remote")
        .unwrap();
    let text = std::fs::read_to_string(path(fx)).unwrap();
    let metrics_line = text
        .lines()
        .position(|l| l.contains("\"buildMetrics\":{\"actionSummary\""))
        .unwrap()
        + 1;
    let started_line = text
        .lines()
        .position(|l| l.contains("\"started\":{\"uuid\""))
        .unwrap()
        + 1;
    let bad = text
        .replacen(
            "\"reason\":\"NOT_CACHED\"",
            "\"reason\":\"NO_SUCH_REASON\"",
            1,
        )
        .replacen("\"serverPid\":\"", "\"serverPid\":\"pid-", 1);
    assert_ne!(bad, text);
    let (_, events, warnings, ev) = derive_bytes(bad.as_bytes());
    assert_eq!(events.len() as u64, fx.events, "no event is lost");
    let got: Vec<(u64, &str)> = warnings
        .iter()
        .map(|w| (w.line, w.field.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (started_line as u64, "started.serverPid"),
            (
                metrics_line as u64,
                "buildMetrics.actionSummary.actionCacheStatistics.missDetails[5].reason"
            ),
        ],
        "{warnings:#?}"
    );
    assert!(warnings[0].reason.contains("invalid digit"), "{warnings:?}");
    assert!(
        warnings[1].reason.contains("NO_SUCH_REASON"),
        "{warnings:?}"
    );
    assert!(
        warnings[1]
            .to_string()
            .starts_with(&format!("line {metrics_line}: field buildMetrics")),
        "{}",
        warnings[1]
    );
    // Everything else of both events survives: the evidence is the same.
    check_against_table(fx, &ev);
    assert_eq!(ev.build_metrics.action_cache_misses, Some(52));
}
