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
