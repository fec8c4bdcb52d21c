mod common;

use common::*;
use proof_artifact::{Policy, PolicyCheck};

fn evidence(scenario: &str) -> proof_evidence::Evidence {
    let dir = tempfile::tempdir().unwrap();
    record_scenario(scenario, true, &key(1), dir.path()).evidence
}

fn result(policy: &Policy, ev: &proof_evidence::Evidence, name: &str) -> (bool, String) {
    let c = policy
        .evaluate(ev)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap();
    (c.ok, c.detail)
}

#[test]
fn default_policy_order_and_builder() {
    let names: Vec<_> = Policy::default()
        .checks()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ORDER[4..]);
    let custom = Policy::none()
        .check(PolicyCheck::BuildSucceeded)
        .check(PolicyCheck::RemoteExecutions)
        .check(PolicyCheck::BuildSucceeded);
    let names: Vec<_> = custom.checks().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["build_succeeded", "remote_executions"]);
    // A custom policy changes what verify reports after the integrity checks.
    let dir = tempfile::tempdir().unwrap();
    let out = record_scenario("local-only", true, &key(1), dir.path());
    let only_exit = Policy::none().check(PolicyCheck::BuildSucceeded);
    let report =
        proof_artifact::verify_path(&out.path, &[key(1).verifying_key()], &only_exit).unwrap();
    assert!(report.ok, "{:?}", report.checks);
    assert_eq!(
        names_of(&report),
        [
            "envelope",
            "signature",
            "digests",
            "rederived",
            "build_succeeded"
        ]
    );
}

fn names_of(r: &proof_artifact::Report) -> Vec<&str> {
    r.checks.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn image_pinned_requires_a_used_image_and_digests() {
    let p = Policy::default();
    let good = evidence("remote-build");
    assert!(result(&p, &good, "image_pinned").0);
    assert!(!good.worker_images.is_empty());

    let mut tag = good.clone();
    tag.worker_images[0].image = "docker://example.invalid/worker:latest".into();
    let (ok, detail) = result(&p, &tag, "image_pinned");
    assert!(!ok);
    assert!(detail.contains("worker:latest"), "{detail}");

    // Upper-case or short digests are not pinned, whatever `pinned` says.
    let mut short = good.clone();
    short.worker_images[0].image = format!("docker://w@sha256:{}", "A".repeat(64));
    short.worker_images[0].pinned = true;
    assert!(!result(&p, &short, "image_pinned").0);

    let mut none = good.clone();
    none.worker_images.clear();
    let (ok, detail) = result(&p, &none, "image_pinned");
    assert!(!ok);
    assert!(detail.contains("no worker image"), "{detail}");

    // An unpinned image that ran no remote spawn does not count.
    let mut unused = good.clone();
    let mut extra = unused.worker_images[0].clone();
    extra.image = "docker://other:1".into();
    extra.pinned = false;
    extra.remote_spawns = Some(0);
    unused.worker_images.push(extra);
    assert!(result(&p, &unused, "image_pinned").0);
}

#[test]
fn executor_and_exit_code_details() {
    let p = Policy::default();
    let good = evidence("remote-build");
    let mut unforced = good.clone();
    unforced.executor.forced = false;
    unforced.executor.not_forced_reasons = vec!["--spawn_strategy=local".into()];
    let (ok, detail) = result(&p, &unforced, "executor_forced");
    assert!(!ok);
    assert!(detail.contains("--spawn_strategy=local"), "{detail}");

    let mut unfinished = good.clone();
    unfinished.exit_code = None;
    let (ok, detail) = result(&p, &unfinished, "build_succeeded");
    assert!(!ok);
    assert!(detail.contains("no BuildFinished"), "{detail}");

    let mut unknown = good.clone();
    unknown.processes.remote_executions = None;
    assert!(!result(&p, &unknown, "remote_executions").0);
}
