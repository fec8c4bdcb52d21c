//! Error type of the store.

use std::path::PathBuf;

/// Everything that can go wrong in a [`crate::Store`] call.
///
/// Messages say what was wrong and, where there is one, what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The invocation id received from the network is not acceptable as a file name.
    #[error("invalid invocation id {id:?}: {reason}; ids must be 1-128 characters of [A-Za-z0-9._-] and must not start with '.'")]
    InvalidInvocationId { id: String, reason: &'static str },

    /// The build id is empty or too long.
    #[error("invalid build id {id:?}: {reason}")]
    InvalidBuildId { id: String, reason: &'static str },

    /// The invocation does not exist (never opened, or deleted).
    #[error("invocation {0:?} not found: call open_invocation before appending or completing it")]
    NotFound(String),

    /// The invocation exists for another tenant: it cannot be opened or appended to.
    #[error("invocation {id:?} already exists for tenant {existing:?}, refusing to open or append to it for tenant {requested:?}")]
    TenantMismatch {
        id: String,
        existing: Option<String>,
        requested: Option<String>,
    },

    /// The first record of a batch does not follow the last stored sequence number.
    #[error("non-contiguous append to invocation {id:?}: expected seq {expected}, batch starts at {got}; resend from seq {expected}")]
    SeqGap { id: String, expected: u64, got: u64 },

    /// Records inside one batch are not consecutive.
    #[error("batch for invocation {id:?} is not consecutive: record {index} has seq {got}, expected {expected}")]
    NonConsecutive {
        id: String,
        index: usize,
        expected: u64,
        got: u64,
    },

    /// One record is larger than a journal frame can hold.
    #[error("record seq {seq} of invocation {id:?} has a {len}-byte payload, more than the {max}-byte limit of one record")]
    RecordTooLarge {
        id: String,
        seq: u64,
        len: usize,
        max: usize,
    },

    /// The invocation was already finalized with `mark_complete`.
    #[error("invocation {0:?} is already finalized (mark_complete was called); it accepts no more records")]
    AlreadyFinalized(String),

    /// A previous write failed and the journal could not be restored to its last good length.
    #[error("journal of invocation {id:?} is in an unknown state after a failed write ({reason}); restart the server so FsStore::open can recover it")]
    Poisoned { id: String, reason: String },

    /// The journal on disk does not decode.
    #[error("journal {path} is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Another process (or another `FsStore` in this process) has the store open for writing.
    #[error("store directory {dir} is in use by another FsStore (another server process?); stop it or use another directory (reading beside it works: FsStore::open_read_only, `proof list`)")]
    Locked { dir: PathBuf },

    /// Retention removed the journal of this invocation; only its tombstone is left.
    #[error("the journal of invocation {id:?} was removed by retention (`proof gc`) at unix ms {at_ms}; its events cannot be read any more{}", match proof_file { Some(p) => format!(" (its signed proof is kept: {p})"), None => String::new() })]
    JournalRemoved {
        id: String,
        at_ms: i64,
        proof_file: Option<String>,
    },

    /// Retention was asked to remove the journal of an invocation that is not finalized.
    #[error("invocation {0:?} is not finalized (its stream may still be open); retention never removes such a journal")]
    NotFinalized(String),

    /// This store does not implement the operation.
    #[error("{0}")]
    Unsupported(String),

    /// A write was asked of a store opened with [`crate::FsStore::open_read_only`].
    #[error("the store at {dir} is open read-only (a reader beside the process that owns it); write through `proof serve`, or stop it and open the store for writing")]
    ReadOnly { dir: PathBuf },

    /// `FsStore::open_read_only` found no usable store in the directory.
    #[error("no store at {dir}: {reason}; check --store (or PROOF_STORE), or create it by starting `proof serve --store {dir}`")]
    NoStore { dir: PathBuf, reason: String },

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The SQLite index failed. The cause is kept type-erased, so callers of this
    /// backend-neutral error never depend on the embedded store's SQLite crate.
    #[error("index database error while {context}: {source}")]
    Index {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The database of a networked store (PostgreSQL) failed or cannot be reached.
    /// Nothing of the failed call was committed; callers retry later.
    #[error("database error while {context}: {source}; check that the database is up and reachable, then retry")]
    Database {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The database's schema is newer than this program knows.
    #[error("{0}")]
    Schema(String),

    /// A JSON column of the index does not decode.
    #[error("index database holds invalid JSON in {context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    pub(crate) fn index(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Index {
            context,
            source: Box::new(source),
        }
    }
}
