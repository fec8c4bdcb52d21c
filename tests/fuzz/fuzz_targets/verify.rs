//! Whole-artifact verification: never panics, always reports every check.
//! Seed the corpus with artifacts signed by `[1; 32]` (the test key) so
//! mutations get past the signature into the digest checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_artifact::{verify, Policy, Report, SigningKey, INTEGRITY_CHECKS};

/// The checks every report must list, in order: the integrity checks, then the
/// policy's checks for the evidence the report re-derived (an executor ledger in
/// the artifact adds `executor_attested`).
fn expected_checks(policy: &Policy, report: &Report) -> Vec<&'static str> {
    let policy_checks = policy.checks_for(report.evidence.as_ref());
    INTEGRITY_CHECKS
        .iter()
        .copied()
        .chain(policy_checks.iter().map(|c| c.name()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[1; 32]);
    let policy = Policy::default();
    let report = verify(std::io::Cursor::new(data), &[key.verifying_key()], &policy)
        .expect("an in-memory artifact is always readable");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, expected_checks(&policy, &report));
    assert_eq!(report.ok, report.checks.iter().all(|c| c.ok));
    let rederived = report.checks.iter().find(|c| c.name == "rederived");
    assert_eq!(report.evidence.is_some(), rederived.is_some_and(|c| c.ok));
});
