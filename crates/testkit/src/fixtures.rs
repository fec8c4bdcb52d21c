//! Test data: the repository's Bazel 4.2.3 fixtures, journal records whose contents
//! follow from their sequence number, and checks over what a store holds.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proof_store::{InvocationMeta, InvocationSource, JournalRecord, RecordKind, Store};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// A Bazel 4.2.3 fixture file: `fixture("remote-build", "bep.bin")`.
pub fn fixture(scenario: &str, file: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file)
}

/// The records of a length-delimited file (a `--build_event_binary_file`).
pub fn delimited_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    proof_stream::delimited::split_delimited(&bytes, usize::MAX)
        .expect("delimited file")
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// The BEP events of a fixture scenario (its `bep.bin`), in stream order.
pub fn fixture_events(scenario: &str) -> Vec<Vec<u8>> {
    delimited_records(&fixture(scenario, "bep.bin"))
}

/// The BEP events stored for `invocation_id`, in journal order.
pub fn stored_events(store: &dyn Store, invocation_id: &str) -> Vec<Vec<u8>> {
    store
        .read(invocation_id)
        .expect("read journal")
        .map(|r| r.expect("journal record"))
        .filter(|r| r.kind == RecordKind::BepEvent)
        .map(|r| r.payload.to_vec())
        .collect()
}

/// The metadata of a BES invocation `id` (build `build-ID`, instance `projects/test`).
pub fn meta(id: &str) -> InvocationMeta {
    InvocationMeta {
        invocation_id: id.to_string(),
        build_id: Some(format!("build-{id}")),
        source: InvocationSource::Bes,
        tenant: None,
        instance: Some("projects/test".into()),
        created_at_ms: 1_700_000_000_000,
    }
}

/// Deterministic payload for a seq, so readers can check content without shared state.
pub fn payload(seq: u64) -> Bytes {
    let len = (seq % 97) as usize * 3 + 1;
    let unit = format!("<{seq}>");
    Bytes::from(unit.repeat(len / unit.len() + 1)[..len].to_string())
}

/// The record `seq`: every tenth is `Other`, the rest BEP events, payload [`payload`].
pub fn rec(seq: u64) -> JournalRecord {
    JournalRecord {
        seq,
        kind: if seq % 10 == 0 {
            RecordKind::Other
        } else {
            RecordKind::BepEvent
        },
        payload: payload(seq),
    }
}

/// `n` records from `from`.
pub fn recs(from: u64, n: u64) -> Vec<JournalRecord> {
    (from..from + n).map(rec).collect()
}

/// xorshift64*, seeded from the clock unless a seed is given.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Every record of the invocation's journal.
pub fn read_all(store: &dyn Store, id: &str) -> Vec<JournalRecord> {
    store
        .read(id)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// `got` is exactly the records `rec(1..=last_seq)`.
pub fn check_records(got: &[JournalRecord], last_seq: u64) {
    assert_eq!(got.len() as u64, last_seq);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, rec(i as u64 + 1));
    }
}
