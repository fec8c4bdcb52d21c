mod common;

use common::*;
use proof_artifact::{verify_path, Policy};

#[test]
fn remote_build_round_trip_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario("remote-build", true, &k, dir.path());
    assert_eq!(
        out.path,
        dir.path().join(format!("{}.proof.tar", out.invocation_id))
    );
    let report = verify_path(&out.path, &[k.verifying_key()], &Policy::default()).unwrap();
    assert!(
        report.ok,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(names(&report), ORDER);
    assert_eq!(report.evidence.as_ref(), Some(&out.evidence));
    assert_eq!(report.artifact_sha256, out.artifact_sha256);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

fn failing_check(
    scenario: &str,
    with_log: bool,
) -> (proof_artifact::Report, proof_artifact::RecordOutcome) {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario(scenario, with_log, &k, dir.path());
    let report = verify_path(&out.path, &[k.verifying_key()], &Policy::default()).unwrap();
    assert_eq!(names(&report), ORDER);
    for integrity in &report.checks[..4] {
        assert!(integrity.ok, "{scenario}: {integrity:?}");
    }
    assert!(!report.ok);
    (report, out)
}

#[test]
fn local_only_fails_executor_forced_and_remote_executions() {
    let (report, _) = failing_check("local-only", true);
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert!(failed.contains(&"executor_forced"), "{failed:?}");
    assert!(failed.contains(&"remote_executions"), "{failed:?}");
    assert!(report.check("build_succeeded").unwrap().ok);
    assert!(report
        .check("executor_forced")
        .unwrap()
        .detail
        .contains("--remote_executor"));
}

#[test]
fn remote_cache_hit_fails_remote_executions_only() {
    let (report, out) = failing_check("remote-cache-hit", true);
    assert_eq!(out.evidence.processes.remote_executions, Some(0));
    let c = report.check("remote_executions").unwrap();
    assert!(!c.ok);
    assert!(
        c.detail.starts_with("0 spawns executed remotely"),
        "{}",
        c.detail
    );
    assert!(report.check("executor_forced").unwrap().ok);
    assert!(report.check("build_succeeded").unwrap().ok);
}

#[test]
fn failing_build_fails_build_succeeded() {
    let (report, out) = failing_check("failing-build", true);
    let c = report.check("build_succeeded").unwrap();
    assert!(!c.ok, "{c:?}");
    let code = out.evidence.exit_code.as_ref().unwrap();
    assert_ne!(code.code, 0);
    assert!(c.detail.contains(&code.code.to_string()), "{}", c.detail);
    assert!(report.check("executor_forced").unwrap().ok);
}

#[test]
fn recording_is_deterministic_and_works_without_exec_log() {
    let k = key(1);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = record_scenario("remote-test", true, &k, a.path());
    let two = record_scenario("remote-test", true, &k, b.path());
    assert_eq!(
        std::fs::read(&one.path).unwrap(),
        std::fs::read(&two.path).unwrap()
    );
    // Only the artifact is left behind: the spool and temp files are gone.
    let entries: Vec<_> = std::fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let c = tempfile::tempdir().unwrap();
    let bare = record_scenario("remote-build", false, &k, c.path());
    let report = verify_path(&bare.path, &[k.verifying_key()], &Policy::default()).unwrap();
    assert!(report.check("rederived").unwrap().ok, "{:?}", report.checks);
    assert!(report.evidence.unwrap().exec_log.is_none());
}

#[test]
fn unusable_input_is_an_error_not_a_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let err = verify_path(dir.path(), &[k.verifying_key()], &Policy::default()).unwrap_err();
    assert!(
        matches!(err, proof_artifact::VerifyError::NotAFile(_)),
        "{err}"
    );
    let err = verify_path(
        &dir.path().join("missing.proof.tar"),
        &[k.verifying_key()],
        &Policy::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, proof_artifact::VerifyError::Open { .. }),
        "{err}"
    );
    // An empty file is readable: it is a failed envelope check.
    let empty = dir.path().join("empty.proof.tar");
    std::fs::write(&empty, b"").unwrap();
    let report = verify_path(&empty, &[k.verifying_key()], &Policy::default()).unwrap();
    assert!(!report.ok);
    assert!(
        report.checks[0].detail.contains("truncated"),
        "{:?}",
        report.checks[0]
    );
    assert_eq!(report.checks[1].detail, "not checked: envelope failed");
    assert_eq!(report.checks[7].detail, "not checked: envelope failed");
}

#[test]
fn report_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario("remote-build", true, &k, dir.path());
    let report = verify_path(&out.path, &[k.verifying_key()], &Policy::default()).unwrap();
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["checks"][0],
        serde_json::json!({"name": "envelope", "ok": true, "detail": report.checks[0].detail})
    );
    assert_eq!(v["evidence"]["invocation_id"], out.invocation_id.as_str());
}

#[test]
fn summary_names_what_was_proved() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let out = record_scenario("remote-cache-hit", true, &k, dir.path());
    let bytes = std::fs::read(&out.path).unwrap();
    let scanned = proof_artifact::tar::scan(&bytes[..]).unwrap();
    let summary = String::from_utf8(scanned.summary).unwrap();
    assert!(summary.contains("NOT proven"), "{summary}");
    assert!(summary.contains(&out.invocation_id), "{summary}");
    assert!(summary.contains("| Remote executions | 0 |"), "{summary}");
    assert!(summary.contains("❌ `remote_executions`"), "{summary}");
    let dir2 = tempfile::tempdir().unwrap();
    let good = record_scenario("remote-build", true, &k, dir2.path());
    let scanned = proof_artifact::tar::scan(&std::fs::read(&good.path).unwrap()[..]).unwrap();
    let summary = String::from_utf8(scanned.summary).unwrap();
    assert!(summary.contains("✅ remote execution proven"), "{summary}");
    for w in &good.evidence.worker_images {
        assert!(summary.contains(&w.image), "{summary}");
    }
}
