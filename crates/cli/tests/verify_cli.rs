//! `proof keygen`, `proof record` and `proof verify` as a CI job runs them:
//! exit codes 0 / 1 / 2 and the JSON shape.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn fixture(scenario: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file)
}

fn proof() -> Command {
    Command::cargo_bin("proof").unwrap()
}

fn record(dir: &Path, scenario: &str) -> PathBuf {
    let out = proof()
        .args(["record", "--json", "--key"])
        .arg(dir.join("k.key"))
        .arg("--out")
        .arg(dir.join("proofs"))
        .arg(fixture(scenario, "bep.bin"))
        .arg("--execlog")
        .arg(fixture(scenario, "execution_log.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

#[test]
fn verify_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    proof()
        .arg("keygen")
        .arg("--out")
        .arg(dir.path().join("k"))
        .assert()
        .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );
    }
    // A key is never overwritten.
    proof()
        .arg("keygen")
        .arg("--out")
        .arg(dir.path().join("k"))
        .assert()
        .code(2);

    let good = record(dir.path(), "remote-build");
    let out = proof()
        .arg("verify")
        .arg(&good)
        .arg("--key")
        .arg(dir.path().join("k.pub"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "envelope",
            "signature",
            "digests",
            "rederived",
            "executor_forced",
            "remote_executions",
            "image_pinned",
            "build_succeeded",
            "sources_agree"
        ]
    );
    let e = &v["evidence"];
    assert_eq!(e["invocation_id"], "0816e8e2-00a1-4628-8d9a-2d2de819df6b");
    assert_eq!(e["remote_executor"], "grpc://127.0.0.1:50051");
    assert_eq!(e["executor_forced"], true);
    assert_eq!(e["remote_executions"], 8);
    assert_eq!(e["exit_code"]["code"], 0);
    assert_eq!(e["worker_images"].as_array().unwrap().len(), 1);

    // A check failed: exit 1, and the text names the check and why.
    let local = record(dir.path(), "local-only");
    let out = proof()
        .arg("verify")
        .arg(&local)
        .arg("--key")
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL executor_forced"), "{text}");

    // Several artifacts: each reported, the worst exit code wins.
    let out = proof()
        .arg("verify")
        .arg(&good)
        .arg(&local)
        .arg("--key")
        .arg(dir.path().join("k.pub"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    // Unusable input: exit 2.
    std::fs::write(dir.path().join("junk.tar"), b"not a tar").unwrap();
    let out = proof()
        .arg("verify")
        .arg(dir.path().join("missing.tar"))
        .arg("--key")
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A file that is not an artifact fails the envelope check (exit 1), never panics.
    let out = proof()
        .arg("verify")
        .arg(dir.path().join("junk.tar"))
        .arg("--key")
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL envelope"));
}
