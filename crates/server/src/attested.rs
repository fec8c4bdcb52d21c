//! The server's index of attested results: every execution the executor
//! performed (done, not cached, successful) for an invocation whose proof
//! this server signed, keyed by each output file's path and digest. A later
//! build served that output from the remote cache binds to it
//! ("cached-attested", `proof_evidence::binding`): the server copies the
//! earlier operation, as the executor returned it, into the new proof's
//! `executor.bin` as an `AttestedResult` record, so `proof verify`
//! re-derives the binding offline.
//!
//! On disk under `PROOFS/.attested/`: one file per output key (the sha256
//! of path, hash and size), holding one encoded `AttestedResult`; the first
//! execution indexed for a key is kept. Proofs signed before the index
//! existed are not in it (their cache hits stay unbound, "not proven").

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use proof_evidence::binding::{witnessed_results, OutputKey};
use proof_proto::ledger::{ledger_record, AttestedResult, LedgerRecord};
use prost::Message;
use sha2::Digest as _;

/// Most attested records added to one proof.
pub const MAX_ATTESTED_PER_PROOF: usize = 50_000;
/// Largest index file read (one encoded AttestedResult).
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// The index under one proofs directory.
pub struct AttestedIndex {
    dir: PathBuf,
}

impl AttestedIndex {
    pub fn new(proofs_dir: &Path) -> Self {
        AttestedIndex {
            dir: proofs_dir.join(".attested"),
        }
    }

    fn file(&self, key: &OutputKey) -> PathBuf {
        let mut h = sha2::Sha256::new();
        h.update(key.0.as_bytes());
        h.update([0]);
        h.update(key.1.as_bytes());
        h.update([0]);
        h.update(key.2.to_string().as_bytes());
        self.dir.join(hex::encode(h.finalize()))
    }

    /// Indexes the executions in `ledger` (an `executor.bin`); returns how
    /// many output keys were new.
    pub fn add(&self, ledger: &[u8]) -> std::io::Result<usize> {
        let results = witnessed_results(ledger).map_err(std::io::Error::other)?;
        if results.is_empty() {
            return Ok(0);
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut added = 0;
        for (keys, record) in results {
            let bytes = record.encode_to_vec();
            for key in keys {
                let dest = self.file(&key);
                if dest.exists() {
                    continue;
                }
                let mut tmp = tempfile::Builder::new()
                    .prefix(".tmp-")
                    .tempfile_in(&self.dir)?;
                tmp.write_all(&bytes)?;
                tmp.as_file().sync_all()?;
                match tmp.persist_noclobber(&dest) {
                    Ok(_) => added += 1,
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.error),
                }
            }
        }
        Ok(added)
    }

    /// The attested executions that produced any of `keys`, each operation
    /// once, at most [`MAX_ATTESTED_PER_PROOF`].
    pub fn lookup(&self, keys: &BTreeSet<OutputKey>) -> Vec<AttestedResult> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= MAX_ATTESTED_PER_PROOF {
                tracing::warn!(
                    limit = MAX_ATTESTED_PER_PROOF,
                    "more attested results than one proof holds; the rest stay unbound"
                );
                break;
            }
            let path = self.file(key);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() > MAX_RECORD_BYTES {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(rec) = AttestedResult::decode(bytes.as_slice()) else {
                tracing::warn!(path = %path.display(), "an unreadable attested-result record is ignored");
                continue;
            };
            let name = rec.operation.as_ref().map(|o| o.name.clone());
            if seen.insert((rec.invocation_id.clone(), rec.instance_name.clone(), name)) {
                out.push(rec);
            }
        }
        out
    }
}

/// `ledger` with `records` appended as `AttestedResult` ledger records.
pub fn append(mut ledger: Vec<u8>, records: Vec<AttestedResult>) -> Vec<u8> {
    for r in records {
        let rec = LedgerRecord {
            record: Some(ledger_record::Record::Attested(r)),
        };
        let bytes = rec.encode_to_vec();
        proof_stream::delimited::encode_varint(bytes.len() as u64, &mut ledger);
        ledger.extend_from_slice(&bytes);
    }
    ledger
}
