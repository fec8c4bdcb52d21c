//! Damaged inputs (every truncation, bit flips) derived from the real
//! fixtures and from a compact log: readers and builder must return a value
//! or an error, never panic. The same bodies run under cargo-fuzz in
//! `fuzz/`.

use proof_evidence::execlog::{compact_reader, BinarySpawnReader, EntrySpawnReader};
use proof_evidence::EvidenceBuilder;
use proof_stream::delimited::DelimitedReader;

fn fixture(file: &str) -> Vec<u8> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/bazel-4.2.3/remote-test/"
    );
    std::fs::read(format!("{p}{file}")).unwrap()
}

fn bep_body(data: &[u8]) -> Option<usize> {
    let mut builder = EvidenceBuilder::new();
    let mut ok = 0;
    for record in DelimitedReader::with_limit(data, 1 << 20) {
        let Ok(record) = record else { break };
        if builder.push_event(&record).is_ok() {
            ok += 1;
        }
    }
    let ev = builder.finish().ok()?;
    serde_json::to_vec(&ev).unwrap();
    Some(ok)
}

fn log_body(data: &[u8]) -> usize {
    let binary = BinarySpawnReader::new(data)
        .take_while(Result::is_ok)
        .count();
    let entries = EntrySpawnReader::new(data)
        .take_while(Result::is_ok)
        .count();
    let compact = compact_reader(data).map_or(0, |r| r.take_while(Result::is_ok).count());
    let _ = EvidenceBuilder::new().push_exec_log(data);
    binary + entries + compact
}

/// Deterministic xorshift so the flipped positions are reproducible.
fn positions(len: usize, n: usize) -> impl Iterator<Item = (usize, u8)> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s % len as u64) as usize, 1u8 << (s >> 60 & 7))
    })
}

#[test]
fn damaged_bep_never_panics() {
    let bep = fixture("bep.bin");
    assert_eq!(bep_body(&bep), Some(50), "the intact stream derives");
    for cut in (0..bep.len()).step_by(7) {
        bep_body(&bep[..cut]);
    }
    for (pos, bit) in positions(bep.len(), 400) {
        let mut d = bep.clone();
        d[pos] ^= bit;
        bep_body(&d);
    }
}

#[test]
fn damaged_exec_logs_never_panic() {
    let log = fixture("execution_log.bin");
    assert!(log_body(&log) >= 2, "the intact log reads");
    let compressed = zstd::encode_all(&log[..], 1).unwrap();
    for data in [log, compressed] {
        for cut in (0..data.len()).step_by(5) {
            log_body(&data[..cut]);
        }
        for (pos, bit) in positions(data.len(), 300) {
            let mut d = data.clone();
            d[pos] ^= bit;
            log_body(&d);
        }
    }
}
