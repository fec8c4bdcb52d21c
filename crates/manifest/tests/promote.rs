//! Promotion: accepted, refused for each reason, idempotent, minimal diff,
//! atomic replace with the changed-underneath refusal. All artifacts are
//! real (examples/platform, made on the rig by make-proofs.sh).

mod common;

use common::*;
use proof_manifest::io::{promote_file, promote_file_with_hook};
use proof_manifest::{parse_manifest, promote, GateStatus, Mode, PromoteError, PromoteRequest};

fn req(class: &str, mode: Option<Mode>) -> PromoteRequest {
    PromoteRequest {
        class: class.into(),
        mode,
        location: "proofs/new.proof.tar".into(),
        owners: None,
    }
}

#[test]
fn promotes_a_cache_first_class_and_touches_only_that_class() {
    let old = manifest_text();
    let f = facts(&artifact("acme/checkout-web", "test"));
    let p = promote(&old, &f, &req("checkout-web/e2e", None)).unwrap();
    assert!(p.changed);
    assert_eq!(p.mode, Mode::ExecutorBacked);
    assert!(p.text.ends_with("}\n") && !p.text.ends_with("\n\n"));

    let m = parse_manifest(&p.text).unwrap();
    let c = &m.classes["checkout-web/e2e"];
    assert_eq!(c.mode, Mode::ExecutorBacked);
    assert_eq!(c.proofs.len(), 1);
    let r = &c.proofs[0];
    assert_eq!(r.artifact_sha256, f.artifact_sha256);
    assert_eq!(r.command, "test");
    assert!(r.remote_executions > 0);
    assert_eq!(r.signer_keyid, proof_artifact::keyid(&key()));
    assert!(r.worker_images.iter().all(|i| i.contains("@sha256:")));
    assert!(c
        .gates
        .values()
        .all(|g| g.status == GateStatus::Closed && g.blocker.is_none()));
    assert!(c
        .gates
        .values()
        .all(|g| g.evidence.contains(&"proofs/new.proof.tar".to_string())));

    // Every other class, gate and repo is unchanged.
    let before = parse_manifest(&old).unwrap();
    for (id, c) in &before.classes {
        if id != "checkout-web/e2e" {
            assert_eq!(&m.classes[id], c, "{id} changed");
        }
    }
    assert_eq!(m.gates, before.gates);
    assert_eq!(m.repos, before.repos);

    // The textual diff lies inside the class's block.
    let (first, last) = changed_region(&old, &p.text).unwrap();
    let (start, end) = class_block(&p.text, "checkout-web/e2e");
    assert!(
        start <= first && last <= end,
        "diff lines {first}..{last} outside the class block {start}..{end}"
    );
    assert!(p.commit_message.starts_with(
        "rbe-eligibility: promote checkout-web/e2e (acme/checkout-web) to executor-backed\n"
    ));
    assert!(p.commit_message.contains(&f.artifact_sha256));
}

#[test]
fn re_promoting_with_the_same_artifact_changes_nothing() {
    let old = manifest_text();
    let f = facts(&artifact("acme/checkout-web", "test"));
    let once = promote(&old, &f, &req("checkout-web/e2e", None)).unwrap();
    let twice = promote(&once.text, &f, &req("checkout-web/e2e", None)).unwrap();
    assert!(!twice.changed);
    assert_eq!(twice.text, once.text);
    // An already promoted class of the example, with its own artifact and location.
    let m = parse_manifest(&old).unwrap();
    let rec = m.classes["checkout-web/unit"].proofs[0].clone();
    let again = promote(
        &old,
        &f,
        &PromoteRequest {
            class: "checkout-web/unit".into(),
            mode: None,
            location: rec.location.clone(),
            owners: None,
        },
    )
    .unwrap();
    assert_eq!(rec.artifact_sha256, f.artifact_sha256);
    assert!(!again.changed);
    assert_eq!(again.text, old);
}

#[test]
fn the_example_manifest_is_in_canonical_form() {
    let text = manifest_text();
    assert_eq!(parse_manifest(&text).unwrap().to_canonical(), text);
}

#[test]
fn refuses_an_artifact_with_a_bad_signature() {
    let path = artifact("acme/checkout-web", "test");
    let f = facts_with(&path, &[other_key()]);
    let e = promote(&manifest_text(), &f, &req("checkout-web/e2e", None)).unwrap_err();
    assert!(matches!(e, PromoteError::Rejected { .. }), "{e}");
    assert!(e.to_string().contains("signature:"), "{e}");
}

#[test]
fn refuses_a_tampered_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("x.proof.tar");
    let mut bytes = std::fs::read(artifact("acme/checkout-web", "test")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&copy, bytes).unwrap();
    let e = promote(
        &manifest_text(),
        &facts(&copy),
        &req("checkout-web/e2e", None),
    )
    .unwrap_err();
    assert!(matches!(e, PromoteError::Rejected { .. }), "{e}");
}

#[test]
fn refuses_zero_remote_executions() {
    let f = facts(&rejected("remote_executions"));
    let e = promote(&manifest_text(), &f, &req("checkout-web/build", None)).unwrap_err();
    assert!(matches!(e, PromoteError::Rejected { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("remote_executions: 0 spawns executed remotely"),
        "{e}"
    );
}

#[test]
fn refuses_an_unpinned_worker_image() {
    let f = facts(&rejected("image_pinned"));
    let e = promote(&manifest_text(), &f, &req("checkout-web/build", None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("image_pinned: worker image(s) not pinned"),
        "{e}"
    );
    assert!(e.to_string().contains("worker:latest"), "{e}");
}

#[test]
fn refuses_an_artifact_of_another_repo() {
    let f = facts(&artifact("acme/payments-api", "test"));
    let e = promote(&manifest_text(), &f, &req("checkout-web/e2e", None)).unwrap_err();
    assert!(matches!(e, PromoteError::NotCovered { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "the artifact is from repo acme/payments-api, the class belongs to acme/checkout-web"
        ),
        "{e}"
    );
}

#[test]
fn refuses_a_build_artifact_for_a_test_class() {
    let f = facts(&artifact("acme/checkout-web", "build"));
    let e = promote(&manifest_text(), &f, &req("checkout-web/e2e", None)).unwrap_err();
    assert!(e.to_string().contains("needs a `bazel test` proof"), "{e}");
}

#[test]
fn refuses_a_class_whose_patterns_the_build_did_not_cover() {
    // search-indexer's build ran only //:greeter //:greeting.
    let text = edit(&manifest_text(), |v| {
        v["classes"]["search-indexer/package"]["patterns"] =
            serde_json::json!(["//:greeting", "//:upper"]);
    });
    let f = facts(&artifact("acme/search-indexer", "build"));
    let e = promote(&text, &f, &req("search-indexer/package", None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("class pattern //:upper is not covered by the build's patterns [//:greeter, //:greeting]"),
        "{e}"
    );
    // Without //:upper it is covered.
    let ok = promote(&manifest_text(), &f, &req("search-indexer/package", None)).unwrap();
    assert!(ok.changed);
}

#[test]
fn refuses_an_unknown_class() {
    let f = facts(&artifact("acme/checkout-web", "test"));
    let e = promote(&manifest_text(), &f, &req("checkout-web/nope", None)).unwrap_err();
    assert!(matches!(e, PromoteError::UnknownClass { .. }), "{e}");
    assert!(e.to_string().contains("checkout-web/e2e"), "{e}");
}

#[test]
fn refuses_default_while_gates_are_open_and_names_them() {
    let f = facts(&artifact("acme/checkout-web", "test"));
    let e = promote(
        &manifest_text(),
        &f,
        &req("checkout-web/unit", Some(Mode::Default)),
    )
    .unwrap_err();
    let PromoteError::GatesOpen { gates, .. } = &e else {
        panic!("{e}")
    };
    let ids: Vec<&str> = gates.iter().map(|g| g.split(' ').next().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "durable-cas-ac",
            "external-inputs-authority",
            "tenant-isolation",
            "operator-visibility"
        ]
    );
    assert!(gates[0].contains("owner storage-team"), "{}", gates[0]);
}

#[test]
fn promotes_to_default_once_every_gate_is_closed() {
    let text = edit(&manifest_text(), close_all_gates);
    let f = facts(&artifact("acme/checkout-web", "test"));
    let p = promote(&text, &f, &req("checkout-web/e2e", Some(Mode::Default))).unwrap();
    assert_eq!(
        parse_manifest(&p.text).unwrap().classes["checkout-web/e2e"].mode,
        Mode::Default
    );
    // A later executor-backed promotion does not demote it.
    let again = promote(&p.text, &f, &req("checkout-web/e2e", None)).unwrap();
    assert_eq!(again.mode, Mode::Default);
    assert!(!again.changed);
    let e = promote(
        &p.text,
        &f,
        &req("checkout-web/e2e", Some(Mode::ExecutorBacked)),
    )
    .unwrap_err();
    assert!(matches!(e, PromoteError::Demotion { .. }), "{e}");
}

#[test]
fn refuses_an_invalid_manifest() {
    let text = edit(&manifest_text(), |v| {
        v["classes"]["checkout-web/e2e"]["mode"] = "sometimes".into();
    });
    let f = facts(&artifact("acme/checkout-web", "test"));
    let e = promote(&text, &f, &req("checkout-web/e2e", None)).unwrap_err();
    assert!(matches!(e, PromoteError::Manifest(_)), "{e}");
    assert!(
        e.to_string().contains("/classes/checkout-web~1e2e/mode"),
        "{e}"
    );
}

#[test]
fn replaces_the_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbe-target-eligibility.json");
    std::fs::write(&path, manifest_text()).unwrap();
    let f = facts(&artifact("acme/checkout-web", "test"));
    let p = promote_file(&path, &f, &req("checkout-web/e2e", None)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), p.text);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
}

#[test]
fn refuses_when_the_manifest_changed_underneath() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbe-target-eligibility.json");
    std::fs::write(&path, manifest_text()).unwrap();
    let theirs = edit(&manifest_text(), |v| {
        v["repos"]["acme/checkout-web"]["owner"] = "team-web".into();
    });
    let f = facts(&artifact("acme/checkout-web", "test"));
    let e = promote_file_with_hook(&path, &f, &req("checkout-web/e2e", None), || {
        std::fs::write(&path, &theirs).unwrap();
    })
    .unwrap_err();
    assert!(matches!(e, PromoteError::ChangedUnderneath { .. }), "{e}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        theirs,
        "the other writer's content was lost"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary file left behind"
    );
}

#[test]
fn refuses_facts_that_would_make_the_manifest_invalid() {
    // A stream without times cannot give the record its date.
    let mut f = facts(&artifact("acme/checkout-web", "test"));
    let ev = f.evidence.as_mut().unwrap();
    ev.finished_at = None;
    ev.started_at = None;
    let e = promote(&manifest_text(), &f, &req("checkout-web/e2e", None)).unwrap_err();
    assert!(matches!(e, PromoteError::WouldBeInvalid(_)), "{e}");
    assert!(e.to_string().contains("/proofs/0/date"), "{e}");
}

#[cfg(unix)]
#[test]
fn promoting_through_a_symlinked_manifest_writes_the_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("config");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("rbe-eligibility.json");
    std::fs::write(&real, manifest_text()).unwrap();
    let link = dir.path().join("manifest.json");
    std::os::unix::fs::symlink("config/rbe-eligibility.json", &link).unwrap();
    let f = facts(&artifact("acme/checkout-web", "test"));
    let p = promote_file(&link, &f, &req("checkout-web/e2e", None)).unwrap();
    assert!(p.changed);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced by a regular file"
    );
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        p.text,
        "the target holds the promotion"
    );
    assert_eq!(std::fs::read_to_string(&link).unwrap(), p.text);
}
