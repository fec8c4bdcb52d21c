//! `proof promote`, `proof verify --manifest` and `proof report` on the
//! example platform (examples/platform, artifacts from real rig runs).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/platform")
}

fn manifest() -> PathBuf {
    example().join("config/rbe-target-eligibility.json")
}

fn key() -> PathBuf {
    example().join("keys/proof.pub")
}

fn proof() -> Command {
    let mut c = Command::cargo_bin("proof").unwrap();
    c.env("PROOF_LOG", "error");
    c
}

/// The example artifact of `repo` made by `bazel COMMAND`, found through
/// `proof verify --json` (so regenerating the artifacts needs no edit here).
fn artifact(dir: &str, repo: &str, command: &str) -> PathBuf {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(example().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".proof.tar"))
        .collect();
    paths.sort();
    for p in paths {
        let out = proof()
            .arg("verify")
            .arg(&p)
            .arg("--key")
            .arg(key())
            .arg("--json")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ev = &v["evidence"];
        if ev["build_metadata"]["REPO"] == repo && ev["command"] == command {
            return p;
        }
    }
    panic!("no {command} artifact of {repo} in {dir}")
}

fn copy_manifest(dir: &Path) -> PathBuf {
    let p = dir.join("rbe-target-eligibility.json");
    std::fs::copy(manifest(), &p).unwrap();
    p
}

fn promote(m: &Path, artifact: &Path, class: &str) -> Command {
    let mut c = proof();
    c.arg("promote")
        .arg(artifact)
        .arg("--manifest")
        .arg(m)
        .arg("--class")
        .arg(class)
        .arg("--key")
        .arg(key());
    c
}

#[test]
fn promote_accepts_prints_a_commit_message_and_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let m = copy_manifest(t.path());
    let a = artifact("proofs", "acme/checkout-web", "test");
    promote(&m, &a, "checkout-web/e2e")
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with(
            "rbe-eligibility: promote checkout-web/e2e (acme/checkout-web) to executor-backed\n",
        ))
        .stderr(predicate::str::contains(
            "promoted checkout-web/e2e to executor-backed",
        ));
    let after = std::fs::read_to_string(&m).unwrap();
    let original = std::fs::read_to_string(manifest()).unwrap();
    assert_ne!(after, original);
    let v: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(v["classes"]["checkout-web/e2e"]["mode"], "executor-backed");
    let name = a.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(
        v["classes"]["checkout-web/e2e"]["proofs"][0]["location"],
        name.as_str()
    );

    // Only lines of that class changed.
    let a_lines: Vec<&str> = original.lines().collect();
    let b_lines: Vec<&str> = after.lines().collect();
    let prefix = a_lines
        .iter()
        .zip(&b_lines)
        .take_while(|(x, y)| x == y)
        .count();
    let suffix = a_lines
        .iter()
        .rev()
        .zip(b_lines.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let start = b_lines
        .iter()
        .position(|l| *l == "    \"checkout-web/e2e\": {")
        .unwrap();
    let end = start
        + b_lines[start..]
            .iter()
            .position(|l| l.starts_with("    }"))
            .unwrap();
    assert!(
        prefix >= start && b_lines.len() - suffix <= end + 1,
        "diff outside the class"
    );

    // Again: nothing changes.
    promote(&m, &a, "checkout-web/e2e")
        .assert()
        .code(0)
        .stderr(predicate::str::contains("the manifest is unchanged"));
    assert_eq!(std::fs::read_to_string(&m).unwrap(), after);

    // The promoted manifest still passes the PR check (artifact in the proofs dir).
    proof()
        .args(["verify", "--manifest"])
        .arg(&m)
        .arg("--proofs")
        .arg(example().join("proofs"))
        .arg("--key")
        .arg(key())
        .assert()
        .code(0);
}

fn refused(artifact: &Path, class: &str, extra: &[&str], key_file: Option<&Path>, expect: &str) {
    let t = tempfile::tempdir().unwrap();
    let m = copy_manifest(t.path());
    let before = std::fs::read(&m).unwrap();
    let mut c = proof();
    c.arg("promote")
        .arg(artifact)
        .arg("--manifest")
        .arg(&m)
        .arg("--class")
        .arg(class)
        .arg("--key")
        .arg(key_file.map_or_else(key, Path::to_path_buf))
        .args(extra);
    c.assert().code(1).stdout("").stderr(
        predicate::str::contains("promotion refused").and(predicate::str::contains(expect)),
    );
    assert_eq!(
        std::fs::read(&m).unwrap(),
        before,
        "a refused promotion changed the manifest"
    );
}

#[test]
fn promote_refuses_a_bad_signature() {
    let t = tempfile::tempdir().unwrap();
    proof()
        .arg("keygen")
        .arg("--out")
        .arg(t.path().join("other"))
        .assert()
        .code(0);
    let a = artifact("proofs", "acme/checkout-web", "test");
    refused(
        &a,
        "checkout-web/e2e",
        &[],
        Some(&t.path().join("other.pub")),
        "signature:",
    );
}

#[test]
fn promote_refuses_the_wrong_repo_or_class() {
    let a = artifact("proofs", "acme/payments-api", "test");
    refused(
        &a,
        "checkout-web/e2e",
        &[],
        None,
        "the artifact is from repo acme/payments-api",
    );
    let b = artifact("proofs", "acme/checkout-web", "build");
    refused(
        &b,
        "checkout-web/e2e",
        &[],
        None,
        "a test class needs a `bazel test` proof",
    );
    refused(&b, "no-such/class", &[], None, "no class \"no-such/class\"");
}

#[test]
fn promote_refuses_zero_remote_executions_and_unpinned_images() {
    // Two rejected build artifacts of checkout-web: pick each by its failure.
    let mut rejected: Vec<PathBuf> = std::fs::read_dir(example().join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    rejected.sort();
    let mut seen_zero = false;
    let mut seen_unpinned = false;
    for p in rejected {
        let out = proof()
            .arg("verify")
            .arg(&p)
            .arg("--key")
            .arg(key())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("FAIL remote_executions") {
            refused(
                &p,
                "checkout-web/build",
                &[],
                None,
                "remote_executions: 0 spawns executed remotely",
            );
            seen_zero = true;
        } else if text.contains("FAIL image_pinned") {
            refused(
                &p,
                "checkout-web/build",
                &[],
                None,
                "worker image(s) not pinned by @sha256: digest",
            );
            seen_unpinned = true;
        }
    }
    assert!(
        seen_zero && seen_unpinned,
        "examples/platform/rejected lacks a case"
    );
}

#[test]
fn promote_refuses_default_while_gates_are_open() {
    let a = artifact("proofs", "acme/checkout-web", "test");
    refused(
        &a,
        "checkout-web/unit",
        &["--mode", "default"],
        None,
        "default-RBE gates are still open:\n  - durable-cas-ac (in-progress, owner storage-team)",
    );
}

#[test]
fn verify_manifest_passes_on_the_example_in_every_format() {
    let base = || {
        let mut c = proof();
        c.args(["verify", "--manifest"])
            .arg(manifest())
            .arg("--proofs")
            .arg(example().join("proofs"))
            .arg("--key")
            .arg(key());
        c
    };
    base()
        .assert()
        .code(0)
        .stdout(predicate::str::contains("PASS (34 classes, 0 failing)"));
    base()
        .args(["--format", "md"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with(
            "### RBE target eligibility: ✅ pass",
        ));
    let out = base()
        .args(["--format", "json", "--max-age", "3650"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["classes"].as_array().unwrap().len(), 34);
}

fn verify_edited(edit: impl FnOnce(&mut serde_json::Value)) -> assert_cmd::assert::Assert {
    let t = tempfile::tempdir().unwrap();
    let m = copy_manifest(t.path());
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&m, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    proof()
        .args(["verify", "--manifest"])
        .arg(&m)
        .arg("--proofs")
        .arg(example().join("proofs"))
        .arg("--key")
        .arg(key())
        .args(["--format", "md"])
        .assert()
}

#[test]
fn verify_manifest_fails_on_a_forged_digest_or_count() {
    verify_edited(|v| {
        v["classes"]["payments-api/build"]["proofs"][0]["artifact_sha256"] = "cd".repeat(32).into()
    })
    .code(1)
    .stdout(
        predicate::str::contains("❌ fail")
            .and(predicate::str::contains(
                "| `payments-api/build` | acme/payments-api | executor-backed |",
            ))
            .and(predicate::str::contains("digest mismatch")),
    );
    verify_edited(|v| {
        v["classes"]["payments-api/build"]["proofs"][0]["remote_executions"] = 999.into()
    })
    .code(1)
    .stdout(predicate::str::contains(
        // Markdown: the underscore is escaped (the reason quotes the manifest).
        "remote\\_executions: manifest 999, artifact",
    ));
}

#[test]
fn verify_manifest_fails_on_a_schema_violation() {
    verify_edited(|v| v["classes"]["payments-api/build"]["work_kind"] = "deploy".into())
        .code(1)
        .stdout(
            predicate::str::contains("is not a valid manifest")
                .and(predicate::str::contains("/work\\_kind")),
        );
}

#[test]
fn verify_manifest_usage_errors_exit_2() {
    proof()
        .args(["verify", "--manifest"])
        .arg(manifest())
        .arg("--proofs")
        .arg(example().join("no-such-dir"))
        .arg("--key")
        .arg(key())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a directory"));
    // --manifest without --proofs is a usage error.
    proof()
        .args(["verify", "--manifest"])
        .arg(manifest())
        .arg("--key")
        .arg(key())
        .assert()
        .code(2);
}

#[test]
fn report_answers_the_six_questions() {
    let out = proof()
        .args(["report", "--manifest"])
        .arg(manifest())
        .arg("--proofs")
        .arg(example().join("proofs"))
        .arg("--key")
        .arg(key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let md = String::from_utf8(out.stdout).unwrap();
    for n in 1..=6 {
        assert!(md.contains(&format!("\n## {n}. ")), "question {n} missing");
    }
    assert!(md.contains("owned by **sre-observability**"));
    let out = proof()
        .args(["report", "--format", "json", "--manifest"])
        .arg(manifest())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["q3_next_blocker"]["gate"]["gate"], "operator-visibility");
    assert_eq!(v["proofs_checked"], false);
}
