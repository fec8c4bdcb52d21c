//! Arbitrary bytes as a binary (SpawnExec) execution log: the reader must
//! return spawns or an error, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_evidence::execlog::BinarySpawnReader;

fuzz_target!(|data: &[u8]| {
    for spawn in BinarySpawnReader::new(data) {
        if spawn.is_err() {
            break;
        }
    }
    let _ = proof_evidence::EvidenceBuilder::new().push_exec_log(data);
});
