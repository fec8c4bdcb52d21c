//! The signed seeds of the `verify` fuzz target (tests/fuzz/seeds/verify/):
//! real fixture artifacts signed by the fuzz target's key `[1; 32]`, so that
//! mutations get past the signature into the digest and re-derivation checks.
//! This test checks that every committed seed passes every check under that
//! key; `PROOF_WRITE_FUZZ_SEEDS=1` first (re)writes them from the fixtures.

mod common;

use std::path::PathBuf;

use common::{key, record_scenario, verify_bytes};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/seeds/verify")
}

const SCENARIOS: [(&str, bool); 2] = [("remote-build", true), ("local-only", false)];

#[test]
fn the_committed_verify_seeds_are_artifacts_signed_by_the_fuzz_key() {
    let dir = seed_dir();
    if std::env::var_os("PROOF_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for (scenario, with_log) in SCENARIOS {
            let out = record_scenario(scenario, with_log, &key(1), tmp.path());
            std::fs::copy(&out.path, dir.join(format!("{scenario}.proof.tar"))).unwrap();
        }
    }
    for (scenario, _) in SCENARIOS {
        let path = dir.join(format!("{scenario}.proof.tar"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with PROOF_WRITE_FUZZ_SEEDS=1 cargo test -p proof-artifact --test fuzz_seeds",
                path.display()
            )
        });
        let report = verify_bytes(&bytes, &key(1));
        // Every check but the policy verdict of a local-only build passes:
        // the signature, digests and re-derived evidence all hold.
        let failed: Vec<_> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        if scenario == "remote-build" {
            assert!(report.ok, "{scenario}: {failed:?}");
        } else {
            assert!(report.evidence.is_some(), "{scenario}: {failed:?}");
            assert!(
                !failed
                    .iter()
                    .any(|n| n.contains("signature") || n.contains("digest")),
                "{scenario}: {failed:?}"
            );
        }
    }
}

/// What the `verify` fuzz target asserts of every input, on the seeds, on
/// truncated seeds and on no bytes at all: every report lists the integrity
/// checks, then the policy's checks for the evidence it re-derived, and passes
/// only when all of them pass.
#[test]
fn every_report_lists_the_integrity_checks_then_the_policy_checks() {
    use proof_artifact::{verify, Policy, INTEGRITY_CHECKS};
    let policy = Policy::default();
    let mut inputs = vec![Vec::new()];
    for (scenario, _) in SCENARIOS {
        let bytes = std::fs::read(seed_dir().join(format!("{scenario}.proof.tar"))).unwrap();
        inputs.push(bytes[..bytes.len() / 2].to_vec());
        inputs.push(bytes);
    }
    for data in &inputs {
        let report = verify(
            std::io::Cursor::new(data),
            &[key(1).verifying_key()],
            &policy,
        )
        .unwrap();
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        let expected: Vec<&str> = INTEGRITY_CHECKS
            .iter()
            .copied()
            .chain(
                policy
                    .checks_for(report.evidence.as_ref())
                    .iter()
                    .map(|c| c.name()),
            )
            .collect();
        assert_eq!(names, expected, "input of {} bytes", data.len());
        assert_eq!(report.ok, report.checks.iter().all(|c| c.ok));
    }
}
