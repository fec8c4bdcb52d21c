//! Versioned schema migrations: the SQL of each in `crates/store-pg/migrations/`, applied
//! in order at connect time under a transaction-level advisory lock, so replicas starting
//! together apply each once.

use postgres::GenericClient;
use proof_store::StoreError;

use crate::pool::Conn;
use crate::{db, PgStore};

/// One schema migration: version, what it does, SQL.
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Never edit a released one: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "invocations, journal frames, lifecycle events",
        sql: include_str!("../migrations/0001_invocations_frames_lifecycle.sql"),
    },
    Migration {
        version: 2,
        description: "lifecycle rows owned by the tenant that wrote them, bounded",
        sql: include_str!("../migrations/0002_lifecycle_tenant_bounded.sql"),
    },
    Migration {
        version: 3,
        description: "retention tombstones (journals removed by `proof gc`)",
        sql: include_str!("../migrations/0003_retention_tombstones.sql"),
    },
];

/// Advisory lock key (transaction level) that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7262_6570_726f_6f66; // "rbeproof"

impl PgStore {
    /// Versions of [`MIGRATIONS`] not applied yet. Fails if the database is newer.
    pub(crate) fn pending_migrations(&self, c: &mut Conn) -> Result<Vec<i32>, StoreError> {
        let applied = applied_versions(&mut ***c)?;
        check_not_newer(&applied, &self.display)?;
        Ok(MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Applies every pending migration; returns the versions applied now.
    pub fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut c = self.conn()?;
        migrate_conn(&mut c)
    }

    /// The schema version of the database (highest applied migration).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        let mut c = self.conn()?;
        Ok(applied_versions(&mut **c)?.into_iter().max().unwrap_or(0))
    }
}

fn applied_versions(c: &mut impl GenericClient) -> Result<Vec<i32>, StoreError> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('proof_schema_migrations') IS NOT NULL",
            &[],
        )
        .map_err(db("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(c.query("SELECT version FROM proof_schema_migrations", &[])
        .map_err(db("reading the schema version"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn check_not_newer(applied: &[i32], display: &str) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&v) = applied.iter().max().filter(|&&v| v > known) {
        return Err(StoreError::Schema(format!(
            "the database at {display} has schema version {v}, newer than this proof knows ({known}); upgrade proof"
        )));
    }
    Ok(())
}

pub(crate) fn migrate_conn(c: &mut Conn) -> Result<Vec<i32>, StoreError> {
    let mut tx = c.transaction().map_err(db("starting a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS proof_schema_migrations (\
            version integer PRIMARY KEY, description text NOT NULL, \
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .map_err(db("creating the migrations table"))?;
    let applied = applied_versions(&mut tx)?;
    check_not_newer(&applied, "this database")?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .map_err(db(format!("applying schema migration {}", m.version)))?;
        tx.execute(
            "INSERT INTO proof_schema_migrations (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .map_err(db(format!("recording schema migration {}", m.version)))?;
        done.push(m.version);
    }
    tx.commit().map_err(db("committing schema migrations"))?;
    if !done.is_empty() {
        tracing::info!(versions = ?done, "applied schema migrations");
    }
    Ok(done)
}
