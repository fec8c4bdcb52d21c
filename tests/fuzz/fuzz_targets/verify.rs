//! Whole-artifact verification: never panics, always reports every check.
//! Seed the corpus with artifacts signed by `[1; 32]` (the test key) so
//! mutations get past the signature into the digest checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_artifact::{verify, Policy, SigningKey};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[1; 32]);
    let report = verify(
        std::io::Cursor::new(data),
        &[key.verifying_key()],
        &Policy::default(),
    )
    .expect("an in-memory artifact is always readable");
    assert_eq!(report.checks.len(), 8);
    assert_eq!(report.ok, report.checks.iter().all(|c| c.ok));
    assert_eq!(report.evidence.is_some(), report.checks[3].ok);
});
