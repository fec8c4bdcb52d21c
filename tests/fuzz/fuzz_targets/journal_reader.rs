//! Arbitrary bytes as a journal file: the scan (used by recovery) and the streaming
//! reader (used by `Store::read`) must never panic and must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_store::journal::{scan, JournalReader};

fuzz_target!(|data: &[u8]| {
    let res = scan(data);
    assert!(res.good_len <= data.len() as u64);
    if res.error.is_none() {
        assert_eq!(res.good_len, data.len() as u64);
    }
    // The streaming reader must stop at the same place with the same records.
    if let Ok((mut rd, _meta)) = JournalReader::open(data) {
        let mut records = 0u64;
        while let Ok(Some((_, recs))) = rd.next_frame() {
            records += recs.len() as u64;
        }
        assert_eq!(rd.offset(), res.good_len);
        assert_eq!(records, res.state.record_count);
    }
});
