//! Arbitrary bytes as an artifact's `corroboration.bin` (a header, then one
//! raw ActionCache answer per sampled digest): read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::EvidenceBuilder;

fuzz_target!(|data: &[u8]| {
    let mut b = EvidenceBuilder::new();
    let _ = b.push_corroboration(data);
    let _ = b.finish();
});
