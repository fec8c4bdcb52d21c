//! The strict tar reader: never panics, and whatever it accepts is exactly
//! the canonical archive the writer makes from the same members.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proof_artifact::tar::{scan, TarWriter};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = scan(data) {
        let mut w = TarWriter::new(Vec::new());
        for m in &s.members {
            let body = &data[m.offset as usize..(m.offset + m.size) as usize];
            w.append(m.name, m.size, &mut &body[..]).unwrap();
        }
        assert_eq!(
            w.finish().unwrap(),
            data,
            "accepted a non-canonical archive"
        );
    }
});
