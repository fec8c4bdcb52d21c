#![allow(dead_code)]
//! A fresh database per test on the cluster of `PROOF_PG_URL` (tests/pg/start-pg.sh).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use proof_store::Store;
use proof_store_pg::PgStore;

/// The admin URL of the test cluster; panics (never skips) when it is not set.
pub fn pg_url() -> String {
    std::env::var("PROOF_PG_URL").unwrap_or_else(|_| {
        panic!(
            "PROOF_PG_URL is not set: these tests need PostgreSQL. Start a throwaway cluster \
             with `bash tests/pg/start-pg.sh` and export its URL: \
             `set -a; . /tmp/rbe-proof-pg/pg.env; set +a` (tests/run-all.sh does both)"
        )
    })
}

/// An empty database, dropped with its connections when this goes away.
pub struct PgBackend {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl PgBackend {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = pg_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            nanos
        );
        let url = proof_store_pg::create_database(&admin, &name).unwrap();
        PgBackend { admin, name, url }
    }

    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.url).unwrap()
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        let _ = proof_store_pg::drop_database(&self.admin, &self.name);
    }
}

impl crate::contract::Backend for PgBackend {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.store())
    }
}
