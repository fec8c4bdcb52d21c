//! Coverage rules of facts::coverage_problems on a real artifact's evidence,
//! with single fields changed to reach each rule.

mod common;

use common::*;
use proof_manifest::{parse_manifest, repo_of, Class};

fn class(id: &str) -> Class {
    parse_manifest(&manifest_text()).unwrap().classes[id].clone()
}

#[test]
fn the_real_artifact_covers_its_classes() {
    let f = facts(&artifact("acme/checkout-web", "build"));
    for id in [
        "checkout-web/build",
        "checkout-web/bundle",
        "checkout-web/codegen",
        "checkout-web/lint",
    ] {
        assert_eq!(
            f.coverage_problems(&class(id)),
            Vec::<String>::new(),
            "{id}"
        );
    }
}

#[test]
fn a_negative_pattern_of_the_build_refuses_an_overlapping_class_pattern() {
    let mut f = facts(&artifact("acme/checkout-web", "build"));
    f.evidence.as_mut().unwrap().patterns = vec!["//...".into(), "-//:upper".into()];
    let p = f.coverage_problems(&class("checkout-web/bundle"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("class pattern //:upper is partly excluded"),
        "{p:?}"
    );
    assert!(f.coverage_problems(&class("checkout-web/lint")).is_empty());
}

#[test]
fn a_failed_target_or_test_refuses() {
    let mut f = facts(&artifact("acme/checkout-web", "test"));
    let ev = f.evidence.as_mut().unwrap();
    ev.tests.get_mut("//:hello_test").unwrap().status = "FLAKY".into();
    let p = f.coverage_problems(&class("checkout-web/unit"));
    assert_eq!(
        p,
        ["tests matching //:hello_test did not pass: //:hello_test (FLAKY)"]
    );
    let ev = f.evidence.as_mut().unwrap();
    ev.targets.get_mut("//:hello_test").unwrap().success = Some(false);
    let p = f.coverage_problems(&class("checkout-web/unit"));
    assert!(
        p[0].contains("targets matching //:hello_test did not build: //:hello_test"),
        "{p:?}"
    );
}

#[test]
fn a_pattern_without_targets_refuses() {
    let f = facts(&artifact("acme/checkout-web", "build"));
    let mut c = class("checkout-web/build");
    c.patterns = vec!["//web/...".into()];
    assert_eq!(
        f.coverage_problems(&c),
        ["no target of the build matches class pattern //web/..."]
    );
}

#[test]
fn the_repo_comes_from_build_metadata_or_workspace_status() {
    let f = facts(&artifact("acme/checkout-web", "build"));
    let mut ev = f.evidence.clone().unwrap();
    assert_eq!(repo_of(&ev).unwrap(), "acme/checkout-web");
    ev.workspace_status
        .insert("STABLE_REPO".into(), "acme/other".into());
    assert!(repo_of(&ev).unwrap_err().contains("names two repos"));
    ev.build_metadata.clear();
    assert_eq!(repo_of(&ev).unwrap(), "acme/other");
    ev.workspace_status.clear();
    assert!(repo_of(&ev)
        .unwrap_err()
        .contains("--build_metadata=REPO=owner/name"));
}
