//! `PgStore`: the rbe-proof [`Store`] on PostgreSQL, shared by several `proof serve`
//! replicas (and read by the CLI and the web pages).
//!
//! One database holds everything: the index row of each invocation (its sequencing
//! state: `last_seq`, counts, flags, finalization), its journal as frames (the same
//! checksummed, zstd-compressed frames as the embedded store's journal files, one row per
//! frame), and the lifecycle events. An append is one transaction that locks the
//! invocation's row (`SELECT … FOR UPDATE`), checks that the batch starts right after
//! `last_seq`, inserts the frames and moves the state; it returns after `COMMIT`, so a
//! caller acks only what is durable. Two replicas appending to one invocation are
//! serialized by the row lock, and the second one's batch no longer follows `last_seq`:
//! it gets [`StoreError::SeqGap`] and its client retries from the stored prefix.
//!
//! [`Store::exclusive`] is a session-level advisory lock, released by PostgreSQL when
//! the holder's connection ends (a replica killed mid-finalization leaves no stale lock).
//!
//! Schema changes are versioned migrations ([`MIGRATIONS`]), applied at connect time
//! under a transaction-level advisory lock so replicas starting together apply each once.
//! See `docs/store.md`.

pub mod tlog;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::types::ToSql;
use postgres::{GenericClient, NoTls, Row};

mod tls;
use proof_store::journal::{self, JournalReader, ReadError};
use proof_store::{
    check_owner, validate_invocation_id, AppendFlags, InvocationMeta, InvocationRecord,
    InvocationSource, InvocationState, JournalRecord, JournalRemoved, LifecycleEvent,
    LifecycleInfo, ListFilter, RecordIter, RecordKind, SqlParam, Store, StoreError,
    MAX_PENDING_LIFECYCLE_ROWS,
};
use tls::Connector;
pub use tls::{split_url, SslMode, TlsSettings};
type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

/// The pool's connection manager: connects with the store's settings (and TLS), validates
/// a connection before each use (so connections cut by a database restart are replaced).
#[derive(Debug)]
struct Manager {
    config: postgres::Config,
    connector: Connector,
    tls: TlsSettings,
    /// The host(s) of the URL, for messages.
    host: String,
}

/// A failed connection, explained (TLS causes say what to change).
#[derive(Debug)]
struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl Manager {
    fn connect_client(&self) -> Result<postgres::Client, ConnectError> {
        let r = match &self.connector {
            Connector::Plain => self.config.connect(NoTls),
            Connector::Tls(c) => self.config.connect(c.clone()),
        };
        r.map_err(|e| ConnectError(self.tls.explain(&self.host, &describe(&e))))
    }
}

/// A pooled connection. `postgres::Client` closes itself by blocking on its own runtime,
/// which panics on a thread that drives async tasks (a store dropped inside the server's
/// runtime at shutdown): closing is moved to a short-lived thread of its own.
struct PgConn(Option<postgres::Client>);

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("connection present until dropped")
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("connection present until dropped")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        self.connect_client().map(|c| PgConn(Some(c)))
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        conn.simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectError(describe(&e)))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

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
        sql: r#"
CREATE TABLE invocations (
    invocation_id       text COLLATE "C" PRIMARY KEY,
    build_id            text,
    source              text NOT NULL,
    tenant              text,
    instance            text,
    created_at_ms       bigint NOT NULL,
    last_seq            bigint NOT NULL DEFAULT 0,
    event_count         bigint NOT NULL DEFAULT 0,
    record_count        bigint NOT NULL DEFAULT 0,
    saw_build_finished  boolean NOT NULL DEFAULT false,
    saw_last_message    boolean NOT NULL DEFAULT false,
    saw_stream_finished boolean NOT NULL DEFAULT false,
    finalized           boolean NOT NULL DEFAULT false,
    complete            boolean NOT NULL DEFAULT false,
    incomplete_reason   text,
    bytes               bigint NOT NULL DEFAULT 0,
    journal_bytes       bigint NOT NULL DEFAULT 0,
    summary             text
);
CREATE INDEX inv_created ON invocations (created_at_ms DESC, invocation_id DESC);
CREATE INDEX inv_tenant ON invocations (tenant, created_at_ms DESC, invocation_id DESC);
CREATE INDEX inv_build ON invocations (build_id);
CREATE TABLE frames (
    invocation_id text COLLATE "C" NOT NULL REFERENCES invocations ON DELETE CASCADE,
    first_seq     bigint NOT NULL,
    records       integer NOT NULL,
    data          bytea NOT NULL,
    PRIMARY KEY (invocation_id, first_seq)
);
-- Frames are zstd-compressed already: store them out of line without recompressing.
ALTER TABLE frames ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE lifecycle (
    build_id      text NOT NULL,
    invocation_id text COLLATE "C" NOT NULL,
    kind          text NOT NULL,
    attempt       bigint,
    status        text,
    at_ms         bigint NOT NULL,
    PRIMARY KEY (build_id, invocation_id, kind)
);
"#,
    },
    Migration {
        version: 2,
        description: "lifecycle rows owned by the tenant that wrote them, bounded",
        sql: r#"
ALTER TABLE lifecycle ADD COLUMN tenant text NOT NULL DEFAULT '';
ALTER TABLE lifecycle ADD COLUMN pending boolean NOT NULL DEFAULT false;
ALTER TABLE lifecycle ADD COLUMN id bigserial;
UPDATE lifecycle l SET tenant = COALESCE(i.tenant, '') FROM invocations i
    WHERE l.invocation_id <> '' AND i.invocation_id = l.invocation_id;
UPDATE lifecycle l SET tenant = COALESCE(i.tenant, '') FROM invocations i
    WHERE l.invocation_id = '' AND i.build_id = l.build_id;
UPDATE lifecycle l SET pending = true WHERE NOT EXISTS (
    SELECT 1 FROM invocations i
    WHERE (l.invocation_id <> '' AND i.invocation_id = l.invocation_id)
       OR (l.invocation_id = '' AND i.build_id = l.build_id));
ALTER TABLE lifecycle DROP CONSTRAINT lifecycle_pkey;
DELETE FROM lifecycle a USING lifecycle b
    WHERE a.id > b.id AND a.tenant = b.tenant AND a.kind = b.kind
    AND ((a.invocation_id <> '' AND a.invocation_id = b.invocation_id)
      OR (a.invocation_id = '' AND b.invocation_id = '' AND a.build_id = b.build_id));
CREATE UNIQUE INDEX lifecycle_inv ON lifecycle (invocation_id, tenant, kind)
    WHERE invocation_id <> '';
CREATE UNIQUE INDEX lifecycle_build ON lifecycle (build_id, tenant, kind)
    WHERE invocation_id = '';
CREATE INDEX lifecycle_pending ON lifecycle (tenant, id) WHERE pending;
"#,
    },
    Migration {
        version: 3,
        description: "retention tombstones (journals removed by `proof gc`)",
        sql: r#"
CREATE TABLE retention (
    invocation_id text COLLATE "C" PRIMARY KEY REFERENCES invocations ON DELETE CASCADE,
    removed_at_ms bigint NOT NULL,
    freed_bytes   bigint NOT NULL,
    proof_file    text
);
"#,
    },
];

/// Advisory lock key (transaction level) that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7262_6570_726f_6f66; // "rbeproof"
/// Seed of the advisory lock keys of [`Store::exclusive`].
const EXCLUSIVE_SEED: i64 = 0x0070_726f_6f66;

/// How long a call waits for a database connection before it fails (and the server
/// answers UNAVAILABLE, so Bazel retries).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection settings of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this process opens.
    pub max_connections: u32,
    /// Wait this long for a connection (pool or new) before a call fails.
    pub connect_timeout: Duration,
    /// Apply pending migrations when connecting (otherwise fail if any is pending).
    pub migrate: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            migrate: true,
        }
    }
}

/// The PostgreSQL store. Cheap to share (`Arc`); every call takes a pooled connection.
pub struct PgStore {
    pool: Pool,
    /// The URL without its password, for messages.
    display: String,
    /// zstd contexts and buffers reused from one append to the next.
    encoders: journal::EncoderPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.display)
            .finish()
    }
}

/// True if `spec` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_pg_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// `url` with the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => url.to_string(),
    }
}

/// A PostgreSQL error as one line: the server's message (and SQLSTATE) when it sent one,
/// else the client's error and its cause.
fn describe(e: &postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", d.message(), d.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn db(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::Database {
        context,
        source: describe(&e).into(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn i(v: u64) -> i64 {
    v as i64
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

const STATE_COLS: &str = "last_seq, event_count, record_count, saw_build_finished, \
    saw_last_message, saw_stream_finished, finalized, complete, incomplete_reason, bytes, \
    journal_bytes";
const META_COLS: &str = "invocation_id, build_id, source, tenant, instance, created_at_ms";
/// What `get` and `list` select: meta, state, summary and the retention tombstone.
const RECORD_FROM: &str = "invocation_id, build_id, source, tenant, instance, created_at_ms, \
    last_seq, event_count, record_count, saw_build_finished, saw_last_message, \
    saw_stream_finished, finalized, complete, incomplete_reason, bytes, journal_bytes, summary, \
    r.removed_at_ms, r.freed_bytes, r.proof_file \
    FROM invocations LEFT JOIN retention r USING (invocation_id)";

/// Reads the state columns starting at column `at`.
fn state_at(r: &Row, at: usize) -> InvocationState {
    InvocationState {
        last_seq: u(r.get(at)),
        event_count: u(r.get(at + 1)),
        record_count: u(r.get(at + 2)),
        saw_build_finished: r.get(at + 3),
        saw_last_message: r.get(at + 4),
        saw_stream_finished: r.get(at + 5),
        finalized: r.get(at + 6),
        complete: r.get(at + 7),
        incomplete_reason: r.get(at + 8),
        bytes: u(r.get(at + 9)),
        journal_bytes: u(r.get(at + 10)),
    }
}

fn meta_at(r: &Row, at: usize) -> InvocationMeta {
    let source: String = r.get(at + 2);
    InvocationMeta {
        invocation_id: r.get(at),
        build_id: r.get(at + 1),
        source: if source == InvocationSource::File.as_str() {
            InvocationSource::File
        } else {
            InvocationSource::Bes
        },
        tenant: r.get(at + 3),
        instance: r.get(at + 4),
        created_at_ms: r.get(at + 5),
    }
}

fn validate_build_id(id: &str) -> Result<(), StoreError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > 256 {
        "it is longer than 256 bytes"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidBuildId {
        id: id.chars().take(160).collect(),
        reason,
    })
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`) with default
    /// options, applying pending migrations.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgOptions::default())
    }

    /// Connects to `url` with `opts`.
    pub fn connect_with(url: &str, opts: &PgOptions) -> Result<Self, StoreError> {
        let store = Self::unmigrated(url, opts)?;
        let mut c = store.conn()?;
        let pending = store.pending_migrations(&mut c)?;
        if !pending.is_empty() {
            if opts.migrate {
                migrate_conn(&mut c)?;
            } else {
                return Err(StoreError::Schema(format!(
                    "the database at {} needs schema migration(s) {:?}; run `proof migrate --store URL` (or start `proof serve`, which migrates)",
                    store.display, pending
                )));
            }
        }
        Ok(store)
    }

    /// Applies the pending migrations of the database at `url`; returns the versions
    /// applied now and the schema version after.
    pub fn migrate_url(url: &str) -> Result<(Vec<i32>, i32), StoreError> {
        let store = Self::unmigrated(url, &PgOptions::default())?;
        let done = store.migrate()?;
        Ok((done, store.schema_version()?))
    }

    fn unmigrated(url: &str, opts: &PgOptions) -> Result<Self, StoreError> {
        let display = redact(url);
        let (wire, tls) = split_url(url)?;
        let connector = tls.connector()?;
        let mut config: postgres::Config = wire.parse().map_err(|e| StoreError::Database {
            context: format!(
                "parsing the store URL {display} (expected postgres://USER[:PASSWORD]@HOST:PORT/DATABASE)"
            ),
            source: Box::new(e),
        })?;
        config
            .connect_timeout(opts.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("proof");
        let host = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let manager = Manager {
            config,
            connector,
            tls,
            host,
        };
        let pool = r2d2::Pool::builder()
            .max_size(opts.max_connections.max(2))
            .min_idle(Some(0))
            .connection_timeout(opts.connect_timeout)
            .test_on_check_out(true)
            .error_handler(Box::new(LogErrors))
            .build_unchecked(manager);
        Ok(PgStore {
            pool,
            display,
            encoders: journal::EncoderPool::default(),
        })
    }

    /// Whether this process's connections to the database are encrypted (TLS), as the
    /// server sees it (`pg_stat_ssl`).
    pub fn tls_in_use(&self) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let row = c
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .map_err(db("reading pg_stat_ssl"))?;
        Ok(row.get(0))
    }

    /// The store URL without its password.
    pub fn url(&self) -> &str {
        &self.display
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get().map_err(|e| StoreError::Database {
            context: format!("connecting to {}", self.display),
            source: Box::new(e),
        })
    }

    /// Versions of [`MIGRATIONS`] not applied yet. Fails if the database is newer.
    fn pending_migrations(&self, c: &mut Conn) -> Result<Vec<i32>, StoreError> {
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

    /// [`Store::append`] (`durable`) or [`Store::append_unsynced`]; with `owner`,
    /// [`Store::append_as`] (the row created and its tenant checked in the same
    /// transaction as the append).
    fn append_with(
        &self,
        invocation_id: &str,
        owner: Option<&InvocationMeta>,
        records: &[JournalRecord],
        flags: AppendFlags,
        durable: bool,
    ) -> Result<InvocationState, StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        if let Some(b) = owner.and_then(|m| m.build_id.as_ref()) {
            validate_build_id(b)?;
        }
        for r in records {
            journal::check_record_size(id, r)?;
        }
        // Compress outside the transaction: the row lock is held only for the writes.
        let frames = self
            .encoders
            .get()
            .and_then(|mut enc| encode_frames(&mut enc, records, flags))
            .map_err(|source| StoreError::Io {
                context: "compressing a journal frame".into(),
                source,
            })?;
        let mut c = self.conn()?;
        let mut tx = c
            .transaction()
            .map_err(db(format!("starting an append to {id:?}")))?;
        if !durable {
            tx.batch_execute("SET LOCAL synchronous_commit TO off")
                .map_err(db(format!("starting an append to {id:?}")))?;
        }
        if let Some(meta) = owner {
            Self::insert_row(&mut tx, meta)?;
        }
        let Some((tenant, mut st)) = Self::row_owner_state(&mut tx, id, true)? else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if let Some(meta) = owner {
            check_owner(id, tenant.as_deref(), meta.tenant.as_deref())?;
        }
        if st.finalized {
            return Err(StoreError::AlreadyFinalized(id.to_string()));
        }
        journal::check_batch(id, st.last_seq, records)?;
        if records.is_empty() && !flags.any() {
            return Ok(st);
        }
        if !frames.is_empty() {
            let insert = tx
                .prepare(
                    "INSERT INTO frames (invocation_id, first_seq, records, data) \
                     VALUES ($1, $2, $3, $4)",
                )
                .map_err(db("preparing a frame insert"))?;
            for (first, n, data) in &frames {
                tx.execute(&insert, &[&id, &i(*first), n, data])
                    .map_err(db(format!("storing a frame of {id:?}")))?;
                st.journal_bytes += data.len() as u64;
            }
        }
        for r in records {
            st.record_count += 1;
            st.bytes += r.payload.len() as u64;
            if r.kind == RecordKind::BepEvent {
                st.event_count += 1;
            }
        }
        if let Some(last) = records.last() {
            st.last_seq = last.seq;
        }
        st.saw_build_finished |= flags.saw_build_finished;
        st.saw_last_message |= flags.saw_last_message;
        st.saw_stream_finished |= flags.saw_stream_finished;
        tx.execute(
            "UPDATE invocations SET last_seq = $2, event_count = $3, record_count = $4, \
             saw_build_finished = $5, saw_last_message = $6, saw_stream_finished = $7, \
             bytes = $8, journal_bytes = $9 WHERE invocation_id = $1",
            &[
                &id,
                &i(st.last_seq),
                &i(st.event_count),
                &i(st.record_count),
                &st.saw_build_finished,
                &st.saw_last_message,
                &st.saw_stream_finished,
                &i(st.bytes),
                &i(st.journal_bytes),
            ],
        )
        .map_err(db(format!("updating the state of {id:?}")))?;
        tx.commit()
            .map_err(db(format!("committing an append to {id:?}")))?;
        Ok(st)
    }

    /// Creates the invocation's row unless it exists (then nothing changes).
    fn insert_row(c: &mut impl GenericClient, meta: &InvocationMeta) -> Result<(), StoreError> {
        let id = meta.invocation_id.as_str();
        c.execute(
            "INSERT INTO invocations (invocation_id, build_id, source, tenant, instance, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (invocation_id) DO NOTHING",
            &[
                &id,
                &meta.build_id,
                &meta.source.as_str(),
                &meta.tenant,
                &meta.instance,
                &meta.created_at_ms,
            ],
        )
        .map_err(db(format!("creating invocation {id:?}")))?;
        Ok(())
    }

    /// The invocation's tenant and state (`FOR UPDATE`: its row locked until the end of
    /// the transaction).
    fn row_owner_state(
        c: &mut impl GenericClient,
        id: &str,
        for_update: bool,
    ) -> Result<Option<(Option<String>, InvocationState)>, StoreError> {
        let sql = format!(
            "SELECT tenant, {STATE_COLS} FROM invocations WHERE invocation_id = $1{}",
            if for_update { " FOR UPDATE" } else { "" }
        );
        Ok(c.query_opt(sql.as_str(), &[&id])
            .map_err(db(format!("reading invocation {id:?}")))?
            .map(|row| (row.get(0), state_at(&row, 1))))
    }

    fn row_state(
        c: &mut impl GenericClient,
        id: &str,
        for_update: bool,
    ) -> Result<Option<InvocationState>, StoreError> {
        let sql = format!(
            "SELECT {STATE_COLS} FROM invocations WHERE invocation_id = $1{}",
            if for_update { " FOR UPDATE" } else { "" }
        );
        Ok(c.query_opt(sql.as_str(), &[&id])
            .map_err(db(format!("reading the state of invocation {id:?}")))?
            .map(|r| state_at(&r, 0)))
    }

    fn lifecycle(
        c: &mut impl GenericClient,
        build_id: Option<&str>,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<LifecycleInfo, StoreError> {
        let rows = c
            .query(
                "SELECT kind, attempt, status, at_ms FROM lifecycle \
                 WHERE tenant = $3 AND ((invocation_id = $1 AND invocation_id <> '') \
                 OR (build_id = $2 AND invocation_id = '')) \
                 ORDER BY invocation_id DESC",
                &[&id, &build_id, &tenant.unwrap_or("")],
            )
            .map_err(db(format!("reading the lifecycle of {id:?}")))?;
        let mut info = LifecycleInfo::default();
        // Rows carrying the invocation id sort first and win over build-only rows.
        for r in rows {
            let kind: String = r.get(0);
            let attempt: Option<i64> = r.get(1);
            let status: Option<String> = r.get(2);
            let at: i64 = r.get(3);
            match kind.as_str() {
                "build_enqueued" if info.build_enqueued_at_ms.is_none() => {
                    info.build_enqueued_at_ms = Some(at)
                }
                "attempt_started" if info.attempt_started_at_ms.is_none() => {
                    info.attempt_started_at_ms = Some(at);
                    info.attempt_number = attempt.map(u);
                }
                "attempt_finished" if info.attempt_finished_at_ms.is_none() => {
                    info.attempt_finished_at_ms = Some(at);
                    info.attempt_finished_status = status;
                }
                "build_finished" if info.build_finished_at_ms.is_none() => {
                    info.build_finished_at_ms = Some(at);
                    info.build_finished_status = status;
                }
                _ => {}
            }
        }
        Ok(info)
    }

    fn to_record(c: &mut impl GenericClient, r: &Row) -> Result<InvocationRecord, StoreError> {
        let meta = meta_at(r, 0);
        let state = state_at(r, 6);
        let summary: Option<String> = r.get(17);
        let summary = match summary {
            Some(s) => Some(serde_json::from_str(&s).map_err(|source| StoreError::Json {
                context: format!("the summary of {:?}", meta.invocation_id),
                source,
            })?),
            None => None,
        };
        let lifecycle = Self::lifecycle(
            c,
            meta.build_id.as_deref(),
            &meta.invocation_id,
            meta.tenant.as_deref(),
        )?;
        let removed_at: Option<i64> = r.get(18);
        let journal_removed = removed_at.map(|at_ms| JournalRemoved {
            at_ms,
            freed_bytes: u(r.get(19)),
            proof_file: r.get(20),
        });
        Ok(InvocationRecord {
            meta,
            state,
            summary,
            lifecycle,
            journal_removed,
        })
    }
}

/// Keeps at most `cap` pending lifecycle rows of `tenant` (see
/// [`Store::record_lifecycle`]): rows whose invocation (or build) has appeared since
/// are no longer pending; of the rest the oldest are dropped.
fn bound_pending(
    c: &mut impl GenericClient,
    tenant: &str,
    cap: usize,
) -> Result<(), postgres::Error> {
    const COUNT: &str = "SELECT count(*) FROM lifecycle WHERE pending AND tenant = $1";
    let cap = cap as i64;
    if c.query_one(COUNT, &[&tenant])?.get::<_, i64>(0) <= cap {
        return Ok(());
    }
    c.execute(
        "UPDATE lifecycle l SET pending = false WHERE pending AND tenant = $1 AND ( \
           (invocation_id <> '' AND EXISTS (SELECT 1 FROM invocations i \
              WHERE i.invocation_id = l.invocation_id AND COALESCE(i.tenant, '') = $1)) \
        OR (invocation_id = '' AND EXISTS (SELECT 1 FROM invocations i \
              WHERE i.build_id = l.build_id AND COALESCE(i.tenant, '') = $1)))",
        &[&tenant],
    )?;
    let over = c.query_one(COUNT, &[&tenant])?.get::<_, i64>(0) - cap;
    if over > 0 {
        c.execute(
            "DELETE FROM lifecycle WHERE id IN (SELECT id FROM lifecycle \
             WHERE pending AND tenant = $1 ORDER BY id LIMIT $2)",
            &[&tenant, &over],
        )?;
    }
    Ok(())
}

/// r2d2 reports failed connection attempts here (they also fail the call that waited).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<ConnectError> for LogErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(error = %error, "PostgreSQL connection failed");
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

fn migrate_conn(c: &mut Conn) -> Result<Vec<i32>, StoreError> {
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

/// Encodes a batch as the embedded journal does ([`journal::frame_ranges`]): one
/// (first seq, record count, frame bytes) per frame, the batch's flags on the last.
fn encode_frames(
    enc: &mut journal::FrameEncoder,
    records: &[JournalRecord],
    flags: AppendFlags,
) -> std::io::Result<Vec<(u64, i32, Vec<u8>)>> {
    let ranges = journal::frame_ranges(records);
    let last = ranges.len().saturating_sub(1);
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let fl = if i == last {
                flags
            } else {
                AppendFlags::default()
            };
            let (seq, count) = (records[r.start].seq, r.len() as i32);
            let mut buf = Vec::new();
            enc.encode_frame(&mut buf, seq, &records[r], fl)?;
            Ok((seq, count, buf))
        })
        .collect()
}

impl Store for PgStore {
    fn open_invocation(&self, meta: &InvocationMeta) -> Result<InvocationState, StoreError> {
        let id = meta.invocation_id.as_str();
        validate_invocation_id(id)?;
        if let Some(b) = &meta.build_id {
            validate_build_id(b)?;
        }
        let mut c = self.conn()?;
        Self::insert_row(&mut **c, meta)?;
        let (tenant, st) = Self::row_owner_state(&mut **c, id, false)?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        check_owner(id, tenant.as_deref(), meta.tenant.as_deref())?;
        Ok(st)
    }

    fn append_as(
        &self,
        meta: &InvocationMeta,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(&meta.invocation_id, Some(meta), records, flags, true)
    }

    fn append(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(invocation_id, None, records, flags, true)
    }

    /// Commits without waiting for PostgreSQL to flush its WAL (`synchronous_commit =
    /// off` for this one transaction): in a crash the batch is lost whole or kept whole,
    /// never half there, and the next synchronous commit ([`Store::sync`],
    /// [`Store::mark_complete`], a durable append) flushes it too, since the WAL is
    /// flushed in order. A file import so waits for one flush instead of one per batch.
    fn append_unsynced(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(invocation_id, None, records, flags, false)
    }

    /// A synchronous commit that writes (one that changes nothing writes no WAL and
    /// waits for no flush): it returns once the WAL up to it, and so every earlier
    /// unsynced append, is on stable storage.
    fn sync(&self, invocation_id: &str) -> Result<(), StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        let mut c = self.conn()?;
        c.execute(
            "UPDATE invocations SET last_seq = last_seq WHERE invocation_id = $1",
            &[&id],
        )
        .map_err(db(format!("syncing {id:?}")))?;
        Ok(())
    }

    fn state(&self, invocation_id: &str) -> Result<Option<InvocationState>, StoreError> {
        validate_invocation_id(invocation_id)?;
        let mut c = self.conn()?;
        Self::row_state(&mut **c, invocation_id, false)
    }

    fn read(&self, invocation_id: &str) -> Result<RecordIter, StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        let mut c = self.conn()?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {META_COLS}, last_seq, r.removed_at_ms, r.proof_file FROM invocations \
                     LEFT JOIN retention r USING (invocation_id) WHERE invocation_id = $1"
                ),
                &[&id],
            )
            .map_err(db(format!("reading invocation {id:?}")))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        drop(c);
        if let Some(at_ms) = row.get::<_, Option<i64>>(7) {
            return Err(StoreError::JournalRemoved {
                id: id.to_string(),
                at_ms,
                proof_file: row.get(8),
            });
        }
        let meta = meta_at(&row, 0);
        let upto = u(row.get(6));
        let source = FrameSource {
            pool: self.pool.clone(),
            display: Arc::from(self.display.as_str()),
            id: id.to_string(),
            upto,
            next_first: 1,
            buf: journal::encode_header(&meta),
            pos: 0,
            done: false,
        };
        let (reader, _) = JournalReader::open(source).map_err(|e| read_err(id, e))?;
        Ok(Box::new(FrameIter {
            reader,
            id: id.to_string(),
            upto,
            current: Vec::new().into_iter(),
            last: 0,
            done: false,
        }))
    }

    fn mark_complete(
        &self,
        invocation_id: &str,
        complete: bool,
        reason: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        let reason = if complete {
            None
        } else {
            Some(reason.unwrap_or("unspecified").to_string())
        };
        let summary = summary.to_string();
        let mut c = self.conn()?;
        let n = c
            .execute(
                "UPDATE invocations SET finalized = true, complete = $2, \
                 incomplete_reason = $3, summary = $4 WHERE invocation_id = $1",
                &[&id, &complete, &reason, &summary],
            )
            .map_err(db(format!("finalizing {id:?}")))?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    fn record_lifecycle(
        &self,
        build_id: &str,
        invocation_id: Option<&str>,
        tenant: Option<&str>,
        event: LifecycleEvent,
    ) -> Result<(), StoreError> {
        validate_build_id(build_id)?;
        if let Some(id) = invocation_id {
            validate_invocation_id(id)?;
        }
        let (kind, attempt, status, at) = match &event {
            LifecycleEvent::BuildEnqueued { at_ms } => ("build_enqueued", None, None, *at_ms),
            LifecycleEvent::InvocationAttemptStarted {
                attempt_number,
                at_ms,
            } => ("attempt_started", Some(i(*attempt_number)), None, *at_ms),
            LifecycleEvent::InvocationAttemptFinished { status, at_ms } => {
                ("attempt_finished", None, Some(status.as_str()), *at_ms)
            }
            LifecycleEvent::BuildFinished { status, at_ms } => {
                ("build_finished", None, Some(status.as_str()), *at_ms)
            }
        };
        let ctx = || format!("recording lifecycle event {kind} of build {build_id:?}");
        let writer = tenant.unwrap_or("");
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(db(ctx()))?;
        let pending = match invocation_id {
            Some(id) => {
                let owner = tx
                    .query_opt(
                        "SELECT tenant FROM invocations WHERE invocation_id = $1",
                        &[&id],
                    )
                    .map_err(db(ctx()))?
                    .map(|r| r.get::<_, Option<String>>(0));
                match owner {
                    Some(owner) if owner.as_deref() != tenant => {
                        return Err(StoreError::TenantMismatch {
                            id: id.to_string(),
                            existing: owner,
                            requested: tenant.map(str::to_string),
                        })
                    }
                    Some(_) => false,
                    None => true,
                }
            }
            None => !tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM invocations WHERE build_id = $1 \
                     AND COALESCE(tenant, '') = $2)",
                    &[&build_id, &writer],
                )
                .map_err(db(ctx()))?
                .get::<_, bool>(0),
        };
        let added = tx
            .execute(
                "INSERT INTO lifecycle \
                 (build_id, invocation_id, kind, attempt, status, at_ms, tenant, pending) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &build_id,
                    &invocation_id.unwrap_or(""),
                    &kind,
                    &attempt,
                    &status,
                    &at.unwrap_or_else(now_ms),
                    &writer,
                    &pending,
                ],
            )
            .map_err(db(ctx()))?;
        if pending && added > 0 {
            bound_pending(&mut tx, writer, MAX_PENDING_LIFECYCLE_ROWS).map_err(db(ctx()))?;
        }
        tx.commit().map_err(db(ctx()))
    }

    fn get(&self, invocation_id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        validate_invocation_id(invocation_id)?;
        let mut c = self.conn()?;
        let row = c
            .query_opt(
                &format!("SELECT {RECORD_FROM} WHERE invocation_id = $1"),
                &[&invocation_id],
            )
            .map_err(db(format!("reading invocation {invocation_id:?}")))?;
        match row {
            Some(r) => Self::to_record(&mut **c, &r).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<InvocationRecord>, StoreError> {
        let (filter, params) = f.to_sql(|n| format!("${n}"));
        let sql = format!("SELECT {RECORD_FROM} WHERE true{filter}");
        let args: Vec<Box<dyn ToSql + Sync>> = params
            .into_iter()
            .map(|p| -> Box<dyn ToSql + Sync> {
                match p {
                    SqlParam::Text(t) => Box::new(t),
                    SqlParam::Int(i) => Box::new(i),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| b.as_ref()).collect();
        let mut c = self.conn()?;
        let rows = c
            .query(sql.as_str(), &params)
            .map_err(db("listing invocations"))?;
        rows.iter().map(|r| Self::to_record(&mut **c, r)).collect()
    }

    fn delete(&self, invocation_id: &str) -> Result<(), StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        let mut c = self.conn()?;
        let mut tx = c
            .transaction()
            .map_err(db(format!("starting the deletion of {id:?}")))?;
        tx.execute("DELETE FROM invocations WHERE invocation_id = $1", &[&id])
            .map_err(db(format!("deleting {id:?}")))?;
        tx.execute(
            "DELETE FROM lifecycle WHERE invocation_id = $1 AND invocation_id <> ''",
            &[&id],
        )
        .map_err(db(format!("deleting the lifecycle of {id:?}")))?;
        tx.commit()
            .map_err(db(format!("committing the deletion of {id:?}")))
    }

    /// One transaction: lock the row, check it is finalized, delete its frames, write the
    /// tombstone. A crash (of this process or of the database) before `COMMIT` removes
    /// nothing; after it, everything.
    fn remove_journal(
        &self,
        invocation_id: &str,
        proof_file: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        let ctx = || format!("removing the journal of {id:?}");
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(db(ctx()))?;
        let Some(st) = Self::row_state(&mut tx, id, true)? else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        let done = tx
            .query_opt("SELECT 1 FROM retention WHERE invocation_id = $1", &[&id])
            .map_err(db(ctx()))?;
        if done.is_some() {
            return Ok(0);
        }
        if !st.finalized {
            return Err(StoreError::NotFinalized(id.to_string()));
        }
        let freed: i64 = tx
            .query_one(
                "WITH d AS (DELETE FROM frames WHERE invocation_id = $1 RETURNING data) \
                 SELECT COALESCE(sum(octet_length(data)), 0)::bigint FROM d",
                &[&id],
            )
            .map_err(db(ctx()))?
            .get(0);
        tx.execute(
            "INSERT INTO retention (invocation_id, removed_at_ms, freed_bytes, proof_file) \
             VALUES ($1, $2, $3, $4)",
            &[&id, &now_ms, &freed, &proof_file],
        )
        .map_err(db(ctx()))?;
        tx.execute(
            "UPDATE invocations SET journal_bytes = 0 WHERE invocation_id = $1",
            &[&id],
        )
        .map_err(db(ctx()))?;
        tx.commit().map_err(db(ctx()))?;
        Ok(u(freed))
    }

    fn exclusive(
        &self,
        invocation_id: &str,
        f: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let id = invocation_id;
        validate_invocation_id(id)?;
        // A dedicated session holds the lock while `f` uses other pooled connections.
        let mut c = self.conn()?;
        let got: bool = c
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, $2))",
                &[&id, &EXCLUSIVE_SEED],
            )
            .map_err(db(format!("taking the finalization lock of {id:?}")))?
            .get(0);
        if !got {
            return Ok(false);
        }
        let r = f();
        if let Err(e) = c.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, $2))",
            &[&id, &EXCLUSIVE_SEED],
        ) {
            // The session is gone, and its lock with it.
            tracing::warn!(invocation = %id, error = %e, "releasing the finalization lock failed");
        }
        r.map(|()| true)
    }
}

fn read_err(id: &str, e: ReadError) -> StoreError {
    match e {
        ReadError::Io(source) => match source
            .get_ref()
            .and_then(|s| s.downcast_ref::<SourceError>())
        {
            Some(_) => {
                let msg = source.to_string();
                StoreError::Database {
                    context: format!("reading the frames of {id:?}"),
                    source: msg.into(),
                }
            }
            None => StoreError::Io {
                context: format!("reading the frames of {id:?}"),
                source,
            },
        },
        ReadError::Decode(d) => StoreError::Corrupt {
            path: format!("postgres:frames/{id}").into(),
            offset: d.offset,
            reason: d.reason,
        },
    }
}

/// A database failure inside [`FrameSource`], carried through `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SourceError(String);

/// Frames per query when reading.
const READ_PAGE: i64 = 32;

/// The journal as one byte stream (header, then frames fetched page by page), so the
/// embedded store's decoder checks every frame's checksum and sequence numbers.
struct FrameSource {
    pool: Pool,
    display: Arc<str>,
    id: String,
    /// Read only frames that start at or before this seq (the state when `read` began).
    upto: u64,
    next_first: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl FrameSource {
    fn fetch(&mut self) -> Result<(), SourceError> {
        let mut c = self
            .pool
            .get()
            .map_err(|e| SourceError(format!("connecting to {}: {e}", self.display)))?;
        let rows = c
            .query(
                "SELECT first_seq, records, data FROM frames WHERE invocation_id = $1 \
                 AND first_seq >= $2 AND first_seq <= $3 ORDER BY first_seq LIMIT $4",
                &[&self.id, &i(self.next_first), &i(self.upto), &READ_PAGE],
            )
            .map_err(|e| SourceError(format!("reading frames: {e}")))?;
        self.buf.clear();
        self.pos = 0;
        if rows.is_empty() {
            self.done = true;
        }
        for r in rows {
            let first: i64 = r.get(0);
            let n: i32 = r.get(1);
            let data: &[u8] = r.get(2);
            self.buf.extend_from_slice(data);
            self.next_first = u(first) + u(i64::from(n));
        }
        Ok(())
    }
}

impl Read for FrameSource {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done || self.next_first > self.upto {
                return Ok(0);
            }
            self.fetch().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams records frame by frame; fails if the journal ends before the snapshot's
/// last sequence number (the invocation was deleted while being read).
struct FrameIter {
    reader: JournalReader<FrameSource>,
    id: String,
    upto: u64,
    current: std::vec::IntoIter<JournalRecord>,
    last: u64,
    done: bool,
}

impl Iterator for FrameIter {
    type Item = Result<JournalRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                self.last = r.seq;
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.reader.next_frame() {
                Ok(Some((_, records))) => self.current = records.into_iter(),
                Ok(None) => {
                    self.done = true;
                    if self.last < self.upto {
                        return Some(Err(StoreError::Corrupt {
                            path: format!("postgres:frames/{}", self.id).into(),
                            offset: 0,
                            reason: format!(
                                "the stored frames end at seq {}, the invocation's state says {} (deleted while reading?)",
                                self.last, self.upto
                            ),
                        }));
                    }
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_err(&self.id, e)));
                }
            }
        }
    }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t_1"),
            "postgres://u:p@h:1/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert!(is_pg_url("postgresql://h/db") && !is_pg_url("/var/lib/proof"));
    }
}
