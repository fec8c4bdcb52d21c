//! Arbitrary bytes as an `--experimental_remote_grpc_log` (delimited
//! LogEntry records): the posture reader returns a value or an error, and
//! the builder finishes, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::EvidenceBuilder;

fuzz_target!(|data: &[u8]| {
    let mut b = EvidenceBuilder::new();
    if b.push_remote_grpc_log(data).is_ok() {
        let _ = b.corroboration_candidates();
    }
    let _ = b.finish();
});
