//! Durable per-invocation storage for the rbe-proof BES backend.
//!
//! The [`Store`] trait is the seam between the gRPC server and storage. [`FsStore`] is the
//! embedded default: one append-only, checksummed, zstd-framed journal file per invocation
//! (the source of truth) plus a derived SQLite index. See `docs/store.md`.
//!
//! The API is synchronous; async callers use `spawn_blocking` or a writer thread.

mod error;
mod fs;
mod index;
pub mod journal;
mod types;
pub mod vfs;

pub use error::StoreError;
pub use fs::{BackupReport, FsStore, RecoveryReport, TornTail};
pub use types::{
    check_owner, validate_invocation_id, AppendFlags, InvocationMeta, InvocationRecord,
    InvocationSource, InvocationState, JournalRecord, JournalRemoved, LifecycleEvent,
    LifecycleInfo, ListCursor, ListFilter, RecordKind, SqlParam, MAX_INVOCATION_ID_LEN,
};
pub use vfs::{RealFs, Vfs, VfsFile};

/// The largest event (record payload) any store must accept: the one
/// event-size limit of rbe-proof. The gRPC server's message limit is derived
/// from it, and every [`Store`] refuses bigger records with
/// [`StoreError::RecordTooLarge`].
pub const MAX_EVENT_BYTES: usize = journal::MAX_RECORD_PAYLOAD;

/// Most lifecycle rows one tenant may keep for invocations (and builds) that do not
/// exist (yet): Bazel sends BuildEnqueued and InvocationAttemptStarted before its tool
/// stream opens, so a few rows per build in flight are pending. Past the cap the oldest
/// pending rows of that tenant are dropped.
pub const MAX_PENDING_LIFECYCLE_ROWS: usize = 1024;

/// Iterator over the records of one journal, in sequence order.
pub type RecordIter = Box<dyn Iterator<Item = Result<JournalRecord, StoreError>> + Send>;

/// Storage of invocations: a durable journal of records per invocation plus an index.
pub trait Store: Send + Sync + 'static {
    /// Creates the invocation if it is new; returns the current state either way.
    /// Fails with [`StoreError::TenantMismatch`] if it exists for another tenant.
    fn open_invocation(&self, meta: &InvocationMeta) -> Result<InvocationState, StoreError>;

    /// Durably appends a batch: `records[0].seq == state.last_seq + 1`, consecutive.
    /// Returns only once the data is on stable storage; the caller acks Bazel afterwards.
    /// One call is one group commit (one fsync). An empty batch with flags set stores the
    /// flags; an empty batch without flags is a no-op.
    fn append(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError>;

    /// Appends like [`Store::append`] on behalf of `meta.tenant`, in one step that no
    /// other writer can come between: creates the invocation with `meta` if it does not
    /// exist (its tenant written before any record), and fails with
    /// [`StoreError::TenantMismatch`], storing nothing, if it belongs to another tenant.
    /// The BES backend writes only through this: a stream cannot add to an invocation it
    /// does not own, however it got past admission.
    fn append_as(
        &self,
        meta: &InvocationMeta,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError>;

    /// Appends like [`Store::append`] but may return before the batch is on stable
    /// storage, for a writer that acknowledges nothing until it has called
    /// [`Store::sync`] (a file import). Other readers may not see the batch before then;
    /// a crash may lose it (never half of a frame: recovery cuts at the last whole one).
    /// Every store may simply append durably, which is the default.
    fn append_unsynced(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append(invocation_id, records, flags)
    }

    /// Makes every batch appended so far durable and visible to readers (a no-op when
    /// nothing is pending). [`Store::mark_complete`] does it too.
    fn sync(&self, invocation_id: &str) -> Result<(), StoreError> {
        let _ = invocation_id;
        Ok(())
    }

    /// Current state, `None` if the invocation does not exist.
    fn state(&self, invocation_id: &str) -> Result<Option<InvocationState>, StoreError>;

    /// Streams the journal in sequence order, up to what was durable when `read` was called.
    fn read(&self, invocation_id: &str) -> Result<RecordIter, StoreError>;

    /// Finalizes the invocation: no more appends. `complete == false` records why in `reason`.
    /// Calling it again overwrites the outcome and summary.
    fn mark_complete(
        &self,
        invocation_id: &str,
        complete: bool,
        reason: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Records a lifecycle event written by `tenant` (`None` on a server without
    /// tenants). Events may arrive before the invocation exists or after it is finalized.
    ///
    /// - Fails with [`StoreError::TenantMismatch`], storing nothing, if the invocation
    ///   exists for another tenant.
    /// - Rows belong to the tenant that wrote them: an invocation shows only rows its own
    ///   tenant wrote, so rows another tenant wrote before it existed are never claimed.
    /// - At most one row per (tenant, invocation id, kind), or (tenant, build id, kind)
    ///   for a build-level event (`invocation_id == None`); duplicates are ignored, the
    ///   first one wins.
    /// - Rows no invocation of their tenant matches (yet) are capped at
    ///   [`MAX_PENDING_LIFECYCLE_ROWS`] per tenant; the oldest are dropped first.
    fn record_lifecycle(
        &self,
        build_id: &str,
        invocation_id: Option<&str>,
        tenant: Option<&str>,
        event: LifecycleEvent,
    ) -> Result<(), StoreError>;

    /// Everything known about one invocation.
    fn get(&self, invocation_id: &str) -> Result<Option<InvocationRecord>, StoreError>;

    /// Invocations matching `filter`, newest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<InvocationRecord>, StoreError>;

    /// Removes the invocation and its journal (denied or aborted streams). Idempotent.
    fn delete(&self, invocation_id: &str) -> Result<(), StoreError>;

    /// Runs `f` holding the invocation's exclusive lock for one-time work (finalizing and
    /// signing). At most one caller runs `f` for an id at a time, across every thread and
    /// every process that shares this store; a caller that finds the lock held gets
    /// `Ok(false)` without running `f` (the holder does the work). `f` should re-check the
    /// state: the work may have been done before the lock was taken.
    fn exclusive(
        &self,
        invocation_id: &str,
        f: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<bool, StoreError>;

    /// Hint that no append to this invocation is expected soon (the stream disconnected):
    /// the store may drop cached handles. Appends still work afterwards.
    fn release(&self, invocation_id: &str) {
        let _ = invocation_id;
    }

    /// Retention: removes the journal (every frame) of a finalized invocation and keeps its
    /// record as a tombstone ([`InvocationRecord::journal_removed`], with `proof_file`).
    /// Returns the bytes freed; 0 if the journal was already removed. Fails with
    /// [`StoreError::NotFinalized`] (removing nothing) if the invocation is not finalized.
    /// Crash safe: after a crash the invocation either still has its whole journal or is a
    /// tombstone; it never reads as present with frames missing. Callers hold
    /// [`Store::exclusive`] so that no finalization or signing runs at the same time.
    fn remove_journal(
        &self,
        invocation_id: &str,
        proof_file: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let _ = (invocation_id, proof_file, now_ms);
        Err(StoreError::Unsupported(
            "this store does not support retention".into(),
        ))
    }
}

/// Calls `visit` with every page of the invocations `filter` selects, in list order
/// (newest first), until a page comes back empty; each page starts after the last
/// record of the one before ([`ListCursor::after`]), from `filter.cursor` for the first.
/// Pages hold up to `filter.limit` records (see [`ListFilter::limit`]); invocations
/// added or changed while the walk runs may or may not be visited, none twice.
pub fn for_each_page(
    store: &dyn Store,
    filter: &ListFilter,
    mut visit: impl FnMut(&[InvocationRecord]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut cursor = filter.cursor.clone();
    loop {
        let page = store.list(&ListFilter {
            cursor: cursor.clone(),
            ..filter.clone()
        })?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        cursor = Some(ListCursor::after(last));
        visit(&page)?;
    }
}
