//! Behaviour of FsStore through the Store trait.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{meta, payload, rec, recs, Rng};
use proof_store::{
    AppendFlags, FsStore, InvocationSource, JournalRecord, LifecycleEvent, ListCursor, ListFilter,
    RecordKind, Store, StoreError,
};
use serde_json::json;

fn read_all(store: &FsStore, id: &str) -> Vec<JournalRecord> {
    store
        .read(id)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn check_records(got: &[JournalRecord], last_seq: u64) {
    assert_eq!(got.len() as u64, last_seq);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, rec(i as u64 + 1));
    }
}

#[test]
fn append_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let st = store.open_invocation(&meta("inv-1")).unwrap();
    assert_eq!(st.last_seq, 0);
    let mut seq = 1;
    for n in [1u64, 5, 64, 3, 200] {
        let st = store
            .append("inv-1", &recs(seq, n), AppendFlags::default())
            .unwrap();
        seq += n;
        assert_eq!(st.last_seq, seq - 1);
    }
    let st = store
        .append(
            "inv-1",
            &[JournalRecord {
                seq,
                kind: RecordKind::StreamFinished,
                payload: Bytes::new(),
            }],
            AppendFlags {
                saw_build_finished: true,
                saw_last_message: true,
                saw_stream_finished: true,
            },
        )
        .unwrap();
    assert!(st.saw_build_finished && st.saw_last_message && st.saw_stream_finished);
    let got = read_all(&store, "inv-1");
    check_records(&got[..seq as usize - 1], seq - 1);
    assert_eq!(got.last().unwrap().kind, RecordKind::StreamFinished);
    let others = (1..seq).filter(|s| s % 10 == 0).count() as u64;
    assert_eq!(st.event_count, seq - 1 - others);
    assert_eq!(st.record_count, seq);
    let bytes: u64 = (1..seq).map(|s| payload(s).len() as u64).sum();
    assert_eq!(st.bytes, bytes);

    // Everything survives a clean restart without any repair.
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.state("inv-1").unwrap().unwrap(), st);
    assert_eq!(read_all(&store, "inv-1"), got);
}

#[test]
fn contiguity_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("c")).unwrap();
    store
        .append("c", &recs(1, 3), AppendFlags::default())
        .unwrap();
    // Gap.
    let e = store
        .append("c", &recs(5, 2), AppendFlags::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::SeqGap {
                expected: 4,
                got: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("resend from seq 4"), "{e}");
    // Resend of stored records.
    let e = store
        .append("c", &recs(3, 2), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(
        e,
        StoreError::SeqGap {
            expected: 4,
            got: 3,
            ..
        }
    ));
    // Not consecutive inside the batch.
    let mut batch = recs(4, 3);
    batch[2].seq = 9;
    let e = store
        .append("c", &batch, AppendFlags::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NonConsecutive {
                index: 2,
                expected: 6,
                got: 9,
                ..
            }
        ),
        "{e}"
    );
    // Nothing of the rejected batches was stored.
    assert_eq!(store.state("c").unwrap().unwrap().last_seq, 3);
    check_records(&read_all(&store, "c"), 3);
    // Unknown invocation.
    let e = store
        .append("nope", &recs(1, 1), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
}

#[test]
fn open_is_idempotent_and_checks_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let mut m = meta("idem");
    m.tenant = Some("acme".into());
    let a = store.open_invocation(&m).unwrap();
    let b = store.open_invocation(&m).unwrap();
    assert_eq!(a, b);
    store
        .append("idem", &recs(1, 4), AppendFlags::default())
        .unwrap();
    assert_eq!(store.open_invocation(&m).unwrap().last_seq, 4);
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.open_invocation(&m).unwrap().last_seq, 4);
    store
        .append("idem", &recs(5, 1), AppendFlags::default())
        .unwrap();
    m.tenant = Some("evil".into());
    // Also while the journal is live (cached) in this process.
    let e = store.open_invocation(&m).unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 1);
}

#[test]
fn invalid_invocation_ids_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let long = "a".repeat(129);
    for id in [
        "",
        ".",
        "..",
        "../etc/passwd",
        "a/b",
        "a\\b",
        ".hidden",
        "a b",
        "é",
        "a\0b",
        long.as_str(),
    ] {
        let e = store.open_invocation(&meta(id)).unwrap_err();
        assert!(
            matches!(e, StoreError::InvalidInvocationId { .. }),
            "{id:?}: {e}"
        );
        assert!(e.to_string().contains("[A-Za-z0-9._-]"), "{e}");
        assert!(matches!(
            store.append(id, &recs(1, 1), AppendFlags::default()),
            Err(StoreError::InvalidInvocationId { .. })
        ));
        assert!(store.state(id).is_err());
        assert!(store.read(id).is_err());
        assert!(store.delete(id).is_err());
    }
    // Boundary cases that are fine.
    let ok = "a".repeat(128);
    for id in [
        ok.as_str(),
        "3f2a1c9e-0b7d-4e55-9d1c-aa55bb66cc77",
        "A.b_c-9",
    ] {
        store.open_invocation(&meta(id)).unwrap();
    }
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
fn empty_append_with_flags_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("e")).unwrap();
    store
        .append("e", &recs(1, 2), AppendFlags::default())
        .unwrap();
    let before = store.state("e").unwrap().unwrap();
    assert_eq!(
        store.append("e", &[], AppendFlags::default()).unwrap(),
        before
    );
    let st = store
        .append(
            "e",
            &[],
            AppendFlags {
                saw_stream_finished: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(st.saw_stream_finished);
    store
        .append("e", &recs(3, 1), AppendFlags::default())
        .unwrap();
    drop(store);
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
fn mark_complete_finalizes() {
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
fn delete_removes_everything() {
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
fn lifecycle_events_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    // Before the stream exists.
    store
        .record_lifecycle(
            "build-L",
            None,
            LifecycleEvent::BuildEnqueued { at_ms: Some(5) },
        )
        .unwrap();
    store
        .record_lifecycle(
            "build-L",
            Some("L"),
            LifecycleEvent::InvocationAttemptStarted {
                attempt_number: 1,
                at_ms: Some(6),
            },
        )
        .unwrap();
    // Duplicate: ignored, first wins.
    store
        .record_lifecycle(
            "build-L",
            Some("L"),
            LifecycleEvent::InvocationAttemptStarted {
                attempt_number: 2,
                at_ms: Some(7),
            },
        )
        .unwrap();
    store.open_invocation(&meta("L")).unwrap();
    store.mark_complete("L", true, None, &json!({})).unwrap();
    // After completion.
    for _ in 0..2 {
        store
            .record_lifecycle(
                "build-L",
                Some("L"),
                LifecycleEvent::InvocationAttemptFinished {
                    status: "COMMAND_SUCCEEDED".into(),
                    at_ms: None,
                },
            )
            .unwrap();
        store
            .record_lifecycle(
                "build-L",
                None,
                LifecycleEvent::BuildFinished {
                    status: "COMMAND_SUCCEEDED".into(),
                    at_ms: Some(9),
                },
            )
            .unwrap();
    }
    let lc = store.get("L").unwrap().unwrap().lifecycle;
    assert_eq!(lc.build_enqueued_at_ms, Some(5));
    assert_eq!(lc.attempt_started_at_ms, Some(6));
    assert_eq!(lc.attempt_number, Some(1));
    assert_eq!(
        lc.attempt_finished_status.as_deref(),
        Some("COMMAND_SUCCEEDED")
    );
    assert!(lc.attempt_finished_at_ms.unwrap() > 1_600_000_000_000);
    assert_eq!(lc.build_finished_at_ms, Some(9));
    // Another invocation of another build sees none of it.
    store.open_invocation(&meta("other")).unwrap();
    assert_eq!(
        store.get("other").unwrap().unwrap().lifecycle,
        Default::default()
    );
    assert!(store
        .record_lifecycle("", None, LifecycleEvent::BuildEnqueued { at_ms: None })
        .is_err());
}

#[test]
fn list_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    for i in 0..30i64 {
        let id = format!("inv-{i:02}");
        let mut m = meta(&id);
        m.tenant = Some(if i % 3 == 0 { "a" } else { "b" }.into());
        // Pairs share a timestamp so the id tie-break is exercised.
        m.created_at_ms = 1000 + i / 2;
        store.open_invocation(&m).unwrap();
        if i % 2 == 0 {
            store
                .mark_complete(&id, true, None, &json!({"i": i}))
                .unwrap();
        } else if i % 5 == 0 {
            store
                .mark_complete(&id, false, Some("aborted"), &json!({}))
                .unwrap();
        }
    }
    let ids = |v: Vec<proof_store::InvocationRecord>| {
        v.into_iter()
            .map(|r| r.meta.invocation_id)
            .collect::<Vec<_>>()
    };
    let all = ids(store.list(&ListFilter::default()).unwrap());
    let mut expect: Vec<_> = (0..30).rev().map(|i| format!("inv-{i:02}")).collect();
    assert_eq!(all, expect);

    let a = ids(store
        .list(&ListFilter {
            tenant: Some("a".into()),
            ..Default::default()
        })
        .unwrap());
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|id| id[4..].parse::<i64>().unwrap() % 3 == 0));

    let done = ids(store
        .list(&ListFilter {
            complete: Some(true),
            ..Default::default()
        })
        .unwrap());
    assert_eq!(done.len(), 15);
    let not_done = ids(store
        .list(&ListFilter {
            complete: Some(false),
            ..Default::default()
        })
        .unwrap());
    assert_eq!(not_done.len(), 15);
    assert!(not_done.contains(&"inv-05".to_string()));

    let both = ids(store
        .list(&ListFilter {
            tenant: Some("b".into()),
            complete: Some(true),
            ..Default::default()
        })
        .unwrap());
    assert_eq!(
        both,
        [
            "inv-28", "inv-26", "inv-22", "inv-20", "inv-16", "inv-14", "inv-10", "inv-08",
            "inv-04", "inv-02"
        ]
    );

    // Offset paging.
    let page2 = ids(store
        .list(&ListFilter {
            limit: 7,
            offset: 7,
            ..Default::default()
        })
        .unwrap());
    assert_eq!(page2, expect[7..14]);

    // Cursor paging visits everything exactly once.
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .list(&ListFilter {
                limit: 4,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = Some(ListCursor::after(page.last().unwrap()));
        seen.extend(ids(page));
    }
    assert_eq!(seen, expect);
    expect.truncate(0);
    assert_eq!(
        store
            .list(&ListFilter {
                tenant: Some("nobody".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
        expect.len()
    );
    let summary = store.get("inv-04").unwrap().unwrap().summary;
    assert_eq!(summary, Some(json!({"i": 4})));
}

#[test]
fn many_invocations_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t as u64 * 7919 + 1);
                let ids: Vec<String> = (0..4).map(|k| format!("t{t}-k{k}")).collect();
                let mut next = [1u64; 4];
                for id in &ids {
                    store.open_invocation(&meta(id)).unwrap();
                }
                for _ in 0..60 {
                    let k = rng.below(4) as usize;
                    let n = rng.below(20) + 1;
                    let st = store
                        .append(&ids[k], &recs(next[k], n), AppendFlags::default())
                        .unwrap();
                    next[k] += n;
                    assert_eq!(st.last_seq, next[k] - 1);
                }
                (ids, next)
            })
        })
        .collect();
    // Several threads append to one shared invocation too: appends are serialized.
    store.open_invocation(&meta("shared")).unwrap();
    let shared: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 50 {
                    let last = store.state("shared").unwrap().unwrap().last_seq;
                    match store.append("shared", &recs(last + 1, 3), AppendFlags::default()) {
                        Ok(_) => done += 1,
                        Err(StoreError::SeqGap { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for s in shared {
        s.join().unwrap();
    }
    for (ids, next) in &results {
        for (id, n) in ids.iter().zip(next) {
            check_records(&read_all(&store, id), n - 1);
        }
    }
    check_records(&read_all(&store, "shared"), 600);
    assert_eq!(store.open_journals(), 33);
    for (ids, _) in &results {
        for id in ids {
            store.release(id);
        }
    }
    store.release("shared");
    assert_eq!(store.open_journals(), 0);
    // Appending after release reopens the journal at the right place.
    store
        .append("shared", &recs(601, 2), AppendFlags::default())
        .unwrap();
    check_records(&read_all(&store, "shared"), 602);
    drop(store);
    let store = FsStore::open(dir.path()).unwrap();
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 33);
}

#[test]
fn large_batches_are_split_into_frames_with_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store.open_invocation(&meta("big")).unwrap();
    // ~10 MB of incompressible-ish payload in one call: several frames, one fsync.
    let mut rng = Rng(42);
    let batch: Vec<JournalRecord> = (1..=2500u64)
        .map(|seq| JournalRecord {
            seq,
            kind: RecordKind::BepEvent,
            payload: Bytes::from((0..4096).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()),
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
fn read_while_appending_sees_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    store.open_invocation(&meta("rw")).unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                store
                    .append("rw", &recs(i * 10 + 1, 10), AppendFlags::default())
                    .unwrap();
            }
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        let got = read_all(&store, "rw");
        assert_eq!(got.len() % 10, 0);
        assert!(got.len() >= last);
        last = got.len();
        check_records(&got, got.len() as u64);
    }
    writer.join().unwrap();
    check_records(&read_all(&store, "rw"), 3000);
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
