#![allow(dead_code)]

use bytes::Bytes;
use proof_store::{InvocationMeta, InvocationSource, JournalRecord, RecordKind};

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
pub fn read_all(store: &dyn proof_store::Store, id: &str) -> Vec<JournalRecord> {
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
