//! Behaviour of FsStore: the shared `Store` contract (`proof_testkit::contract`), then what only the
//! embedded store does (recovery reports, journal files, one owner per directory).

use std::sync::Arc;

use bytes::Bytes;
use proof_store::{
    AppendFlags, FsStore, InvocationSource, JournalRecord, ListFilter, RecordKind, Store,
    StoreError,
};
use proof_testkit::contract::{self, Backend};
use proof_testkit::fixtures::{check_records, meta, read_all, recs, Rng};
use serde_json::json;

/// A fresh store directory.
struct FsBackend(tempfile::TempDir);

impl FsBackend {
    fn new() -> Self {
        FsBackend(tempfile::tempdir().unwrap())
    }
}

impl Backend for FsBackend {
    fn open(&self) -> Arc<dyn Store> {
        let store = FsStore::open(self.0.path()).unwrap();
        assert!(
            store.recovery_report().is_clean(),
            "a cleanly closed store needs no repair: {:?}",
            store.recovery_report()
        );
        Arc::new(store)
    }
}

proof_testkit::store_contract!(super::FsBackend::new());

#[test]
fn invalid_ids_create_no_files_outside_the_journals() {
    let backend = FsBackend::new();
    contract::invalid_invocation_ids_are_rejected(&backend);
    let dir = &backend.0;
    // Nothing was created outside the journal directory.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("index.sqlite"))
        .collect();
    names.sort();
    assert_eq!(names, ["journals", "writer.lock"]);
}

#[test]
fn flags_of_an_empty_append_survive_an_index_wipe() {
    let backend = FsBackend::new();
    contract::empty_append_with_flags_is_stored(&backend);
    let dir = &backend.0;
    // Wipe the index: the flags must come back from the journal alone.
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().rebuilt_rows, ["e"]);
    let st = store.state("e").unwrap().unwrap();
    assert!(st.saw_stream_finished && !st.saw_build_finished);
    assert_eq!(st.last_seq, 3);
    check_records(&read_all(&store, "e"), 3);
}

#[test]
fn index_is_rebuilt_from_journals() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let mut expected = Vec::new();
    for i in 0..5u64 {
        let id = format!("inv-{i}");
        let mut m = meta(&id);
        m.tenant = Some(format!("t{}", i % 2));
        m.source = InvocationSource::File;
        m.created_at_ms += i as i64;
        store.open_invocation(&m).unwrap();
        store
            .append(&id, &recs(1, 10 * i + 1), AppendFlags::default())
            .unwrap();
        expected.push((m, store.state(&id).unwrap().unwrap()));
    }
    drop(store);
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().rebuilt_rows.len(), 5);
    for (m, st) in expected {
        let r = store.get(&m.invocation_id).unwrap().unwrap();
        assert_eq!(r.meta, m);
        assert_eq!(r.state, st);
    }
}

#[test]
fn finalized_journals_are_not_rescanned_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("m")).unwrap();
    store
        .append("m", &recs(1, 5), AppendFlags::default())
        .unwrap();
    let summary = json!({"command": "build", "exit_code": 0, "stream_sha256": "ab"});
    store.mark_complete("m", true, None, &summary).unwrap();
    let e = store
        .append("m", &recs(6, 1), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyFinalized(_)), "{e}");
    let r = store.get("m").unwrap().unwrap();
    assert!(r.state.finalized && r.state.complete);
    assert_eq!(r.summary.as_ref(), Some(&summary));
    // Reopen: the finalized journal is not rescanned and everything is kept.
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().scanned, 0);
    assert_eq!(store.get("m").unwrap().unwrap(), r);
    // Re-finalizing as incomplete overwrites the outcome.
    store
        .mark_complete("m", false, Some("no BuildFinished"), &json!({}))
        .unwrap();
    let st = store.state("m").unwrap().unwrap();
    assert!(!st.complete);
    assert_eq!(st.incomplete_reason.as_deref(), Some("no BuildFinished"));
    assert!(matches!(
        store.mark_complete("zz", true, None, &json!({})),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn delete_removes_the_journal_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("d")).unwrap();
    store
        .append("d", &recs(1, 5), AppendFlags::default())
        .unwrap();
    let path = store.journal_path("d");
    assert!(path.exists());
    store.delete("d").unwrap();
    store.delete("d").unwrap();
    assert!(!path.exists());
    assert!(store.get("d").unwrap().is_none());
    assert!(store.state("d").unwrap().is_none());
    assert!(matches!(store.read("d"), Err(StoreError::NotFound(_))));
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert!(store.get("d").unwrap().is_none());
    // The id can be used again, from seq 1.
    assert_eq!(store.open_invocation(&meta("d")).unwrap().last_seq, 0);
    store
        .append("d", &recs(1, 1), AppendFlags::default())
        .unwrap();
}

#[test]
fn live_journals_are_cached_until_released() {
    // The concurrent workload itself is the contract's many_invocations_concurrently;
    // this is what only the embedded store has: one cached file handle per live journal.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let ids: Vec<String> = (0..5).map(|k| format!("live-{k}")).collect();
    for id in &ids {
        store.open_invocation(&meta(id)).unwrap();
        store
            .append(id, &recs(1, 3), AppendFlags::default())
            .unwrap();
    }
    assert_eq!(store.open_journals(), 5);
    for id in &ids {
        store.release(id);
    }
    assert_eq!(store.open_journals(), 0);
    // Appending after release reopens the journal at the right place.
    store
        .append("live-0", &recs(4, 2), AppendFlags::default())
        .unwrap();
    assert_eq!(store.open_journals(), 1);
    check_records(&read_all(&store, "live-0"), 5);
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 5);
}

#[test]
fn large_batches_are_split_into_frames_with_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("big")).unwrap();
    // ~10 MB of incompressible-ish payload in one call: several frames, one fsync.
    let mut rng = Rng(42);
    let batch: Vec<JournalRecord> = (1..=2500u64)
        .map(|seq| {
            let payload: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
            JournalRecord::bep_event(seq, payload)
        })
        .collect();
    let flags = AppendFlags {
        saw_last_message: true,
        ..Default::default()
    };
    let st = store.append("big", &batch, flags).unwrap();
    assert_eq!(st.last_seq, 2500);
    let bytes = std::fs::read(store.journal_path("big")).unwrap();
    let scan = proof_store::journal::scan(&bytes);
    assert!(scan.frames >= 3, "{} frames", scan.frames);
    assert_eq!(scan.error, None);
    assert_eq!(scan.state.last_seq, 2500);
    assert!(scan.state.saw_last_message);
    assert_eq!(read_all(&store, "big"), batch);
    // A single record over the limit is refused with a clear error.
    let huge = JournalRecord {
        seq: 2501,
        kind: RecordKind::Other,
        payload: Bytes::from(vec![0u8; proof_store::journal::MAX_RECORD_PAYLOAD + 1]),
    };
    let e = store
        .append("big", &[huge], AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::RecordTooLarge { .. }), "{e}");
}

#[test]
fn a_store_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let e = FsStore::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    drop(store);
    FsStore::open(dir.path()).unwrap();
}

/// An index of schema version 1 (lifecycle rows without tenant) is migrated in place by
/// the writer: rows take the tenant of their invocation (or of an invocation of their
/// build); rows matching none become pending rows without tenant. A reader refuses the
/// old version with a message saying how to migrate it.
#[test]
fn a_version_1_index_is_migrated_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FsStore::open(dir.path()).unwrap();
        let m = proof_store::InvocationMeta {
            tenant: Some("a".into()),
            ..meta("m")
        };
        store.open_invocation(&m).unwrap();
    }
    {
        let c = rusqlite::Connection::open(dir.path().join("index.sqlite")).unwrap();
        c.execute_batch(
            "DROP TABLE lifecycle;
             CREATE TABLE lifecycle (
                 build_id TEXT NOT NULL, invocation_id TEXT NOT NULL, kind TEXT NOT NULL,
                 attempt INTEGER, status TEXT, at_ms INTEGER NOT NULL,
                 PRIMARY KEY (build_id, invocation_id, kind));
             INSERT INTO lifecycle VALUES ('build-m', 'm', 'attempt_started', 1, NULL, 7);
             INSERT INTO lifecycle VALUES ('other-build', 'm', 'attempt_started', 2, NULL, 8);
             INSERT INTO lifecycle VALUES ('build-m', '', 'build_enqueued', NULL, NULL, 6);
             INSERT INTO lifecycle VALUES ('build-z', 'z', 'attempt_started', 1, NULL, 9);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let e = FsStore::open_read_only(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("schema version 1") && e.to_string().contains("for writing"),
        "{e}"
    );
    let store = FsStore::open(dir.path()).unwrap();
    let lc = store.get("m").unwrap().unwrap().lifecycle;
    assert_eq!(lc.attempt_started_at_ms, Some(7), "{lc:?}");
    assert_eq!(lc.build_enqueued_at_ms, Some(6), "{lc:?}");
    // The orphan row has no tenant: tenant a's invocation "z" does not claim it.
    store
        .open_invocation(&proof_store::InvocationMeta {
            tenant: Some("a".into()),
            ..meta("z")
        })
        .unwrap();
    assert_eq!(
        store.get("z").unwrap().unwrap().lifecycle,
        Default::default()
    );
    drop(store);
    // Migrated once: readers open it now.
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    assert_eq!(
        reader
            .get("m")
            .unwrap()
            .unwrap()
            .lifecycle
            .attempt_started_at_ms,
        Some(7)
    );
}

/// `backup_to` beside a writer: the copy opens clean and holds what the store held at the
/// snapshot (journals up to their recorded length, tombstones, finalization), nothing of
/// a batch appended later, and the writer continues undisturbed.
#[test]
fn backup_copies_a_consistent_snapshot_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    for id in ["done", "open", "gone", "removed"] {
        store.open_invocation(&meta(id)).unwrap();
        store
            .append(id, &recs(1, 30), AppendFlags::default())
            .unwrap();
    }
    store
        .mark_complete("done", true, None, &json!({"stream_sha256": "ab"}))
        .unwrap();
    store
        .mark_complete("removed", true, None, &json!({}))
        .unwrap();
    store
        .remove_journal("removed", Some("p/removed.proof.tar"), 7)
        .unwrap();
    store.delete("gone").unwrap();
    std::fs::create_dir_all(dir.path().join("proofs/.pending")).unwrap();
    std::fs::write(dir.path().join("proofs/done.proof.tar"), b"artifact").unwrap();
    std::fs::write(dir.path().join("proofs/.proof-x.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join("proofs/.pending/open"), b"").unwrap();
    let reader = FsStore::open_read_only(dir.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("backup");
    let rep = reader.backup_to(&dest).unwrap();
    // The writer goes on; the copy does not see it.
    store
        .append("open", &recs(31, 5), AppendFlags::default())
        .unwrap();
    assert_eq!(
        (
            rep.invocations,
            rep.journals,
            rep.tombstones,
            rep.proof_files
        ),
        (3, 2, 1, 2),
        "{rep:?}"
    );
    assert!(
        reader.backup_to(&dest).is_err(),
        "a non-empty destination is refused"
    );
    let copy = FsStore::open(&dest).unwrap();
    assert!(
        copy.recovery_report().is_clean(),
        "{:?}",
        copy.recovery_report()
    );
    check_records(&read_all(&copy, "done"), 30);
    check_records(&read_all(&copy, "open"), 30);
    assert!(copy.get("done").unwrap().unwrap().state.complete);
    assert!(!copy.state("open").unwrap().unwrap().finalized);
    assert!(copy.get("gone").unwrap().is_none());
    let t = copy
        .get("removed")
        .unwrap()
        .unwrap()
        .journal_removed
        .unwrap();
    assert_eq!(t.proof_file.as_deref(), Some("p/removed.proof.tar"));
    assert!(matches!(
        copy.read("removed"),
        Err(StoreError::JournalRemoved { .. })
    ));
    assert!(dest.join("proofs/done.proof.tar").is_file());
    assert!(dest.join("proofs/.pending/open").is_file());
    assert!(!dest.join("proofs/.proof-x.tmp").exists());
    // The copy takes the stream's next batch (it resumes there).
    copy.append("open", &recs(31, 5), AppendFlags::default())
        .unwrap();
    drop(copy);
}
