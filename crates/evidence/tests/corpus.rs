//! The corpus of real streams that Bazel 7.x, 8.x and 9.x wrote
//! (tests/fixtures/real, provenance in its SOURCES file): every file reads
//! through our schema without a single conversion warning, and the evidence
//! derived from it is checked field by field twice — against what the raw
//! JSON of the file says (walked here with serde_json, independently of our
//! schema) and against the facts pinned in the table below (so a fixture
//! swapped for another fails too).

use std::path::PathBuf;

use proof_evidence::{Evidence, EvidenceBuilder, ProcessSource};
use proof_stream::bepfile::{BepFileReader, BepFormat, ConversionWarning};
use serde_json::Value;

/// What each file says, read off the file (see tests/fixtures/real/SOURCES).
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
}

const CORPUS: &[Fixture] = &[
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
    },
];

fn path(fx: &Fixture) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/real")
        .join(fx.dir)
        .join(fx.file)
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

/// Every evidence field the JSON of the file states, compared with the
/// evidence our pipeline derived.
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
    match format {
        BepFormat::Json => check_against_json(fx, &lines(&bytes), &ev),
        BepFormat::Binary => {
            // Without a JSON twin, check the headline strings are in the
            // raw bytes, independently of our decoder.
            for s in [fx.invocation_id, fx.version, fx.remote_cache.unwrap_or("")] {
                assert!(
                    bytes.windows(s.len().max(1)).any(|w| w == s.as_bytes()),
                    "{dir}: {s} is not in the file"
                );
            }
        }
    }
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real");
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real");
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
