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

/// A compact log of zeros: a few hundred compressed bytes that decompress to
/// millions of empty records. Refused, in bounded work, instead of accepted
/// as millions of empty spawns.
#[test]
fn a_compact_log_decompression_bomb_is_refused() {
    let zeros = vec![0u8; 16 << 20];
    let bomb = zstd::encode_all(zeros.as_slice(), 19).unwrap();
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let mut b = EvidenceBuilder::new();
    let err = b
        .push_exec_log(bomb.as_slice())
        .expect_err("a decompression bomb is not an execution log");
    let msg = err.to_string();
    assert!(msg.contains("compressed"), "{msg}");
    // Every reader of the compact format is bounded the same way.
    let n = compact_reader(bomb.as_slice())
        .unwrap()
        .take_while(|r| r.is_ok())
        .count();
    assert_eq!(n, 0, "empty entries are not spawns");
    let records = proof_evidence::execlog::ExecLogRecords::open(bomb.as_slice()).unwrap();
    let mut ok = 0u64;
    let mut failed = false;
    for r in records {
        match r {
            Ok(_) => ok += 1,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "ExecLogRecords accepted {ok} records from {} bytes",
        bomb.len()
    );
    assert!(ok < 1 << 20, "{ok} records before the refusal");
}

/// The bound is relative to the input: a real compact log passes.
#[test]
fn a_real_sized_compact_log_is_within_the_bounds() {
    // Records with unique content (like real entries: ids, paths, digests).
    let mut raw = Vec::new();
    for i in 0..200_000u32 {
        let body = format!(
            "path/to/output/{i}/file-{:08x}.o",
            i.wrapping_mul(2654435761)
        );
        let entry = proof_proto::execlog::ExecLogEntry {
            id: i + 1,
            r#type: Some(proof_proto::execlog::exec_log_entry::Type::File(
                proof_proto::execlog::exec_log_entry::File {
                    path: body,
                    ..Default::default()
                },
            )),
        };
        prost::Message::encode_length_delimited(&entry, &mut raw).unwrap();
    }
    let log = zstd::encode_all(raw.as_slice(), 19).unwrap();
    let records = proof_evidence::execlog::ExecLogRecords::open(log.as_slice()).unwrap();
    let mut n = 0;
    for r in records {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 200_000, "ratio {}", raw.len() / log.len());
}

/// The same bodies as the `remote_grpc_log` and `corroboration` fuzz targets:
/// damaged remote gRPC logs and corroboration records are read or refused,
/// never a panic.
#[test]
fn damaged_remote_grpc_logs_and_corroboration_records_never_panic() {
    let grpc_body = |data: &[u8]| {
        let mut b = EvidenceBuilder::new();
        let ok = b.push_remote_grpc_log(data).is_ok();
        let _ = b.finish();
        ok
    };
    let corroboration_body = |data: &[u8]| {
        let mut b = EvidenceBuilder::new();
        let _ = b.push_corroboration(data);
        let _ = b.finish();
    };
    let log = fixture("remote_grpc.log");
    assert!(grpc_body(&log), "the intact log reads");
    for cut in (0..log.len()).step_by(11) {
        grpc_body(&log[..cut]);
        corroboration_body(&log[..cut]);
    }
    for (pos, bit) in positions(log.len(), 300) {
        let mut d = log.clone();
        d[pos] ^= bit;
        grpc_body(&d);
        corroboration_body(&d);
    }
}
