//! [`CountingStore`]: a real store that counts how often each journal is read, for tests
//! that a path reads a journal no more often than it must.

use std::sync::atomic::{AtomicUsize, Ordering};

use proof_store::{
    AppendFlags, InvocationMeta, InvocationRecord, InvocationState, JournalRecord, LifecycleEvent,
    ListFilter, RecordIter, Store, StoreError,
};

/// Every call goes to `inner`; [`Store::read`] calls are counted.
pub struct CountingStore<S> {
    pub inner: S,
    reads: AtomicUsize,
}

impl<S: Store> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            reads: AtomicUsize::new(0),
        }
    }

    /// How many times a journal was opened for reading so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl<S: Store> Store for CountingStore<S> {
    fn open_invocation(&self, meta: &InvocationMeta) -> Result<InvocationState, StoreError> {
        self.inner.open_invocation(meta)
    }

    fn append(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.inner.append(invocation_id, records, flags)
    }

    fn append_as(
        &self,
        meta: &InvocationMeta,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.inner.append_as(meta, records, flags)
    }

    fn append_unsynced(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.inner.append_unsynced(invocation_id, records, flags)
    }

    fn sync(&self, invocation_id: &str) -> Result<(), StoreError> {
        self.inner.sync(invocation_id)
    }

    fn state(&self, invocation_id: &str) -> Result<Option<InvocationState>, StoreError> {
        self.inner.state(invocation_id)
    }

    fn read(&self, invocation_id: &str) -> Result<RecordIter, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(invocation_id)
    }

    fn mark_complete(
        &self,
        invocation_id: &str,
        complete: bool,
        reason: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner
            .mark_complete(invocation_id, complete, reason, summary)
    }

    fn record_lifecycle(
        &self,
        build_id: &str,
        invocation_id: Option<&str>,
        tenant: Option<&str>,
        event: LifecycleEvent,
    ) -> Result<(), StoreError> {
        self.inner
            .record_lifecycle(build_id, invocation_id, tenant, event)
    }

    fn get(&self, invocation_id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        self.inner.get(invocation_id)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<InvocationRecord>, StoreError> {
        self.inner.list(filter)
    }

    fn delete(&self, invocation_id: &str) -> Result<(), StoreError> {
        self.inner.delete(invocation_id)
    }

    fn exclusive(
        &self,
        invocation_id: &str,
        f: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        self.inner.exclusive(invocation_id, f)
    }

    fn release(&self, invocation_id: &str) {
        self.inner.release(invocation_id)
    }

    fn remove_journal(
        &self,
        invocation_id: &str,
        proof_file: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.inner.remove_journal(invocation_id, proof_file, now_ms)
    }
}
