//! Arbitrary bytes as a compact execution log: both as the decompressed
//! ExecLogEntry stream and as the zstd file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::execlog::{compact_reader, EntrySpawnReader};

fuzz_target!(|data: &[u8]| {
    let mut entries = EntrySpawnReader::new(data);
    for spawn in entries.by_ref() {
        if spawn.is_err() {
            break;
        }
    }
    let _ = entries.invocation();
    if let Ok(reader) = compact_reader(data) {
        for spawn in reader {
            if spawn.is_err() {
                break;
            }
        }
    }
});
