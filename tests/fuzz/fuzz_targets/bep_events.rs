//! Arbitrary bytes as a delimited BEP stream fed event by event to the
//! builder; whatever evidence results must serialize.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::EvidenceBuilder;
use proof_stream::delimited::DelimitedReader;

fuzz_target!(|data: &[u8]| {
    let mut builder = EvidenceBuilder::new();
    for record in DelimitedReader::with_limit(data, 1 << 20) {
        let Ok(record) = record else { break };
        let _ = builder.push_event(&record);
    }
    // Also one undelimited event: the raw bytes.
    let _ = builder.push_event(data);
    if let Ok(evidence) = builder.finish() {
        let _ = serde_json::to_vec(&evidence).unwrap();
    }
});
