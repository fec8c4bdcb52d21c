//! The corpus of real Bazel 6.0.0-pre–9.x streams (kept outside the
//! repository, in the shared folder `<repo>/../shared/fixtures/real`; see its
//! SOURCES) through the `proof` binary as a user runs it: `proof ingest`,
//! `proof record`, `proof verify`, each output checked against what the file
//! says. `proof verify` passes the integrity checks of every proof and
//! fails exactly the policy checks the evidence does not support (these
//! builds ran locally, or on an executor whose image the stream does not
//! name). And a test copy with mistyped fields: a warning on stderr naming
//! line and field, every event stored, the same verification.

use std::path::{Path, PathBuf};
use std::process::Command;

use proof_e2e::{proof_bin, real_fixture};
use serde_json::Value;

/// What each file says (read off the file; see SOURCES).
struct Fx {
    dir: &'static str,
    file: &'static str,
    format: &'static str,
    invocation_id: &'static str,
    version: &'static str,
    exit_name: &'static str,
    events: u64,
    remote_executor: Option<&'static str>,
    remote_executions: u64,
    /// The policy checks `proof verify` must fail: a proof never claims
    /// more than its evidence shows (local builds fail the remote checks;
    /// no image is known without an execution log or default exec properties).
    failed_checks: &'static [&'static str],
}

const LOCAL: &[&str] = &["executor_forced", "remote_executions", "image_pinned"];

const CORPUS: &[Fx] = &[
    Fx {
        dir: "bazel-6.0.0-pre-build-binary",
        file: "bep.bin",
        format: "binary",
        invocation_id: "3829ed9b-29fe-4d58-b605-035ce2b1c047",
        version: "6.0.0-pre.20211110.1",
        exit_name: "SUCCESS",
        events: 955,
        // --remote_executor only inside --default_override (an rc config
        // not selected): not in force.
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
    Fx {
        dir: "bazel-7.1.0-test",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "fd03240f-697e-4b64-95bc-888e27445bf9",
        version: "7.1.0",
        exit_name: "SUCCESS",
        events: 284,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
    Fx {
        dir: "bazel-7.1.0-test-fail",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "08ae089d-4c85-405c-83fc-dbe9fc1dc942",
        version: "7.1.0",
        exit_name: "BUILD_FAILURE",
        events: 262,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: &[
            "executor_forced",
            "remote_executions",
            "image_pinned",
            "build_succeeded",
        ],
    },
    Fx {
        dir: "bazel-7.4.0-flaky-test",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "337be0c6-0b6a-47fa-a573-19a33412c719",
        version: "7.4.0",
        exit_name: "SUCCESS",
        events: 39,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
    Fx {
        dir: "bazel-8.1.1-no-build",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "76651929-40d8-4f79-a2de-6a4a5092b76c",
        version: "8.1.1",
        exit_name: "SUCCESS",
        events: 453,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
    Fx {
        dir: "bazel-8.2.1-binary",
        file: "bep.bin",
        format: "binary",
        invocation_id: "7dec38b3-dffc-460d-b48b-362a2738af78",
        version: "8.2.1",
        exit_name: "SUCCESS",
        events: 735,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
    Fx {
        dir: "bazel-8.3.1-remote",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "eb510b31-a9cc-441f-8898-5104ef0025fd",
        version: "8.3.1",
        exit_name: "SUCCESS",
        events: 111,
        remote_executor: Some("grpc://localhost:8980"),
        remote_executions: 47,
        failed_checks: &["image_pinned"],
    },
    Fx {
        dir: "bazel-9.0.0-build",
        file: "bep.ndjson",
        format: "json",
        invocation_id: "8e56d2d7-ca9b-45e6-a08f-85e7749e3c83",
        version: "9.0.0",
        exit_name: "SUCCESS",
        events: 1157,
        remote_executor: None,
        remote_executions: 0,
        failed_checks: LOCAL,
    },
];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn proof(args: &[&str]) -> Out {
    let o = Command::new(proof_bin()).args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(&text[text.find('{').expect("JSON output")..]).unwrap()
}

fn fixture(fx: &Fx) -> PathBuf {
    real_fixture(&format!("{}/{}", fx.dir, fx.file))
}

/// `proof ingest`, `proof record`, `proof verify` on one BEP file; returns
/// the three JSON outputs and the stderr of ingest and record.
fn ingest_record_verify(bep: &Path, tmp: &Path) -> (Value, Value, Value, String) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let key = tmp.join("k");
    let kg = proof(&["keygen", "--out", &s(&key)]);
    assert_eq!(kg.code, 0, "{}", kg.stderr);
    let store = tmp.join("store");
    let ing = proof(&["ingest", &s(bep), "--store", &s(&store), "--json"]);
    assert_eq!(
        ing.code, 0,
        "proof ingest failed:\n{}{}",
        ing.stdout, ing.stderr
    );
    let out = tmp.join("proofs");
    let rec = proof(&[
        "record",
        &s(bep),
        "--key",
        &s(&tmp.join("k.key")),
        "--out",
        &s(&out),
        "--json",
    ]);
    assert_eq!(
        rec.code, 0,
        "proof record failed:\n{}{}",
        rec.stdout, rec.stderr
    );
    let recorded = json_of(&rec.stdout);
    let ver = proof(&[
        "verify",
        recorded["path"].as_str().unwrap(),
        "--key",
        &s(&tmp.join("k.pub")),
        "--json",
    ]);
    let verified = json_of(&ver.stdout);
    // Exit 0 pass, 1 fail (a policy check), never 2 (unusable).
    let failed = verified["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["ok"] == false);
    assert_eq!(ver.code, i32::from(failed), "{}{}", ver.stdout, ver.stderr);
    (
        json_of(&ing.stdout),
        recorded,
        verified,
        format!("{}{}", ing.stderr, rec.stderr),
    )
}

/// Names of the checks `proof verify` failed; the integrity checks
/// (envelope, signature, digests, re-derived evidence) must all pass.
fn failed_checks(ver: &Value) -> Vec<String> {
    let checks = ver["checks"].as_array().unwrap();
    for name in ["envelope", "signature", "digests", "rederived"] {
        let c = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["ok"], true, "{name}: {c}");
    }
    checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn run(dir: &str) {
    let fx = CORPUS.iter().find(|f| f.dir == dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (ing, rec, ver, stderr) = ingest_record_verify(&fixture(fx), tmp.path());
    assert!(!stderr.contains("warning"), "{dir}: {stderr}");
    // proof ingest
    assert_eq!(ing["invocation_id"], fx.invocation_id, "{dir}");
    assert_eq!(ing["bazel_version"], fx.version, "{dir}");
    assert_eq!(ing["exit_code"]["name"], fx.exit_name, "{dir}");
    assert_eq!(ing["event_count"], fx.events, "{dir}");
    assert_eq!(ing["complete"], true, "{dir}");
    assert_eq!(ing["format"], fx.format, "{dir}");
    assert_eq!(ing["warnings"], Value::Array(vec![]), "{dir}");
    // proof record, then proof verify re-derives the same evidence
    assert_eq!(rec["invocation_id"], fx.invocation_id, "{dir}");
    assert_eq!(rec["warnings"], Value::Array(vec![]), "{dir}");
    assert_eq!(failed_checks(&ver), fx.failed_checks, "{dir}: {ver}");
    assert_eq!(ver["ok"], fx.failed_checks.is_empty(), "{dir}");
    assert_eq!(ver["artifact_sha256"], rec["artifact_sha256"], "{dir}");
    for ev in [&rec["evidence"], &ver["evidence"]] {
        assert_eq!(ev["invocation_id"], fx.invocation_id, "{dir}");
        assert_eq!(ev["bazel_version"], fx.version, "{dir}");
        assert_eq!(ev["exit_code"]["name"], fx.exit_name, "{dir}");
        assert_eq!(ev["event_count"], fx.events, "{dir}");
        assert_eq!(
            ev["remote_executor"],
            fx.remote_executor.map_or(Value::Null, Value::from),
            "{dir}"
        );
        assert_eq!(ev["remote_executions"], fx.remote_executions, "{dir}");
        assert_eq!(ev["worker_images"], Value::Array(vec![]), "{dir}");
    }
}

#[test]
fn cli_bazel_6_0_0_pre_build_binary() {
    run("bazel-6.0.0-pre-build-binary");
}

#[test]
fn cli_bazel_7_1_0_test() {
    run("bazel-7.1.0-test");
}

#[test]
fn cli_bazel_7_1_0_test_fail() {
    run("bazel-7.1.0-test-fail");
}

#[test]
fn cli_bazel_7_4_0_flaky_test() {
    run("bazel-7.4.0-flaky-test");
}

#[test]
fn cli_bazel_8_1_1_no_build() {
    run("bazel-8.1.1-no-build");
}

#[test]
fn cli_bazel_8_2_1_binary() {
    run("bazel-8.2.1-binary");
}

#[test]
fn cli_bazel_8_3_1_remote() {
    run("bazel-8.3.1-remote");
}

#[test]
fn cli_bazel_9_0_0_build() {
    run("bazel-9.0.0-build");
}

/// Issue #9's file with deliberately mistyped fields: `proof ingest` and
/// `proof record` succeed, say on stderr which line and field were left
/// out, store every event, and the proof verifies.
#[test]
fn cli_mistyped_fields_warn_and_keep_every_event() {
    let fx = CORPUS
        .iter()
        .find(|f| f.dir == "bazel-8.3.1-remote")
        .unwrap();
    let text = std::fs::read_to_string(fixture(fx)).unwrap();
    let metrics_line = 1 + text
        .lines()
        .position(|l| l.contains("\"buildMetrics\":{\"actionSummary\""))
        .unwrap();
    let bad = text.replacen(
        "\"reason\":\"NOT_CACHED\"",
        "\"reason\":\"NO_SUCH_REASON\"",
        1,
    );
    assert_ne!(bad, text);
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("mistyped.bep.ndjson");
    std::fs::write(&copy, bad).unwrap();
    let (ing, rec, ver, stderr) = ingest_record_verify(&copy, tmp.path());
    let field = "buildMetrics.actionSummary.actionCacheStatistics.missDetails[5].reason";
    let expected = format!("line {metrics_line}: field {field} does not fit the schema");
    assert_eq!(
        stderr.matches(&expected).count(),
        2,
        "one warning from ingest, one from record:\n{stderr}"
    );
    assert!(stderr.contains("NO_SUCH_REASON"), "{stderr}");
    assert_eq!(ing["event_count"], fx.events);
    assert_eq!(ing["complete"], true);
    assert_eq!(ing["warnings"][0]["line"], metrics_line);
    assert_eq!(ing["warnings"][0]["field"], field);
    assert_eq!(rec["warnings"][0]["field"], field);
    assert_eq!(failed_checks(&ver), fx.failed_checks);
    assert_eq!(ver["evidence"]["event_count"], fx.events);
    assert_eq!(ver["evidence"]["remote_executions"], fx.remote_executions);
}
