//! `proof report` on the example manifest: every question answered from
//! the file (and the artifacts), and a snapshot of the Markdown's shape.

mod common;

use common::*;
use proof_manifest::report::QUESTIONS;
use proof_manifest::{build_report, parse_manifest, render, scan_proofs};

fn report(with_proofs: bool) -> proof_manifest::PlatformReport {
    let m = parse_manifest(&manifest_text()).unwrap();
    let dir = with_proofs.then(|| scan_proofs(&example().join("proofs"), &[key()]).unwrap());
    build_report(&m, dir.as_ref())
}

#[test]
fn q1_what_is_proved_with_verified_remote_artifacts() {
    let r = report(true);
    assert_eq!(r.q1_proved.classes.len(), 17);
    assert!(r.q1_proved.classes.iter().all(|c| c.verified == Some(true)));
    // 7 distinct artifacts (4 repos x build/test, search-indexer build only).
    assert_eq!(r.q1_proved.remote_artifacts.len(), 7);
    assert!(r
        .q1_proved
        .remote_artifacts
        .iter()
        .all(|a| a.remote_executions > 0 && a.verified == Some(true)));
    let checkout_build = r
        .q1_proved
        .remote_artifacts
        .iter()
        .find(|a| a.classes.contains(&"checkout-web/build".to_string()))
        .unwrap();
    assert_eq!(
        checkout_build.classes,
        [
            "checkout-web/build",
            "checkout-web/bundle",
            "checkout-web/codegen",
            "checkout-web/lint"
        ]
    );
    assert_eq!(checkout_build.instance_name.as_deref(), Some("main"));
}

#[test]
fn q1_marks_an_artifact_that_does_not_verify() {
    let m = parse_manifest(&manifest_text()).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let dir = scan_proofs(empty.path(), &[key()]).unwrap();
    let r = build_report(&m, Some(&dir));
    assert!(r
        .q1_proved
        .classes
        .iter()
        .all(|c| c.verified == Some(false) && !c.problems.is_empty()));
    // Unverified classes are not offered for executor-backed use.
    assert!(r.q5_executor_backed.is_empty());
}

#[test]
fn q2_and_q3_name_the_open_gates_and_the_next_owner() {
    let r = report(false);
    let open: Vec<(&str, &str)> = r
        .q2_default_blocked
        .open_gates
        .iter()
        .map(|g| (g.gate.as_str(), g.owner.as_str()))
        .collect();
    assert_eq!(
        open,
        [
            ("durable-cas-ac", "storage-team"),
            ("external-inputs-authority", "build-infra"),
            ("tenant-isolation", "rbe-platform"),
            ("operator-visibility", "sre-observability"),
        ]
    );
    assert_eq!(
        r.q2_default_blocked.closed_gates,
        ["no-hosted-runner-fallback", "trusted-ac-writers"]
    );
    let cas = &r.q2_default_blocked.open_gates[0];
    assert_eq!(cas.open_items.len(), 3, "{:?}", cas.open_items);
    let next = r.q3_next_blocker.as_ref().unwrap();
    assert_eq!(next.gate.gate, "operator-visibility");
    assert_eq!(next.gate.owner, "sre-observability");
    assert!(next.why.contains("2026-12-10"));
}

#[test]
fn q3_without_due_dates_takes_the_gate_order() {
    let text = edit(&manifest_text(), |v| {
        for (_, g) in v["gates"].as_object_mut().unwrap() {
            g.as_object_mut().unwrap().remove("due");
        }
    });
    let r = build_report(&parse_manifest(&text).unwrap(), None);
    assert_eq!(r.q3_next_blocker.unwrap().gate.gate, "durable-cas-ac");
    let closed = edit(&manifest_text(), close_all_gates);
    let r = build_report(&parse_manifest(&closed).unwrap(), None);
    assert!(r.q3_next_blocker.is_none());
    assert!(!r.q2_default_blocked.blocked);
}

#[test]
fn q4_cache_first_pilots_with_blocking_gate_and_owner() {
    let r = report(false);
    let can: Vec<&str> = r
        .q4_cache_first_pilots
        .iter()
        .filter(|p| p.can_pilot_now)
        .map(|p| p.repo.as_str())
        .collect();
    assert_eq!(
        can,
        ["acme/checkout-web", "acme/infra-tools", "acme/payments-api"]
    );
    let blocked = |repo: &str| {
        r.q4_cache_first_pilots
            .iter()
            .find(|p| p.repo == repo)
            .unwrap()
            .blockers
            .clone()
    };
    assert!(blocked("acme/search-indexer")[0].starts_with("durable-cas-ac (owner storage-team)"));
    assert!(blocked("acme/data-pipelines")[0].starts_with("tenant-isolation (owner rbe-platform)"));
    let mobile = blocked("acme/mobile-shell");
    assert_eq!(mobile.len(), 2, "{mobile:?}");
    assert!(mobile[1].contains("Xcode toolchain is not hermetic"));
}

#[test]
fn q5_and_q6_classes_and_missing_evidence() {
    let r = report(true);
    assert_eq!(r.q5_executor_backed.len(), 17);
    assert!(r
        .q5_executor_backed
        .iter()
        .all(|c| c.repo != "acme/mobile-shell"));
    let e = &r.q6_default_evidence;
    assert_eq!(e.platform_gates.len(), 4);
    assert_eq!(e.classes.len(), 34);
    let e2e = e
        .classes
        .iter()
        .find(|c| c.class == "checkout-web/e2e")
        .unwrap();
    assert_eq!(e2e.missing.len(), 3, "{:?}", e2e.missing);
    assert!(e2e.missing[0]
        .starts_with("forced-executor (owner team-checkout): the e2e suite needs a browser"));
    assert_eq!(
        e2e.missing[1],
        "remote-processes, proof-artifacts (owner team-checkout): no verified proof artifact recorded for this class yet"
    );
    assert!(e2e.missing[2]
        .starts_with("worker-image-digest (owner team-checkout): no worker image with a browser"));
    let unit = e
        .classes
        .iter()
        .find(|c| c.class == "checkout-web/unit")
        .unwrap();
    assert!(unit.missing.is_empty());
}

#[test]
fn markdown_answers_all_six_questions() {
    let md = render::report_md(&report(true));
    let mut at = 0;
    for (i, q) in QUESTIONS.iter().enumerate() {
        let heading = format!("## {}. {q}", i + 1);
        let pos = md[at..]
            .find(&heading)
            .unwrap_or_else(|| panic!("missing or out of order: {heading}"));
        at += pos + heading.len();
    }
    assert!(md
        .contains("**operator-visibility** (Operator visibility), owned by **sre-observability**"));
}

/// The shape of the Markdown report: headings, table headers and the
/// first cell of each row (digests and dates, which change when the
/// artifacts are regenerated, are left out).
#[test]
fn markdown_report_shape_snapshot() {
    let md = render::report_md(&report(true));
    let shape: Vec<String> = md
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.starts_with('|') {
                let cells: Vec<&str> = l.split(" | ").collect();
                let first = if cells[0].ends_with(".proof.tar") {
                    "| <artifact>"
                } else {
                    cells[0]
                };
                format!("{first} | ({} columns)", cells.len())
            } else {
                l.chars().take(110).collect()
            }
        })
        .collect();
    insta::assert_snapshot!(shape.join("\n"));
}

#[test]
fn json_report_has_one_key_per_question() {
    let v = serde_json::to_value(report(false)).unwrap();
    for k in [
        "q1_proved",
        "q2_default_blocked",
        "q3_next_blocker",
        "q4_cache_first_pilots",
        "q5_executor_backed",
        "q6_default_evidence",
    ] {
        assert!(!v[k].is_null(), "{k}");
    }
}
