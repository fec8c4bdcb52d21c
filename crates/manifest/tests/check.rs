//! The PR check (`proof verify --manifest`) and schema validation.

mod common;

use common::*;
use proof_manifest::schema::schema_violations;
use proof_manifest::{
    check_manifest, parse_manifest, scan_proofs, CheckOptions, ManifestError, SCHEMA,
};
use time::OffsetDateTime;

fn opts(max_age_days: Option<u64>, now: OffsetDateTime) -> CheckOptions {
    CheckOptions {
        max_age_days,
        now,
        owners: None,
        base_allow_unauthenticated: None,
    }
}

fn proofs() -> proof_manifest::ProofDir {
    scan_proofs(&example().join("proofs"), &[key()]).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn the_embedded_schema_is_a_valid_draft_2020_12_schema() {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(jsonschema::meta::is_valid(&schema));
}

#[test]
fn the_example_passes() {
    let r = check_manifest(&manifest_text(), &proofs(), &opts(None, now()));
    let failing: Vec<_> = r.failing().map(|c| (&c.class, &c.reasons)).collect();
    assert!(r.ok, "{failing:?}");
    assert_eq!(r.classes.len(), 34);
    let promoted: Vec<_> = r.classes.iter().filter(|c| c.proofs_verified > 0).collect();
    assert_eq!(promoted.len(), 17);
}

fn failing_with(text: &str) -> Vec<(String, Vec<String>)> {
    let r = check_manifest(text, &proofs(), &opts(None, now()));
    assert!(!r.ok);
    r.failing()
        .map(|c| (c.class.clone(), c.reasons.clone()))
        .collect()
}

#[test]
fn fails_on_a_forged_digest() {
    let forged = "ab".repeat(32);
    let text = edit(&manifest_text(), |v| {
        v["classes"]["payments-api/unit"]["proofs"][0]["artifact_sha256"] = forged.clone().into();
    });
    let f = failing_with(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "payments-api/unit");
    assert!(
        f[0].1[0].contains(&format!(
            "digest mismatch: the manifest records sha256 {forged}"
        )),
        "{f:?}"
    );
}

#[test]
fn fails_on_a_forged_remote_execution_count() {
    let m = parse_manifest(&manifest_text()).unwrap();
    let real = m.classes["infra-tools/build"].proofs[0].remote_executions;
    let text = edit(&manifest_text(), |v| {
        v["classes"]["infra-tools/build"]["proofs"][0]["remote_executions"] = (real * 10).into();
    });
    let f = failing_with(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].1[0].contains(&format!(
            "remote_executions: manifest {}, artifact {real}",
            real * 10
        )),
        "{f:?}"
    );
}

#[test]
fn fails_on_a_forged_worker_image() {
    let other = format!("docker://example.invalid/other@sha256:{}", "0".repeat(64));
    let text = edit(&manifest_text(), |v| {
        v["classes"]["checkout-web/lint"]["proofs"][0]["worker_images"] =
            serde_json::json!([other]);
    });
    let f = failing_with(&text);
    assert_eq!(f.len(), 1);
    assert!(f[0].1[0].contains("worker_images: manifest"), "{f:?}");
}

#[test]
fn fails_when_the_artifact_does_not_cover_the_class() {
    // A record copied from another repo's class: digest and facts match,
    // the repo does not.
    let text = edit(&manifest_text(), |v| {
        let theirs = v["classes"]["payments-api/unit"]["proofs"].clone();
        v["classes"]["checkout-web/unit"]["proofs"] = theirs;
    });
    let f = failing_with(&text);
    assert_eq!(f[0].0, "checkout-web/unit");
    assert!(
        f[0].1[0].contains("the artifact is from repo acme/payments-api"),
        "{f:?}"
    );
}

#[test]
fn fails_when_artifacts_are_missing() {
    let empty = tempfile::tempdir().unwrap();
    let dir = scan_proofs(empty.path(), &[key()]).unwrap();
    let r = check_manifest(&manifest_text(), &dir, &opts(None, now()));
    assert!(!r.ok);
    assert_eq!(r.failing().count(), 17);
    assert!(r
        .failing()
        .all(|c| c.reasons[0].contains("no artifact with sha256")));
}

#[test]
fn fails_when_signed_by_an_untrusted_key() {
    let dir = scan_proofs(&example().join("proofs"), &[other_key()]).unwrap();
    let r = check_manifest(&manifest_text(), &dir, &opts(None, now()));
    assert_eq!(r.failing().count(), 17);
    assert!(
        r.failing()
            .all(|c| c.reasons[0].contains("fails verification: signature")),
        "{:?}",
        r.classes[0]
    );
}

#[test]
fn fails_on_proofs_older_than_max_age() {
    let m = parse_manifest(&manifest_text()).unwrap();
    let date = &m.classes["checkout-web/unit"].proofs[0].date;
    let t = OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).unwrap();
    let later = t + time::Duration::days(40);
    let ok = check_manifest(&manifest_text(), &proofs(), &opts(Some(60), later));
    assert!(ok.ok);
    let old = check_manifest(&manifest_text(), &proofs(), &opts(Some(30), later));
    assert_eq!(old.failing().count(), 17);
    assert!(old.failing().all(|c| c
        .reasons
        .iter()
        .any(|r| r.contains("more than --max-age 30"))));
}

/// Issue 20, finding 7: a proof dated after the check (a client's 2099
/// BuildFinished) never ages, so it fails.
#[test]
fn fails_on_proofs_dated_in_the_future() {
    let m = parse_manifest(&manifest_text()).unwrap();
    let date = &m.classes["checkout-web/unit"].proofs[0].date;
    let t = OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).unwrap();
    let before = t - time::Duration::days(1);
    let r = check_manifest(&manifest_text(), &proofs(), &opts(Some(30), before));
    assert_eq!(r.failing().count(), 17);
    assert!(r.failing().all(|c| c
        .reasons
        .iter()
        .any(|r| r.contains("a proof cannot come from the future"))));
}

#[test]
fn fails_on_default_mode_while_gates_are_open() {
    let text = edit(&manifest_text(), |v| {
        v["classes"]["checkout-web/unit"]["mode"] = "default".into();
    });
    let f = failing_with(&text);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1.len(), 4, "{f:?}");
    assert!(f[0].1[0].contains("platform gate durable-cas-ac is in-progress (owner storage-team)"));
}

#[test]
fn fails_on_schema_violations() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "/classes/checkout-web~1e2e/mode",
            Box::new(|v| v["classes"]["checkout-web/e2e"]["mode"] = "sometimes".into()),
        ),
        (
            "/gates",
            Box::new(|v| {
                v["gates"]
                    .as_object_mut()
                    .unwrap()
                    .remove("tenant-isolation");
            }),
        ),
        (
            "/gates/trusted-ac-writers",
            Box::new(|v| {
                v["gates"]["trusted-ac-writers"]["blocker"] = "closed but blocked?".into()
            }),
        ),
        (
            "/gates/durable-cas-ac/items",
            Box::new(|v| {
                v["gates"]["durable-cas-ac"]["items"]
                    .as_object_mut()
                    .unwrap()
                    .remove("audit");
            }),
        ),
        (
            "/classes/checkout-web~1unit/proofs/0/worker_images/0",
            Box::new(|v| {
                v["classes"]["checkout-web/unit"]["proofs"][0]["worker_images"][0] =
                    "docker://x/y:latest".into()
            }),
        ),
        (
            "/classes/checkout-web~1unit/proofs/0/remote_executions",
            Box::new(|v| {
                v["classes"]["checkout-web/unit"]["proofs"][0]["remote_executions"] = 0.into()
            }),
        ),
        (
            "/classes/checkout-web~1unit/proofs",
            Box::new(|v| v["classes"]["checkout-web/unit"]["proofs"] = serde_json::json!([])),
        ),
        (
            "/schema_version",
            Box::new(|v| v["schema_version"] = 2.into()),
        ),
        (
            "/repos/acme~1mobile-shell/cache_first",
            Box::new(|v| {
                v["repos"]["acme/mobile-shell"]["cache_first"]
                    .as_object_mut()
                    .unwrap()
                    .remove("blocker");
            }),
        ),
        (
            "/classes/x/patterns/0",
            Box::new(|v| {
                let mut c = v["classes"]["checkout-web/e2e"].clone();
                c["patterns"] = serde_json::json!(["hello_test"]);
                v["classes"]["x"] = c;
            }),
        ),
    ];
    for (pointer, f) in cases {
        let text = edit(&manifest_text(), f);
        let r = check_manifest(&text, &proofs(), &opts(None, now()));
        assert!(!r.ok, "{pointer}");
        assert!(
            r.manifest_problems.iter().any(|p| p.starts_with(pointer)),
            "{pointer} not in {:?}",
            r.manifest_problems
        );
    }
}

#[test]
fn reports_references_the_schema_cannot_check() {
    let text = edit(&manifest_text(), |v| {
        v["classes"]["checkout-web/e2e"]["repo"] = "acme/unknown".into();
        v["gates"]["trusted-ac-writers"]["items"]["pr-lanes-read-only"]["status"] = "open".into();
        v["gates"]["trusted-ac-writers"]["items"]["pr-lanes-read-only"]["blocker"] = "x".into();
    });
    let ManifestError::Semantic(p) = parse_manifest(&text).unwrap_err() else {
        panic!("expected semantic problems")
    };
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("\"acme/unknown\" is not in /repos"));
    assert!(p[1].contains(
        "/gates/trusted-ac-writers: closed, but its item \"pr-lanes-read-only\" is open"
    ));
}

#[test]
fn syntax_errors_are_manifest_problems() {
    let r = check_manifest("{\"schema_version\": 1,", &proofs(), &opts(None, now()));
    assert!(!r.ok);
    assert!(r.manifest_problems[0].starts_with("not JSON"));
    assert!(schema_violations(&serde_json::json!({}))
        .iter()
        .any(|v| v.contains("schema_version")));
}

#[test]
fn fails_on_closed_class_gates_without_a_proof() {
    let text = edit(&manifest_text(), |v| {
        let g = &mut v["classes"]["search-indexer/package"]["gates"]["forced-executor"];
        g["status"] = "closed".into();
        g.as_object_mut().unwrap().remove("blocker");
    });
    let f = failing_with(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "search-indexer/package");
    assert_eq!(
        f[0].1,
        ["class gates [forced-executor] are closed but no proof artifact backs them"]
    );
}

#[test]
fn the_markdown_check_renders_hostile_strings_as_text() {
    use proof_manifest::check::{CheckReport, ClassCheck};
    let hostile = "x](https://evil.example) ![i](https://evil.example/p.png) <b>|\n# h";
    let r = CheckReport {
        ok: false,
        manifest_problems: Vec::new(),
        classes: vec![ClassCheck {
            class: format!("c`{hostile}"),
            repo: hostile.into(),
            mode: proof_manifest::model::Mode::ExecutorBacked,
            ok: false,
            reasons: vec![format!("proof claims {hostile}")],
            proofs_verified: 0,
        }],
    };
    let md = proof_manifest::render::check_md(&r, "m.json");
    assert!(md.contains("evil.example"), "{md}");
    for line in md.lines() {
        // Outside code spans, with escapes removed, no syntax is left.
        let mut bare = String::new();
        let (mut in_code, mut esc) = (false, false);
        for c in line.chars() {
            if esc {
                esc = false;
            } else if c == '\\' && !in_code {
                esc = true;
            } else if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                bare.push(c);
            }
        }
        assert!(!in_code, "unbalanced code span: {line}");
        assert!(!bare.contains("]("), "a link: {line}");
        assert!(!bare.contains('<'), "HTML: {line}");
        assert!(!line.starts_with("# h"), "a heading from the input: {md}");
    }
}

/// [trust 4] finding 10: `allow_unauthenticated_proofs` lived in the manifest
/// the PR edits, so a PR could let its own unauthenticated proofs pass. With
/// the base revision's manifest, its value counts and a change fails.
#[test]
fn allow_unauthenticated_proofs_comes_from_the_base_revision() {
    let text = manifest_text();
    assert!(text.contains("\"allow_unauthenticated_proofs\": true"));
    let with_base = |base| CheckOptions {
        base_allow_unauthenticated: Some(base),
        ..opts(None, now())
    };
    // The base allows it too: as before.
    let r = check_manifest(&text, &proofs(), &with_base(true));
    assert!(
        r.ok && r.manifest_problems.is_empty(),
        "{:?}",
        r.manifest_problems
    );
    // The PR turned it on: the change is named, and the base's `false` judges
    // the proofs (the example's are unauthenticated: every promoted class fails).
    let r = check_manifest(&text, &proofs(), &with_base(false));
    assert!(!r.ok);
    assert_eq!(r.manifest_problems.len(), 1, "{:?}", r.manifest_problems);
    assert!(
        r.manifest_problems[0].contains("true here and false at the base revision"),
        "{:?}",
        r.manifest_problems
    );
    let failing: Vec<_> = r.failing().collect();
    assert_eq!(failing.len(), 17);
    assert!(
        failing[0].reasons[0].contains("no authenticated tenant"),
        "{:?}",
        failing[0].reasons
    );
}
