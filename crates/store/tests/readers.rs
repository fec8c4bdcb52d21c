//! Readers beside the writer: `FsStore::open_read_only` on a store that a writer owns.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proof_store::{
    AppendFlags, FsStore, JournalRecord, LifecycleEvent, ListFilter, Store, StoreError,
};
use proof_testkit::fixtures::{meta, read_all, rec, recs};
use serde_json::json;

fn check_prefix(got: &[JournalRecord]) {
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, rec(i as u64 + 1), "record {i}");
    }
}

#[test]
fn a_reader_sees_every_acked_record_while_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(FsStore::open(dir.path()).unwrap());
    writer.open_invocation(&meta("live")).unwrap();
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    assert!(reader.is_read_only() && !writer.is_read_only());
    let acked = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let w = {
        let (writer, acked, reads) = (writer.clone(), acked.clone(), reads.clone());
        std::thread::spawn(move || {
            for i in 0..300u64 {
                if i % 50 == 25 {
                    // However fast fsync is here, let the reader in mid-stream.
                    let seen = reads.load(Ordering::SeqCst);
                    let t = std::time::Instant::now();
                    while reads.load(Ordering::SeqCst) < seen + 2 {
                        assert!(t.elapsed().as_secs() < 60, "the reader stalled");
                        std::thread::yield_now();
                    }
                }
                let st = writer
                    .append("live", &recs(i * 7 + 1, 7), AppendFlags::default())
                    .unwrap();
                // What the server would ack to Bazel now.
                acked.store(st.last_seq, Ordering::SeqCst);
            }
            writer
                .mark_complete("live", true, None, &json!({"event_count": 2100}))
                .unwrap();
        })
    };
    let mut last = 0;
    while !w.is_finished() {
        let acked_before = acked.load(Ordering::SeqCst);
        let got = read_all(&reader, "live");
        assert!(
            got.len() as u64 >= acked_before,
            "the reader saw {} records, {acked_before} were acked before it read",
            got.len()
        );
        assert_eq!(got.len() % 7, 0, "a batch is read whole or not at all");
        assert!(got.len() >= last);
        last = got.len();
        check_prefix(&got);
        let row = reader.get("live").unwrap().unwrap();
        assert!(row.state.last_seq >= acked_before);
        reads.fetch_add(1, Ordering::SeqCst);
    }
    w.join().unwrap();
    assert!(reads.load(Ordering::SeqCst) >= 12);
    let got = read_all(&reader, "live");
    assert_eq!(got.len(), 2100);
    check_prefix(&got);
    let row = reader.get("live").unwrap().unwrap();
    assert!(row.state.finalized && row.state.complete);
    assert_eq!(row.summary, Some(json!({"event_count": 2100})));
    let listed = reader.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.invocation_id, "live");
}

#[test]
fn a_reader_stops_at_the_last_committed_frame_of_a_frame_being_appended() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FsStore::open(dir.path()).unwrap();
    writer.open_invocation(&meta("mid")).unwrap();
    writer
        .append("mid", &recs(1, 5), AppendFlags::default())
        .unwrap();
    writer
        .append("mid", &recs(6, 5), AppendFlags::default())
        .unwrap();
    // The writer is half way through writing the next frame: its first bytes are in the
    // file, the index does not count them yet.
    let next = proof_store::journal::encode_batch(&recs(11, 40), AppendFlags::default()).unwrap();
    let path = writer.journal_path("mid");
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    for cut in [1, 12, 31, next.len() / 2, next.len() - 1] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let before = f.metadata().unwrap().len();
        f.write_all(&next[..cut]).unwrap();
        let got = read_all(&reader, "mid");
        assert_eq!(got.len(), 10, "cut at {cut}");
        check_prefix(&got);
        f.set_len(before).unwrap();
    }
    // The whole frame is in the file but not yet in the index (fsync running): still 10.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&next)
        .unwrap();
    assert_eq!(read_all(&reader, "mid").len(), 10);
}

#[test]
fn a_reader_writes_nothing_and_does_not_hold_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    {
        let w = FsStore::open(dir.path()).unwrap();
        w.open_invocation(&meta("a")).unwrap();
        w.append("a", &recs(1, 3), AppendFlags::default()).unwrap();
    }
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    let read_only = |r: Result<(), StoreError>, what: &str| match r {
        Err(e @ StoreError::ReadOnly { .. }) => {
            assert!(e.to_string().contains("read-only"), "{what}: {e}")
        }
        other => panic!("{what}: expected ReadOnly, got {other:?}"),
    };
    read_only(reader.open_invocation(&meta("b")).map(drop), "open");
    read_only(
        reader
            .append("a", &recs(4, 1), AppendFlags::default())
            .map(drop),
        "append",
    );
    read_only(
        reader.mark_complete("a", true, None, &json!({})),
        "finalize",
    );
    read_only(
        reader.record_lifecycle(
            "build-a",
            Some("a"),
            None,
            LifecycleEvent::BuildEnqueued { at_ms: None },
        ),
        "lifecycle",
    );
    read_only(reader.delete("a"), "delete");
    reader.release("a");

    // A writer starts beside the reader; a second writer is still refused.
    let writer = FsStore::open(dir.path()).unwrap();
    let e = FsStore::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    writer
        .append("a", &recs(4, 2), AppendFlags::default())
        .unwrap();
    let got = read_all(&reader, "a");
    assert_eq!(got.len(), 5);
    check_prefix(&got);
    assert!(!reader.get("a").unwrap().unwrap().state.finalized);
}

#[test]
fn a_reader_of_a_missing_store_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-store");
    let e = FsStore::open_read_only(&missing).unwrap_err();
    assert!(matches!(e, StoreError::NoStore { .. }), "{e}");
    assert!(e.to_string().contains("proof serve --store"), "{e}");
    assert!(!missing.exists());
    std::fs::create_dir(&missing).unwrap();
    let e = FsStore::open_read_only(&missing).unwrap_err();
    assert!(e.to_string().contains("index.sqlite does not exist"), "{e}");
    assert_eq!(std::fs::read_dir(&missing).unwrap().count(), 0);
}

/// A file import's unsynced batches stay invisible to readers (their index row lags) until
/// the writer syncs them; then a reader sees all of them.
#[test]
fn a_reader_sees_unsynced_batches_only_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FsStore::open(dir.path()).unwrap();
    writer.open_invocation(&meta("imp")).unwrap();
    writer
        .append("imp", &recs(1, 10), AppendFlags::default())
        .unwrap();
    writer
        .append_unsynced("imp", &recs(11, 90), AppendFlags::default())
        .unwrap();
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.state("imp").unwrap().unwrap().last_seq, 10);
    let got = read_all(&reader, "imp");
    assert_eq!(got.len(), 10);
    check_prefix(&got);
    writer.sync("imp").unwrap();
    assert_eq!(reader.state("imp").unwrap().unwrap().last_seq, 100);
    let got = read_all(&reader, "imp");
    assert_eq!(got.len(), 100);
    check_prefix(&got);
}
