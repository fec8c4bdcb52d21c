//! Arbitrary bytes as a --build_event_json_file: events converted to binary
//! or one clear error, never a panic; a converted event decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_stream::bepfile::{BepFileReader, BepFormat};

fuzz_target!(|data: &[u8]| {
    for ev in BepFileReader::with_format(data, BepFormat::Json) {
        match ev {
            Ok(ev) => {
                proof_stream::probe::probe(&ev).expect("a converted JSON event is a valid binary event");
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
});
