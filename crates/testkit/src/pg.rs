//! A fresh PostgreSQL database per test on the cluster of `PROOF_PG_URL`
//! (tests/pg/start-pg.sh starts one; tests/run-all.sh exports its URL).
//! The tests that need it fail, never skip, when it is not set.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use proof_store::Store;
use proof_store_pg::{split_url, with_database, PgStore, SslMode};

/// The admin URL of the test cluster; panics (never skips) when it is not set.
pub fn pg_url() -> String {
    std::env::var("PROOF_PG_URL").unwrap_or_else(|_| {
        panic!(
            "PROOF_PG_URL is not set: these tests need PostgreSQL. Run the suite with \
             `bash tests/run-all.sh` (it starts a throwaway cluster), or start one with \
             `bash tests/pg/start-pg.sh` and `set -a; . /tmp/rbe-proof-pg/pg.env; set +a`."
        )
    })
}

/// A database name no other test (of this or another process) uses: `PREFIX_PID_N_NANOS`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Creates the database `name` (letters, digits, `_`) on the server of `url`, which must
/// name an existing database to connect to; returns the new database's URL.
pub fn create_database(url: &str, name: &str) -> Result<String, String> {
    admin(url, &format!("CREATE DATABASE {}", ident(name)?))?;
    Ok(with_database(url, name))
}

/// Drops the database `name` on the server of `url`, closing its connections first.
pub fn drop_database(url: &str, name: &str) -> Result<(), String> {
    admin(
        url,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)?),
    )
}

fn ident(name: &str) -> Result<&str, String> {
    if !name.is_empty()
        && name.len() < 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(name)
    } else {
        Err(format!(
            "database name {name:?} must be 1-63 characters of [a-z0-9_]"
        ))
    }
}

/// Runs `sql` on the server of `url` over a plain connection (the test clusters of
/// tests/pg/start-pg.sh; a URL that asks for TLS is refused with that reason).
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (wire, tls) = split_url(url).map_err(|e| e.to_string())?;
    if !matches!(tls.mode, SslMode::Disable | SslMode::Prefer) {
        return Err(format!(
            "test databases are created over a plain connection, and {} asks for sslmode={}: \
             point PROOF_PG_URL at a cluster without TLS (tests/pg/start-pg.sh)",
            proof_store_pg::redact(url),
            tls.mode.as_str()
        ));
    }
    let mut c = postgres::Client::connect(&wire, postgres::NoTls)
        .map_err(|e| format!("connecting to {}: {e}", proof_store_pg::redact(url)))?;
    c.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))
}

/// An empty database, dropped with its connections when this goes away.
pub struct PgBackend {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl PgBackend {
    /// A fresh database on the cluster of `PROOF_PG_URL`.
    pub fn new() -> Self {
        Self::fresh_on(&pg_url())
    }

    /// [`PgBackend::new`], under the name the end-to-end tests know it by (`pg::Db`).
    pub fn fresh() -> Self {
        Self::new()
    }

    /// A fresh database on the cluster of `admin`.
    pub fn fresh_on(admin: &str) -> Self {
        let name = unique_name("t");
        let url = create_database(admin, &name)
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        PgBackend {
            admin: admin.to_string(),
            name,
            url,
        }
    }

    /// A store handle on this database (as the CLI opens it).
    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.url).unwrap()
    }
}

impl Default for PgBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // On a plain thread: the sync client must not block a runtime's thread.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || drop_database(&admin, &name)).join();
    }
}

impl crate::contract::Backend for PgBackend {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.store())
    }
}
