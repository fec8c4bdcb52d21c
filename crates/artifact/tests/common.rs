#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use proof_artifact::{record_delimited, Policy, RecordOutcome, Report, SigningKey};

pub fn fixture(scenario: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file)
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Records `scenario` (bep.bin + execution_log.bin unless `with_log` is false).
pub fn record_scenario(
    scenario: &str,
    with_log: bool,
    key: &SigningKey,
    dir: &Path,
) -> RecordOutcome {
    let bep = File::open(fixture(scenario, "bep.bin")).unwrap();
    let log = fixture(scenario, "execution_log.bin");
    record_delimited(bep, with_log.then_some(log.as_path()), key, dir).unwrap()
}

pub fn verify_bytes(bytes: &[u8], key: &SigningKey) -> Report {
    proof_artifact::verify(
        std::io::Cursor::new(bytes),
        &[key.verifying_key()],
        &Policy::default(),
    )
    .unwrap()
}

pub fn names(report: &Report) -> Vec<&str> {
    report.checks.iter().map(|c| c.name.as_str()).collect()
}

pub const ORDER: [&str; 9] = [
    "envelope",
    "signature",
    "digests",
    "rederived",
    "executor_forced",
    "remote_executions",
    "image_pinned",
    "build_succeeded",
    "sources_agree",
];
