//! Arbitrary bytes as a --build_event_binary_file: the reader yields events
//! or one clear error, never a panic, and every event it yields is a whole
//! record of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_stream::bepfile::{BepFileReader, BepFormat};

fuzz_target!(|data: &[u8]| {
    let mut total = 0usize;
    for ev in BepFileReader::with_format(data, BepFormat::Binary) {
        match ev {
            Ok(ev) => {
                total += ev.len();
                assert!(total <= data.len());
                let _ = proof_stream::probe::probe(&ev);
                let mut s = proof_stream::summary::SummaryBuilder::new();
                s.push(&ev);
                let _ = s.finish();
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
});
