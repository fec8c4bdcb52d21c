//! Start-up pass: finalize invocations whose stream finished but whose
//! finalization never ran (the server died after acking the
//! ComponentStreamFinished and before finalizing). Bazel got every ack and
//! will not retry, so nothing else would ever finalize them.

use proof_ingest::{conclude, record_outcome, Finalized};
use proof_store::{ListFilter, Store, StoreError};

/// Called (on a blocking thread) after an invocation was finalized, e.g. to
/// write its proof artifact.
pub trait OnFinalized: Send + Sync + 'static {
    fn on_finalized(&self, store: &dyn Store, finalized: &Finalized);
}

/// Finalizes `invocation_id` once, whichever replica (or thread) gets here first: under
/// the store's exclusive lock, and only if it is not finalized yet, derives the outcome,
/// runs `hook` (`proof serve`: the proof queue, which records a pending-proof marker) and
/// then records the outcome. Returns `None` when another holder is at it or it was already
/// finalized. A crash after the hook and before recording leaves it unfinalized, so the hook
/// runs again next time (an artifact already signed is never replaced).
pub fn finalize_once(
    store: &dyn Store,
    invocation_id: &str,
    hook: Option<&dyn OnFinalized>,
) -> Result<Option<Finalized>, StoreError> {
    let mut out = None;
    store.exclusive(invocation_id, &mut || {
        match store.state(invocation_id)? {
            Some(st) if !st.finalized => {}
            _ => return Ok(()),
        }
        let f = conclude(store, invocation_id)?;
        if let Some(hook) = hook {
            hook.on_finalized(store, &f);
        }
        record_outcome(store, &f)?;
        out = Some(f);
        Ok(())
    })?;
    Ok(out)
}

/// Finalizes every stored invocation that saw its ComponentStreamFinished
/// but is not finalized; returns how many. Streams that did not finish are
/// left alone (Bazel may still resume them).
pub fn finalize_pending(
    store: &dyn Store,
    hook: Option<&dyn OnFinalized>,
) -> Result<usize, StoreError> {
    let mut done = 0;
    let unfinished = ListFilter {
        complete: Some(false),
        limit: 1000,
        ..ListFilter::default()
    };
    proof_store::for_each_page(store, &unfinished, |page| {
        for rec in page {
            if rec.state.saw_stream_finished && !rec.state.finalized {
                if let Some(f) = finalize_once(store, &rec.meta.invocation_id, hook)? {
                    tracing::info!(invocation = %f.invocation_id, complete = f.complete, "finalized a finished stream");
                    done += 1;
                }
            }
        }
        Ok(())
    })?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proof_proto::bes::{build_event::Event, BuildEvent};
    use proof_store::{
        AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, RecordKind,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl OnFinalized for Count {
        fn on_finalized(&self, _: &dyn Store, f: &proof_ingest::Finalized) {
            assert!(f.complete, "{:?}", f.reason);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The remote-build fixture stored as invocation `inv` through the server's path, with
    /// its ComponentStreamFinished when `finish` (a stream that ended but was never
    /// finalized), else left open.
    fn store_fixture_stream(store: &dyn Store, inv: &str, finish: bool) {
        let bin = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bazel-4.2.3/remote-build/bep.bin"
        ))
        .unwrap();
        let events = proof_stream::delimited::split_delimited(&bin, usize::MAX).unwrap();
        store
            .open_invocation(&InvocationMeta {
                invocation_id: inv.into(),
                build_id: None,
                source: InvocationSource::Bes,
                tenant: None,
                instance: None,
                created_at_ms: 1,
            })
            .unwrap();
        let mut recs = JournalRecord::bep_events(events.iter().map(|e| Bytes::copy_from_slice(e)));
        if finish {
            let fin = BuildEvent {
                event_time: None,
                event: Some(Event::ComponentStreamFinished(Default::default())),
            };
            recs.push(JournalRecord {
                seq: recs.len() as u64 + 1,
                kind: RecordKind::StreamFinished,
                payload: Bytes::from(prost::Message::encode_to_vec(&fin)),
            });
        }
        let flags = AppendFlags {
            saw_build_finished: true,
            saw_last_message: true,
            saw_stream_finished: finish,
        };
        store.append(inv, &recs, flags).unwrap();
    }

    #[test]
    fn a_finished_but_unfinalized_stream_is_finalized_once_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let id = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
        for (inv, finish) in [(id, true), ("unfinished-1", false)] {
            store_fixture_stream(&store, inv, finish);
        }
        let hook = Count(AtomicUsize::new(0));
        assert_eq!(finalize_pending(&store, Some(&hook)).unwrap(), 1);
        assert_eq!(hook.0.load(Ordering::SeqCst), 1);
        let rec = store.get(id).unwrap().unwrap();
        assert!(rec.state.finalized && rec.state.complete);
        assert!(
            !store.get("unfinished-1").unwrap().unwrap().state.finalized,
            "an open stream is left alone"
        );
        assert_eq!(
            finalize_pending(&store, Some(&hook)).unwrap(),
            0,
            "nothing twice"
        );
    }

    /// Replicas (here threads) racing to finalize one finished stream: it is finalized,
    /// and its proof signed, exactly once.
    #[test]
    fn racing_finalizers_finalize_and_sign_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let id = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
        store_fixture_stream(store.as_ref(), id, true);
        let hook = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, hook) = (store.clone(), hook.clone());
                std::thread::spawn(move || {
                    finalize_once(store.as_ref(), id, Some(hook.as_ref()))
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        let won = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(won, 1);
        assert_eq!(hook.0.load(Ordering::SeqCst), 1);
        assert!(store.state(id).unwrap().unwrap().finalized);
        assert!(finalize_once(store.as_ref(), id, Some(hook.as_ref()))
            .unwrap()
            .is_none());
    }
}
