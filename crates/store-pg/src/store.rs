//! `PgStore` and its `impl Store`: one transaction per append, locking the invocation's
//! row; the tenant-ownership rule is `proof_store::check_owner`, as in `FsStore`.

use std::time::{SystemTime, UNIX_EPOCH};

use postgres::types::ToSql;
use postgres::{GenericClient, Row};
use proof_store::journal;
use proof_store::{
    check_owner, validate_invocation_id, AppendFlags, InvocationMeta, InvocationRecord,
    InvocationSource, InvocationState, JournalRecord, JournalRemoved, LifecycleEvent,
    LifecycleInfo, ListFilter, RecordIter, RecordKind, SqlParam, Store, StoreError,
    MAX_PENDING_LIFECYCLE_ROWS,
};

use crate::frames::{self, encode_frames};
use crate::migrations::migrate_conn;
use crate::pool::{self, Conn, PgOptions, Pool};
use crate::{db, i, u};

/// Seed of the advisory lock keys of [`Store::exclusive`].
const EXCLUSIVE_SEED: i64 = 0x0070_726f_6f66;

/// The PostgreSQL store. Cheap to share (`Arc`); every call takes a pooled connection.
pub struct PgStore {
    pub(crate) pool: Pool,
    /// The URL without its password, for messages.
    pub(crate) display: String,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        let (pool, display) = pool::open(url, opts)?;
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

    pub(crate) fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get().map_err(|e| StoreError::Database {
            context: format!("connecting to {}", self.display),
            source: Box::new(e),
        })
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
        frames::read(self.pool.clone(), &self.display, id, &meta, upto)
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
                    Some(owner) => {
                        check_owner(id, owner.as_deref(), tenant)?;
                        false
                    }
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
