//! The transparency log's leaves in the PostgreSQL store, shared by every
//! replica (docs/proof-format.md §9): `proof_tlog_leaves(idx, hash)`. One
//! linear log: each append runs in a transaction holding a transaction-level
//! advisory lock, takes the next indexes after the largest one and skips
//! hashes already present (the hash is unique, so no leaf is doubled). The
//! table is created on first use, under the same lock (not a numbered
//! migration: it belongs to the log, which only `proof serve` opens).

use proof_tlog::{Hash, LeafBackend};

use crate::PgStore;

/// Advisory lock key of the log's appends (and its table's creation).
const LOG_LOCK: i64 = 0x7072_6f6f_6674_6c67; // "prooftlg"

/// The log's leaves in a PostgreSQL store.
pub struct PgLeaves {
    store: PgStore,
}

impl std::fmt::Debug for PgLeaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeaves")
            .field("store", &self.store.url())
            .finish()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("the transparency log in PostgreSQL: {what}: {e}")
}

impl PgLeaves {
    /// The log of `store`; creates its table if needed.
    pub fn open(store: PgStore) -> Result<PgLeaves, String> {
        let mut c = store.conn().map_err(|e| err("connecting", e))?;
        let mut tx = c.transaction().map_err(|e| err("begin", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
            .map_err(|e| err("locking", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS proof_tlog_leaves (\
               idx BIGINT PRIMARY KEY CHECK (idx >= 0), \
               hash BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32))",
        )
        .map_err(|e| err("creating proof_tlog_leaves", e))?;
        tx.commit().map_err(|e| err("commit", e))?;
        drop(c);
        Ok(PgLeaves { store })
    }
}

impl LeafBackend for PgLeaves {
    fn read_from(&self, from: u64) -> Result<Vec<Hash>, String> {
        let mut c = self.store.conn().map_err(|e| err("connecting", e))?;
        let from = i64::try_from(from).map_err(|e| err("index", e))?;
        let rows = c
            .query(
                "SELECT idx, hash FROM proof_tlog_leaves WHERE idx >= $1 ORDER BY idx",
                &[&from],
            )
            .map_err(|e| err("reading leaves", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (n, r) in rows.iter().enumerate() {
            let idx: i64 = r.get(0);
            if idx != from + n as i64 {
                return Err(err(
                    "reading leaves",
                    format!(
                        "index {idx} where {} was expected: the log has a gap",
                        from + n as i64
                    ),
                ));
            }
            let h: Vec<u8> = r.get(1);
            let h: [u8; 32] = h
                .try_into()
                .map_err(|_| err("reading leaves", "a hash is not 32 bytes"))?;
            out.push(Hash(h));
        }
        Ok(out)
    }

    fn append(&self, hashes: &[Hash]) -> Result<(), String> {
        let mut c = self.store.conn().map_err(|e| err("connecting", e))?;
        let mut tx = c.transaction().map_err(|e| err("begin", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
            .map_err(|e| err("locking", e))?;
        let all: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let present: std::collections::HashSet<Vec<u8>> = tx
            .query(
                "SELECT hash FROM proof_tlog_leaves WHERE hash = ANY($1)",
                &[&all],
            )
            .map_err(|e| err("looking up leaves", e))?
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect();
        let mut next: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM proof_tlog_leaves",
                &[],
            )
            .map_err(|e| err("reading the size", e))?
            .get(0);
        let mut seen = std::collections::HashSet::new();
        for h in all {
            if present.contains(&h) || !seen.insert(h.clone()) {
                continue;
            }
            tx.execute(
                "INSERT INTO proof_tlog_leaves (idx, hash) VALUES ($1, $2)",
                &[&next, &h],
            )
            .map_err(|e| err("appending", e))?;
            next += 1;
        }
        tx.commit().map_err(|e| err("commit", e))
    }
}
