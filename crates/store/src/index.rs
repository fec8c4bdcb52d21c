//! The SQLite index: derived from the journals, repairable by `FsStore::open`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::StoreError;
use crate::types::{
    InvocationMeta, InvocationRecord, InvocationSource, InvocationState, JournalRemoved,
    LifecycleEvent, LifecycleInfo, ListFilter, SqlParam,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invocations (
    invocation_id      TEXT PRIMARY KEY NOT NULL,
    build_id           TEXT,
    source             TEXT NOT NULL,
    tenant             TEXT,
    instance           TEXT,
    created_at_ms      INTEGER NOT NULL,
    last_seq           INTEGER NOT NULL DEFAULT 0,
    event_count        INTEGER NOT NULL DEFAULT 0,
    record_count       INTEGER NOT NULL DEFAULT 0,
    saw_build_finished INTEGER NOT NULL DEFAULT 0,
    saw_last_message   INTEGER NOT NULL DEFAULT 0,
    saw_stream_finished INTEGER NOT NULL DEFAULT 0,
    finalized          INTEGER NOT NULL DEFAULT 0,
    complete           INTEGER NOT NULL DEFAULT 0,
    incomplete_reason  TEXT,
    bytes              INTEGER NOT NULL DEFAULT 0,
    journal_bytes      INTEGER NOT NULL DEFAULT 0,
    summary            TEXT,
    deleted            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inv_created ON invocations(created_at_ms DESC, invocation_id DESC);
CREATE INDEX IF NOT EXISTS inv_tenant ON invocations(tenant, created_at_ms DESC, invocation_id DESC);
CREATE INDEX IF NOT EXISTS inv_build ON invocations(build_id);
-- Lifecycle events. `tenant` is the writer ('' without tenants); an invocation reads only
-- its own tenant's rows. `pending`: no invocation of that tenant matched the row when it
-- was written (capped per tenant, oldest = lowest rowid dropped first).
CREATE TABLE IF NOT EXISTS lifecycle (
    build_id      TEXT NOT NULL,
    invocation_id TEXT NOT NULL,  -- '' for build-level events
    kind          TEXT NOT NULL,
    attempt       INTEGER,
    status        TEXT,
    at_ms         INTEGER NOT NULL,
    tenant        TEXT NOT NULL DEFAULT '',
    pending       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS lifecycle_inv ON lifecycle(invocation_id, tenant, kind)
    WHERE invocation_id <> '';
CREATE UNIQUE INDEX IF NOT EXISTS lifecycle_build ON lifecycle(build_id, tenant, kind)
    WHERE invocation_id = '';
CREATE INDEX IF NOT EXISTS lifecycle_pending ON lifecycle(tenant) WHERE pending = 1;
-- Retention tombstones (version 3): the journal of these invocations was removed (or is
-- being removed: recovery finishes it); the row in `invocations` stays.
CREATE TABLE IF NOT EXISTS retention (
    invocation_id TEXT PRIMARY KEY NOT NULL,
    removed_at_ms INTEGER NOT NULL,
    freed_bytes   INTEGER NOT NULL,
    proof_file    TEXT
);
PRAGMA user_version = 3;
";

/// The schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 3;

/// From version 1 (lifecycle keyed by build, invocation and kind, without tenant): rows
/// take the tenant of the invocation (or an invocation of the build) they belong to;
/// rows that match none become pending rows without tenant.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE lifecycle RENAME TO lifecycle_v1;
DROP INDEX IF EXISTS lifecycle_inv;
DROP INDEX IF EXISTS lifecycle_build;
DROP INDEX IF EXISTS lifecycle_pending;
";

const MIGRATE_1_TO_2_COPY: &str = "
INSERT OR IGNORE INTO lifecycle
    (build_id, invocation_id, kind, attempt, status, at_ms, tenant, pending)
SELECT l.build_id, l.invocation_id, l.kind, l.attempt, l.status, l.at_ms,
       COALESCE(i.tenant, ''), i.invocation_id IS NULL
FROM lifecycle_v1 l LEFT JOIN invocations i
  ON (l.invocation_id <> '' AND i.invocation_id = l.invocation_id)
  OR (l.invocation_id = '' AND i.build_id = l.build_id)
ORDER BY l.rowid;
DROP TABLE lifecycle_v1;
";

const COLS: &str = "invocation_id, build_id, source, tenant, instance, created_at_ms, last_seq, \
    event_count, record_count, saw_build_finished, saw_last_message, saw_stream_finished, \
    finalized, complete, incomplete_reason, bytes, journal_bytes, summary, deleted";

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let ctx = || format!("opening {}", path.display());
    let conn = Connection::open(path).map_err(StoreError::index(ctx()))?;
    // One writer per store directory is enforced by `FsStore::open` (a lock file taken
    // before this); readers (`FsStore::open_read_only`) share the database through WAL.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(StoreError::index(ctx()))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(StoreError::index(ctx()))?;
    // The journals are the source of truth; a lost index commit is repaired at open.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(StoreError::index(ctx()))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::index(ctx()))?;
    if version > SCHEMA_VERSION {
        let dir = path.parent().unwrap_or(path).to_path_buf();
        return Err(StoreError::NoStore {
            dir,
            reason: format!(
                "its index has schema version {version}, newer than this build ({SCHEMA_VERSION}); use the newer proof"
            ),
        });
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(StoreError::index("starting the index schema update"))?;
    if version == 1 {
        tx.execute_batch(MIGRATE_1_TO_2).map_err(StoreError::index(
            "migrating the index schema from version 1",
        ))?;
    }
    tx.execute_batch(SCHEMA)
        .map_err(StoreError::index("creating the index schema"))?;
    if version == 1 {
        tx.execute_batch(MIGRATE_1_TO_2_COPY)
            .map_err(StoreError::index(
                "migrating the lifecycle rows of version 1",
            ))?;
    }
    tx.commit()
        .map_err(StoreError::index("committing the index schema"))?;
    Ok(conn)
}

/// A read-only connection beside the writer: WAL lets it read committed transactions
/// while the writer appends. It never writes, checkpoints or changes the schema.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let ctx = || format!("opening {} read-only", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(StoreError::index(ctx()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(StoreError::index(ctx()))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::index(ctx()))?;
    if version != SCHEMA_VERSION {
        let dir = path.parent().unwrap_or(path).to_path_buf();
        return Err(StoreError::NoStore {
            dir,
            reason: format!(
                "its index has schema version {version}, this build reads {SCHEMA_VERSION} (open it once for writing, e.g. `proof serve`, to migrate it)"
            ),
        });
    }
    Ok(conn)
}

/// Runs `f` with `synchronous=FULL`, for the few writes the journal cannot repair
/// (finalization, summaries, lifecycle, deletion tombstones).
pub(crate) fn with_full_sync<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(StoreError::index("switching to synchronous=FULL"))?;
    let r = f(conn);
    let back = conn
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(StoreError::index("switching back to synchronous=NORMAL"));
    let v = r?;
    back?;
    Ok(v)
}

pub(crate) struct Row_ {
    pub meta: InvocationMeta,
    pub state: InvocationState,
    pub summary: Option<String>,
    pub deleted: bool,
}

fn i(v: u64) -> i64 {
    v as i64
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Row_> {
    let source: String = r.get(2)?;
    let u = |idx: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(idx)? as u64) };
    Ok(Row_ {
        meta: InvocationMeta {
            invocation_id: r.get(0)?,
            build_id: r.get(1)?,
            source: InvocationSource::parse(&source).unwrap_or(InvocationSource::Bes),
            tenant: r.get(3)?,
            instance: r.get(4)?,
            created_at_ms: r.get(5)?,
        },
        state: InvocationState {
            last_seq: u(6)?,
            event_count: u(7)?,
            record_count: u(8)?,
            saw_build_finished: r.get(9)?,
            saw_last_message: r.get(10)?,
            saw_stream_finished: r.get(11)?,
            finalized: r.get(12)?,
            complete: r.get(13)?,
            incomplete_reason: r.get(14)?,
            bytes: u(15)?,
            journal_bytes: u(16)?,
        },
        summary: r.get(17)?,
        deleted: r.get(18)?,
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<Row_>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM invocations WHERE invocation_id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], from_row).optional())
    .map_err(StoreError::index(format!("reading invocation {id:?}")))
}

pub(crate) fn insert(
    conn: &Connection,
    meta: &InvocationMeta,
    state: &InvocationState,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO invocations (invocation_id, build_id, source, tenant, instance, \
         created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            meta.invocation_id,
            meta.build_id,
            meta.source.as_str(),
            meta.tenant,
            meta.instance,
            meta.created_at_ms
        ],
    )
    .map_err(StoreError::index(format!(
        "inserting invocation {:?}",
        meta.invocation_id
    )))?;
    update_state(conn, &meta.invocation_id, state)
}

/// Writes the journal-derived part of the state (and the finalization fields).
pub(crate) fn update_state(
    conn: &Connection,
    id: &str,
    s: &InvocationState,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE invocations SET last_seq=?2, event_count=?3, record_count=?4, \
         saw_build_finished=?5, saw_last_message=?6, saw_stream_finished=?7, finalized=?8, \
         complete=?9, incomplete_reason=?10, bytes=?11, journal_bytes=?12 WHERE invocation_id=?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            id,
            i(s.last_seq),
            i(s.event_count),
            i(s.record_count),
            s.saw_build_finished,
            s.saw_last_message,
            s.saw_stream_finished,
            s.finalized,
            s.complete,
            s.incomplete_reason,
            i(s.bytes),
            i(s.journal_bytes)
        ])
    })
    .map_err(StoreError::index(format!("updating state of {id:?}")))?;
    Ok(())
}

pub(crate) fn set_summary(conn: &Connection, id: &str, summary: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE invocations SET summary=?2 WHERE invocation_id=?1",
        params![id, summary],
    )
    .map_err(StoreError::index(format!("storing the summary of {id:?}")))?;
    Ok(())
}

pub(crate) fn set_deleted(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE invocations SET deleted=1 WHERE invocation_id=?1",
        [id],
    )
    .map_err(StoreError::index(format!("marking {id:?} deleted")))?;
    Ok(())
}

pub(crate) fn remove(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM invocations WHERE invocation_id=?1", [id])
        .and_then(|_| conn.execute("DELETE FROM lifecycle WHERE invocation_id=?1", [id]))
        .and_then(|_| conn.execute("DELETE FROM retention WHERE invocation_id=?1", [id]))
        .map_err(StoreError::index(format!("removing {id:?}")))?;
    Ok(())
}

/// The retention tombstone of `id`, if its journal was removed.
pub(crate) fn removed(conn: &Connection, id: &str) -> Result<Option<JournalRemoved>, StoreError> {
    conn.prepare_cached(
        "SELECT removed_at_ms, freed_bytes, proof_file FROM retention WHERE invocation_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([id], |r| {
            Ok(JournalRemoved {
                at_ms: r.get(0)?,
                freed_bytes: r.get::<_, i64>(1)? as u64,
                proof_file: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(StoreError::index(format!(
        "reading the retention tombstone of {id:?}"
    )))
}

/// Writes the retention tombstone of `id` and zeroes its journal length, in one
/// transaction (the caller runs it with `synchronous=FULL`, before removing the file).
pub(crate) fn set_removed(
    conn: &Connection,
    id: &str,
    t: &JournalRemoved,
) -> Result<(), StoreError> {
    let ctx = || format!("recording the retention tombstone of {id:?}");
    let tx = conn
        .unchecked_transaction()
        .map_err(StoreError::index(ctx()))?;
    tx.execute(
        "INSERT OR IGNORE INTO retention (invocation_id, removed_at_ms, freed_bytes, proof_file) \
         VALUES (?1, ?2, ?3, ?4)",
        params![id, t.at_ms, i(t.freed_bytes), t.proof_file],
    )
    .and_then(|_| {
        tx.execute(
            "UPDATE invocations SET journal_bytes = 0 WHERE invocation_id = ?1",
            [id],
        )
    })
    .map_err(StoreError::index(ctx()))?;
    tx.commit().map_err(StoreError::index(ctx()))
}

/// Ids of every invocation with a retention tombstone.
pub(crate) fn removed_ids(
    conn: &Connection,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut st = conn
        .prepare("SELECT invocation_id FROM retention")
        .map_err(StoreError::index("listing retention tombstones"))?;
    let ids = st
        .query_map([], |r| r.get(0))
        .and_then(|it| it.collect::<rusqlite::Result<_>>())
        .map_err(StoreError::index("listing retention tombstones"))?;
    Ok(ids)
}

/// (id, finalized, journal_bytes, deleted) of every row.
pub(crate) fn brief_all(conn: &Connection) -> Result<Vec<(String, bool, u64, bool)>, StoreError> {
    let mut st = conn
        .prepare("SELECT invocation_id, finalized, journal_bytes, deleted FROM invocations")
        .map_err(StoreError::index("listing invocations for recovery"))?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?))
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::index("listing invocations for recovery"))?;
    Ok(rows)
}

/// Records one lifecycle event of `tenant` (see `Store::record_lifecycle`): refused if
/// the invocation exists for another tenant; pending rows are capped per tenant at `cap`.
pub(crate) fn insert_lifecycle(
    conn: &Connection,
    build_id: &str,
    invocation_id: Option<&str>,
    tenant: Option<&str>,
    ev: &LifecycleEvent,
    now_ms: i64,
    cap: usize,
) -> Result<(), StoreError> {
    let (attempt, status, at) = match ev {
        LifecycleEvent::BuildEnqueued { at_ms } => (None, None, *at_ms),
        LifecycleEvent::InvocationAttemptStarted {
            attempt_number,
            at_ms,
        } => (Some(i(*attempt_number)), None, *at_ms),
        LifecycleEvent::InvocationAttemptFinished { status, at_ms }
        | LifecycleEvent::BuildFinished { status, at_ms } => (None, Some(status.as_str()), *at_ms),
    };
    let ctx = || {
        format!(
            "recording lifecycle event {} of build {build_id:?}",
            ev.kind()
        )
    };
    let writer = tenant.unwrap_or("");
    let tx = conn
        .unchecked_transaction()
        .map_err(StoreError::index(ctx()))?;
    let pending = match invocation_id {
        Some(id) => {
            let owner: Option<Option<String>> = tx
                .query_row(
                    "SELECT tenant FROM invocations WHERE invocation_id = ?1 AND deleted = 0",
                    [id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::index(ctx()))?;
            match owner {
                Some(owner) => {
                    crate::check_owner(id, owner.as_deref(), tenant)?;
                    false
                }
                None => true,
            }
        }
        None => !tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM invocations WHERE build_id = ?1 \
                 AND COALESCE(tenant, '') = ?2 AND deleted = 0)",
                params![build_id, writer],
                |r| r.get::<_, bool>(0),
            )
            .map_err(StoreError::index(ctx()))?,
    };
    let added = tx
        .execute(
            "INSERT OR IGNORE INTO lifecycle \
             (build_id, invocation_id, kind, attempt, status, at_ms, tenant, pending) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                build_id,
                invocation_id.unwrap_or(""),
                ev.kind(),
                attempt,
                status,
                at.unwrap_or(now_ms),
                writer,
                pending
            ],
        )
        .map_err(StoreError::index(ctx()))?;
    if pending && added > 0 {
        bound_pending(&tx, writer, cap).map_err(StoreError::index(ctx()))?;
    }
    tx.commit().map_err(StoreError::index(ctx()))
}

/// Keeps at most `cap` pending lifecycle rows of `tenant`: rows whose invocation (or
/// build) has appeared since are no longer pending; of the rest the oldest are dropped.
fn bound_pending(conn: &Connection, tenant: &str, cap: usize) -> rusqlite::Result<()> {
    let count = |c: &Connection| -> rusqlite::Result<i64> {
        c.query_row(
            "SELECT count(*) FROM lifecycle WHERE pending = 1 AND tenant = ?1",
            [tenant],
            |r| r.get(0),
        )
    };
    let cap = cap as i64;
    if count(conn)? <= cap {
        return Ok(());
    }
    conn.execute(
        "UPDATE lifecycle SET pending = 0 WHERE pending = 1 AND tenant = ?1 AND ( \
           (invocation_id <> '' AND EXISTS (SELECT 1 FROM invocations i \
              WHERE i.invocation_id = lifecycle.invocation_id \
              AND COALESCE(i.tenant, '') = ?1 AND i.deleted = 0)) \
        OR (invocation_id = '' AND EXISTS (SELECT 1 FROM invocations i \
              WHERE i.build_id = lifecycle.build_id \
              AND COALESCE(i.tenant, '') = ?1 AND i.deleted = 0)))",
        [tenant],
    )?;
    let over = count(conn)? - cap;
    if over > 0 {
        conn.execute(
            "DELETE FROM lifecycle WHERE rowid IN (SELECT rowid FROM lifecycle \
             WHERE pending = 1 AND tenant = ?1 ORDER BY rowid LIMIT ?2)",
            params![tenant, over],
        )?;
    }
    Ok(())
}

/// Lifecycle rows of the invocation itself, plus build-level rows of its build
/// (and rows recorded with the build id only, before the invocation id was known).
pub(crate) fn lifecycle_info(
    conn: &Connection,
    build_id: Option<&str>,
    invocation_id: &str,
    tenant: Option<&str>,
) -> Result<LifecycleInfo, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT kind, attempt, status, at_ms FROM lifecycle \
             WHERE tenant = ?3 AND (invocation_id = ?1 OR (build_id = ?2 AND invocation_id = '')) \
             ORDER BY invocation_id DESC",
        )
        .map_err(StoreError::index("reading lifecycle"))?;
    let rows = st
        .query_map(
            params![invocation_id, build_id, tenant.unwrap_or("")],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::index("reading lifecycle"))?;
    let mut info = LifecycleInfo::default();
    // Rows carrying the invocation id sort first and win over build-only rows.
    for (kind, attempt, status, at) in rows {
        match kind.as_str() {
            "build_enqueued" if info.build_enqueued_at_ms.is_none() => {
                info.build_enqueued_at_ms = Some(at)
            }
            "attempt_started" if info.attempt_started_at_ms.is_none() => {
                info.attempt_started_at_ms = Some(at);
                info.attempt_number = attempt.map(|a| a as u64);
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

pub(crate) fn to_record(conn: &Connection, row: Row_) -> Result<InvocationRecord, StoreError> {
    let summary = match row.summary {
        Some(s) => Some(serde_json::from_str(&s).map_err(|source| StoreError::Json {
            context: format!("the summary of {:?}", row.meta.invocation_id),
            source,
        })?),
        None => None,
    };
    let lifecycle = lifecycle_info(
        conn,
        row.meta.build_id.as_deref(),
        &row.meta.invocation_id,
        row.meta.tenant.as_deref(),
    )?;
    let journal_removed = removed(conn, &row.meta.invocation_id)?;
    Ok(InvocationRecord {
        meta: row.meta,
        state: row.state,
        summary,
        lifecycle,
        journal_removed,
    })
}

pub(crate) fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<Row_>, StoreError> {
    use rusqlite::types::Value;
    let (filter, params) = f.to_sql(|n| format!("?{n}"));
    let sql = format!("SELECT {COLS} FROM invocations WHERE deleted = 0{filter}");
    let args = params.into_iter().map(|p| match p {
        SqlParam::Text(t) => Value::Text(t),
        SqlParam::Int(i) => Value::Integer(i),
    });
    let mut st = conn
        .prepare(&sql)
        .map_err(StoreError::index("listing invocations"))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), from_row)
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::index("listing invocations"))?;
    Ok(rows)
}
