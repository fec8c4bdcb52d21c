//! Public data types of the store API.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What a journal record holds. Stored as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// One serialized `build_event_stream.BuildEvent` (exactly the bytes of a bep.bin record).
    BepEvent,
    /// End of the BES stream: empty, or the serialized `google.devtools.build.v1.BuildEvent`.
    StreamFinished,
    /// Any other serialized `google.devtools.build.v1.BuildEvent`.
    Other,
}

impl RecordKind {
    /// The byte stored in the journal.
    pub fn as_u8(self) -> u8 {
        match self {
            RecordKind::BepEvent => 1,
            RecordKind::StreamFinished => 2,
            RecordKind::Other => 3,
        }
    }

    /// Inverse of [`RecordKind::as_u8`]; `None` for unknown bytes.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::BepEvent),
            2 => Some(RecordKind::StreamFinished),
            3 => Some(RecordKind::Other),
            _ => None,
        }
    }
}

/// One journal record. Sequence numbers of an invocation start at 1 and are contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub seq: u64,
    pub kind: RecordKind,
    pub payload: Bytes,
}

impl JournalRecord {
    /// One serialized BEP event at `seq`.
    pub fn bep_event(seq: u64, payload: impl Into<Bytes>) -> Self {
        JournalRecord {
            seq,
            kind: RecordKind::BepEvent,
            payload: payload.into(),
        }
    }

    /// A stream's events as an invocation's journal holds them: numbered from 1.
    pub fn bep_events<P: Into<Bytes>>(events: impl IntoIterator<Item = P>) -> Vec<Self> {
        (1..)
            .zip(events)
            .map(|(seq, e)| Self::bep_event(seq, e))
            .collect()
    }
}

/// Where an invocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationSource {
    /// Streamed over the Build Event Service.
    Bes,
    /// Imported from a BEP file.
    File,
}

impl InvocationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationSource::Bes => "bes",
            InvocationSource::File => "file",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "bes" => Some(InvocationSource::Bes),
            "file" => Some(InvocationSource::File),
            _ => None,
        }
    }
}

/// Immutable facts about an invocation, given when it is opened.
/// A copy is written into the journal header so the index can be rebuilt from journals alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationMeta {
    pub invocation_id: String,
    pub build_id: Option<String>,
    pub source: InvocationSource,
    pub tenant: Option<String>,
    /// BES `project_id` / instance name.
    pub instance: Option<String>,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
}

/// Mutable state of an invocation, derived from its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationState {
    /// Highest stored sequence number (0 = nothing stored yet).
    pub last_seq: u64,
    /// Number of [`RecordKind::BepEvent`] records.
    pub event_count: u64,
    /// Number of records of any kind.
    pub record_count: u64,
    pub saw_build_finished: bool,
    pub saw_last_message: bool,
    pub saw_stream_finished: bool,
    /// `mark_complete` was called (with either value of `complete`).
    pub finalized: bool,
    pub complete: bool,
    pub incomplete_reason: Option<String>,
    /// Sum of payload sizes.
    pub bytes: u64,
    /// Size of the journal file (header and frames, compressed).
    pub journal_bytes: u64,
}

/// Flags the caller computed from one batch; stored in the frame header so recovery
/// can recompute them from the journal alone (the store never decodes BEP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendFlags {
    pub saw_build_finished: bool,
    pub saw_last_message: bool,
    pub saw_stream_finished: bool,
}

impl AppendFlags {
    pub(crate) fn to_bits(self) -> u8 {
        (self.saw_build_finished as u8)
            | ((self.saw_last_message as u8) << 1)
            | ((self.saw_stream_finished as u8) << 2)
    }

    pub(crate) fn from_bits(b: u8) -> Self {
        AppendFlags {
            saw_build_finished: b & 1 != 0,
            saw_last_message: b & 2 != 0,
            saw_stream_finished: b & 4 != 0,
        }
    }

    pub fn any(self) -> bool {
        self.to_bits() != 0
    }
}

/// A BES lifecycle event (`google.devtools.build.v1.BuildEvent` of the lifecycle stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LifecycleEvent {
    BuildEnqueued {
        at_ms: Option<i64>,
    },
    InvocationAttemptStarted {
        attempt_number: u64,
        at_ms: Option<i64>,
    },
    InvocationAttemptFinished {
        /// `BuildStatus.Result` name, e.g. "COMMAND_SUCCEEDED".
        status: String,
        at_ms: Option<i64>,
    },
    BuildFinished {
        status: String,
        at_ms: Option<i64>,
    },
}

impl LifecycleEvent {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            LifecycleEvent::BuildEnqueued { .. } => "build_enqueued",
            LifecycleEvent::InvocationAttemptStarted { .. } => "attempt_started",
            LifecycleEvent::InvocationAttemptFinished { .. } => "attempt_finished",
            LifecycleEvent::BuildFinished { .. } => "build_finished",
        }
    }
}

/// What is known about the lifecycle of an invocation and its build.
/// Times are the event times if Bazel sent them, else the time the store received the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleInfo {
    pub build_enqueued_at_ms: Option<i64>,
    pub attempt_started_at_ms: Option<i64>,
    pub attempt_number: Option<u64>,
    pub attempt_finished_at_ms: Option<i64>,
    pub attempt_finished_status: Option<String>,
    pub build_finished_at_ms: Option<i64>,
    pub build_finished_status: Option<String>,
}

/// Everything the index knows about an invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub meta: InvocationMeta,
    pub state: InvocationState,
    /// Set by the caller in `mark_complete` (bazel_version, command, exit_code, stream_sha256, ...).
    pub summary: Option<serde_json::Value>,
    pub lifecycle: LifecycleInfo,
    /// Set once retention removed the journal ([`crate::Store::remove_journal`]): the
    /// record is then a tombstone (meta, state, summary and lifecycle stay; `read` fails
    /// with [`StoreError::JournalRemoved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_removed: Option<JournalRemoved>,
}

/// What retention records when it removes an invocation's journal: the tombstone's own
/// fields (the id, tenant, times and `stream_sha256` stay in the record's meta and summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRemoved {
    /// Unix time in milliseconds when the journal was removed.
    pub at_ms: i64,
    /// Bytes of journal (compressed frames) freed.
    pub freed_bytes: u64,
    /// The signed proof that outlives the journal (as the caller named it), if any.
    pub proof_file: Option<String>,
}

/// Position in a newest-first listing: list strictly older than this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    pub created_at_ms: i64,
    pub invocation_id: String,
}

impl ListCursor {
    /// The cursor that continues a listing after `rec`.
    pub fn after(rec: &InvocationRecord) -> Self {
        ListCursor {
            created_at_ms: rec.meta.created_at_ms,
            invocation_id: rec.meta.invocation_id.clone(),
        }
    }
}

/// Filter for [`crate::Store::list`]. Results are newest first
/// (`created_at_ms` descending, then `invocation_id` descending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    pub tenant: Option<String>,
    pub build_id: Option<String>,
    /// `Some(true)`: only finalized complete ones; `Some(false)`: everything else.
    pub complete: Option<bool>,
    /// At most this many (0 means the default of 100; capped at 1000).
    pub limit: usize,
    /// Skip this many (after the cursor, if any).
    pub offset: usize,
    /// Keyset paging: only invocations after this position.
    pub cursor: Option<ListCursor>,
}

/// One parameter of [`ListFilter::to_sql`], for the backend to bind as its own type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Int(i64),
}

impl ListFilter {
    /// The filter as SQL over the index's `invocations` columns: conditions to append to
    /// a `WHERE` (each starting with ` AND `), then the order, limit and offset. Parameters
    /// are written as `placeholder(n)` (1-based: `?1` for SQLite, `$1` for PostgreSQL) and
    /// returned in that order. The conditions use `finalized` and `complete` as booleans.
    pub fn to_sql(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<SqlParam>) {
        let mut sql = String::new();
        let mut args = Vec::new();
        let mut arg = |v: SqlParam| {
            args.push(v);
            placeholder(args.len())
        };
        if let Some(t) = &self.tenant {
            sql += &format!(" AND tenant = {}", arg(SqlParam::Text(t.clone())));
        }
        if let Some(b) = &self.build_id {
            sql += &format!(" AND build_id = {}", arg(SqlParam::Text(b.clone())));
        }
        match self.complete {
            Some(true) => sql += " AND finalized AND complete",
            Some(false) => sql += " AND NOT (finalized AND complete)",
            None => {}
        }
        if let Some(c) = &self.cursor {
            let at = arg(SqlParam::Int(c.created_at_ms));
            let id = arg(SqlParam::Text(c.invocation_id.clone()));
            sql += &format!(
                " AND (created_at_ms < {at} OR (created_at_ms = {at} AND invocation_id < {id}))"
            );
        }
        let limit = match self.limit {
            0 => 100,
            n => n.min(1000),
        };
        let l = arg(SqlParam::Int(limit as i64));
        let o = arg(SqlParam::Int(self.offset.min(i64::MAX as usize) as i64));
        sql += &format!(" ORDER BY created_at_ms DESC, invocation_id DESC LIMIT {l} OFFSET {o}");
        (sql, args)
    }
}

/// Longest accepted invocation id.
pub const MAX_INVOCATION_ID_LEN: usize = 128;

/// The tenant-ownership rule every store applies: an invocation belongs to the tenant
/// that created it (`None` on a server without tenants), and only that tenant may open
/// or append to it.
pub fn check_owner(
    id: &str,
    existing: Option<&str>,
    requested: Option<&str>,
) -> Result<(), StoreError> {
    if existing == requested {
        return Ok(());
    }
    Err(StoreError::TenantMismatch {
        id: id.to_string(),
        existing: existing.map(str::to_string),
        requested: requested.map(str::to_string),
    })
}

/// Checks an invocation id that came from the network before it is used as a file name.
pub fn validate_invocation_id(id: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidInvocationId {
            id: id.chars().take(160).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_INVOCATION_ID_LEN {
        return bad("it is longer than 128 characters");
    }
    if id.starts_with('.') {
        return bad("it starts with '.'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("it contains a character outside [A-Za-z0-9._-]");
    }
    Ok(())
}

pub(crate) fn validate_build_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidBuildId {
            id: id.into(),
            reason: "it is empty",
        });
    }
    if id.len() > 256 {
        return Err(StoreError::InvalidBuildId {
            id: id.chars().take(160).collect(),
            reason: "it is longer than 256 bytes",
        });
    }
    Ok(())
}
