//! The `Store` contract: behaviour every store must show through the trait alone.
//!
//! Run against `FsStore` by `crates/store/tests/store.rs` and against `PgStore` by
//! `crates/store-pg/tests/contract.rs`: each calls [`store_contract!`](crate::store_contract)
//! with an expression that makes a fresh [`Backend`], which expands to one `#[test]` per
//! contract function below.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use proof_store::{
    AppendFlags, JournalRecord, LifecycleEvent, ListCursor, ListFilter, RecordKind, Store,
    StoreError,
};
use serde_json::json;

pub use crate::fixtures::{check_records, read_all};
use crate::fixtures::{meta, payload, recs, Rng};

/// Fresh, empty storage for one test.
pub trait Backend {
    /// Opens a handle on this backend's storage. Each call opens anew: the caller drops
    /// the previous handle first (the embedded store allows one owner at a time).
    fn open(&self) -> Arc<dyn Store>;
}

/// One `#[test]` per contract function, for the backend `$make` makes.
#[macro_export]
macro_rules! store_contract {
    ($make:expr) => {
        $crate::store_contract!(@tests $make;
            append_read_round_trip,
            contiguity_is_enforced,
            open_is_idempotent_and_checks_tenant,
            append_as_creates_and_checks_the_owner,
            invalid_invocation_ids_are_rejected,
            empty_append_with_flags_is_stored,
            mark_complete_finalizes,
            delete_removes_everything,
            lifecycle_events_in_any_order,
            lifecycle_is_owner_checked_and_tenant_scoped,
            lifecycle_rows_are_bounded,
            list_filters_and_pages,
            many_invocations_concurrently,
            large_batches_round_trip,
            read_while_appending_sees_a_consistent_prefix,
            exclusive_admits_one_holder_at_a_time,
            unsynced_appends_are_kept_once_synced,
            retention_removes_finalized_journals_only,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        mod contract_tests {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let backend = $make;
                    $crate::contract::$name(&backend);
                }
            )*
        }
    };
}

pub fn append_read_round_trip(b: &dyn Backend) {
    let store = b.open();
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
    let got = read_all(store.as_ref(), "inv-1");
    check_records(&got[..seq as usize - 1], seq - 1);
    assert_eq!(got.last().unwrap().kind, RecordKind::StreamFinished);
    let others = (1..seq).filter(|s| s % 10 == 0).count() as u64;
    assert_eq!(st.event_count, seq - 1 - others);
    assert_eq!(st.record_count, seq);
    let bytes: u64 = (1..seq).map(|s| payload(s).len() as u64).sum();
    assert_eq!(st.bytes, bytes);
    assert!(st.journal_bytes > 0);
    assert_eq!(store.state("inv-1").unwrap().unwrap(), st);

    // Everything survives closing and reopening the store.
    drop(store);
    let store = b.open();
    assert_eq!(store.state("inv-1").unwrap().unwrap(), st);
    assert_eq!(read_all(store.as_ref(), "inv-1"), got);
}

pub fn contiguity_is_enforced(b: &dyn Backend) {
    let store = b.open();
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
    check_records(&read_all(store.as_ref(), "c"), 3);
    // Unknown invocation.
    let e = store
        .append("nope", &recs(1, 1), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
}

pub fn open_is_idempotent_and_checks_tenant(b: &dyn Backend) {
    let store = b.open();
    let mut m = meta("idem");
    m.tenant = Some("acme".into());
    let a = store.open_invocation(&m).unwrap();
    let again = store.open_invocation(&m).unwrap();
    assert_eq!(a, again);
    store
        .append("idem", &recs(1, 4), AppendFlags::default())
        .unwrap();
    assert_eq!(store.open_invocation(&m).unwrap().last_seq, 4);
    drop(store);
    let store = b.open();
    assert_eq!(store.open_invocation(&m).unwrap().last_seq, 4);
    store
        .append("idem", &recs(5, 1), AppendFlags::default())
        .unwrap();
    m.tenant = Some("evil".into());
    // Also right after an append (a store may cache the open invocation).
    let e = store.open_invocation(&m).unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 1);
}

/// [trust 4] finding 1: the store itself refuses another tenant's append, whether the
/// invocation is cached open (live) or only on disk, and the first `append_as` creates
/// the invocation with its tenant.
pub fn append_as_creates_and_checks_the_owner(b: &dyn Backend) {
    let store = b.open();
    let owner = meta_of("owned", "acme");
    let other = meta_of("owned", "evil");
    let st = store
        .append_as(&owner, &recs(1, 3), AppendFlags::default())
        .unwrap();
    assert_eq!(st.last_seq, 3);
    let rec = store.get("owned").unwrap().unwrap();
    assert_eq!(rec.meta.tenant.as_deref(), Some("acme"));
    let e = store
        .append_as(&other, &recs(4, 2), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    // A tenant-less writer is another writer too.
    let e = store
        .append_as(&meta("owned"), &recs(4, 2), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    assert_eq!(store.state("owned").unwrap().unwrap().last_seq, 3);
    drop(store);
    // Reopened: nothing cached, the owner read from storage.
    let store = b.open();
    let e = store
        .append_as(&other, &recs(4, 1), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    assert_eq!(
        store
            .append_as(&owner, &recs(4, 1), AppendFlags::default())
            .unwrap()
            .last_seq,
        4
    );
    check_records(&read_all(store.as_ref(), "owned"), 4);
    // Another tenant cannot create over it either, nor is a fresh id refused.
    let e = store.open_invocation(&other).unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    let fresh = meta_of("fresh", "evil");
    store
        .append_as(&fresh, &recs(1, 1), AppendFlags::default())
        .unwrap();
    assert_eq!(
        store.get("fresh").unwrap().unwrap().meta.tenant.as_deref(),
        Some("evil")
    );
}

pub fn invalid_invocation_ids_are_rejected(b: &dyn Backend) {
    let store = b.open();
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
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 3);
}

pub fn empty_append_with_flags_is_stored(b: &dyn Backend) {
    let store = b.open();
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
    let store = b.open();
    let st = store.state("e").unwrap().unwrap();
    assert!(st.saw_stream_finished && !st.saw_build_finished);
    assert_eq!(st.last_seq, 3);
    check_records(&read_all(store.as_ref(), "e"), 3);
}

pub fn mark_complete_finalizes(b: &dyn Backend) {
    let store = b.open();
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
    // The summary keeps its key order.
    assert_eq!(r.summary.as_ref().unwrap().to_string(), summary.to_string());
    drop(store);
    let store = b.open();
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

pub fn delete_removes_everything(b: &dyn Backend) {
    let store = b.open();
    store.open_invocation(&meta("d")).unwrap();
    store
        .append("d", &recs(1, 5), AppendFlags::default())
        .unwrap();
    store.delete("d").unwrap();
    store.delete("d").unwrap();
    assert!(store.get("d").unwrap().is_none());
    assert!(store.state("d").unwrap().is_none());
    assert!(matches!(store.read("d"), Err(StoreError::NotFound(_))));
    assert!(store.list(&ListFilter::default()).unwrap().is_empty());
    drop(store);
    let store = b.open();
    assert!(store.get("d").unwrap().is_none());
    // The id can be used again, from seq 1.
    assert_eq!(store.open_invocation(&meta("d")).unwrap().last_seq, 0);
    store
        .append("d", &recs(1, 1), AppendFlags::default())
        .unwrap();
    check_records(&read_all(store.as_ref(), "d"), 1);
}

pub fn lifecycle_events_in_any_order(b: &dyn Backend) {
    let store = b.open();
    // Before the stream exists.
    store
        .record_lifecycle(
            "build-L",
            None,
            None,
            LifecycleEvent::BuildEnqueued { at_ms: Some(5) },
        )
        .unwrap();
    store
        .record_lifecycle(
            "build-L",
            Some("L"),
            None,
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
            None,
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
                None,
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
        .record_lifecycle(
            "",
            None,
            None,
            LifecycleEvent::BuildEnqueued { at_ms: None }
        )
        .is_err());
}

fn started(at: i64) -> LifecycleEvent {
    LifecycleEvent::InvocationAttemptStarted {
        attempt_number: 1,
        at_ms: Some(at),
    }
}

fn meta_of(id: &str, tenant: &str) -> proof_store::InvocationMeta {
    proof_store::InvocationMeta {
        tenant: Some(tenant.to_string()),
        ..meta(id)
    }
}

/// A lifecycle event for another tenant's invocation is refused and stores nothing;
/// rows written before the invocation exists belong to the tenant that wrote them,
/// so another tenant cannot pre-record (or block) the lifecycle of a future invocation.
pub fn lifecycle_is_owner_checked_and_tenant_scoped(b: &dyn Backend) {
    let store = b.open();
    store.open_invocation(&meta_of("own", "a")).unwrap();
    let e = store
        .record_lifecycle("build-own", Some("own"), Some("b"), started(1))
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    let e = store
        .record_lifecycle("build-own", Some("own"), None, started(1))
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");
    assert_eq!(
        store.get("own").unwrap().unwrap().lifecycle,
        Default::default(),
        "a refused event is not stored"
    );
    store
        .record_lifecycle("build-own", Some("own"), Some("a"), started(2))
        .unwrap();
    assert_eq!(
        store
            .get("own")
            .unwrap()
            .unwrap()
            .lifecycle
            .attempt_started_at_ms,
        Some(2)
    );

    // Before the invocation exists: tenant b writes first (invocation and build rows),
    // then the real owner a writes its own rows; a's invocation shows only a's rows.
    store
        .record_lifecycle("build-early", Some("early"), Some("b"), started(10))
        .unwrap();
    store
        .record_lifecycle(
            "build-early",
            None,
            Some("b"),
            LifecycleEvent::BuildEnqueued { at_ms: Some(11) },
        )
        .unwrap();
    store
        .record_lifecycle("build-early", Some("early"), Some("a"), started(20))
        .unwrap();
    store.open_invocation(&meta_of("early", "a")).unwrap();
    let lc = store.get("early").unwrap().unwrap().lifecycle;
    assert_eq!(lc.attempt_started_at_ms, Some(20), "{lc:?}");
    assert_eq!(lc.build_enqueued_at_ms, None, "b's build row: {lc:?}");
    // Now that it exists, b is refused outright.
    let e = store
        .record_lifecycle("build-early", Some("early"), Some("b"), started(30))
        .unwrap_err();
    assert!(matches!(e, StoreError::TenantMismatch { .. }), "{e}");

    // Only b wrote rows for "claimed": a's invocation of that id sees none of them.
    store
        .record_lifecycle("build-claimed", Some("claimed"), Some("b"), started(40))
        .unwrap();
    store.open_invocation(&meta_of("claimed", "a")).unwrap();
    assert_eq!(
        store.get("claimed").unwrap().unwrap().lifecycle,
        Default::default()
    );
}

/// At most one row per invocation (or build) and kind, whatever build id a client
/// names; rows of invocations that never appeared are capped per writing tenant at
/// `MAX_PENDING_LIFECYCLE_ROWS`, the oldest dropped first; rows of invocations that
/// exist (even if they appeared after their rows) and other tenants' rows stay.
pub fn lifecycle_rows_are_bounded(b: &dyn Backend) {
    let store = b.open();
    // One row per invocation and kind: a different build id does not add one.
    for (i, build) in ["build-one", "x1", "x2", "x3"].iter().enumerate() {
        store
            .record_lifecycle(build, Some("one"), Some("a"), started(100 + i as i64))
            .unwrap();
    }
    store.open_invocation(&meta_of("one", "a")).unwrap();
    assert_eq!(
        store
            .get("one")
            .unwrap()
            .unwrap()
            .lifecycle
            .attempt_started_at_ms,
        Some(100)
    );

    let cap = proof_store::MAX_PENDING_LIFECYCLE_ROWS;
    // Pending rows: "oldest" never appears; "late" appears after its row; b's row
    // is another tenant's.
    store
        .record_lifecycle("build-oldest", Some("oldest"), Some("a"), started(1))
        .unwrap();
    store
        .record_lifecycle("build-late", Some("late"), Some("a"), started(2))
        .unwrap();
    store
        .record_lifecycle(
            "build-late",
            None,
            Some("a"),
            LifecycleEvent::BuildEnqueued { at_ms: Some(3) },
        )
        .unwrap();
    store
        .record_lifecycle("build-theirs", Some("theirs"), Some("b"), started(4))
        .unwrap();
    store.open_invocation(&meta_of("late", "a")).unwrap();
    // Tenant a floods with rows for invocations that never appear.
    for i in 0..cap + 10 {
        store
            .record_lifecycle(
                "build-flood",
                Some(&format!("flood-{i}")),
                Some("a"),
                started(5),
            )
            .unwrap();
    }
    let newest = format!("flood-{}", cap + 9);
    for (id, tenant) in [("oldest", "a"), ("theirs", "b"), (newest.as_str(), "a")] {
        store.open_invocation(&meta_of(id, tenant)).unwrap();
    }
    assert_eq!(
        store.get("oldest").unwrap().unwrap().lifecycle,
        Default::default(),
        "the oldest pending row was dropped"
    );
    let late = store.get("late").unwrap().unwrap().lifecycle;
    assert_eq!(late.attempt_started_at_ms, Some(2), "{late:?}");
    assert_eq!(late.build_enqueued_at_ms, Some(3), "{late:?}");
    assert_eq!(
        store
            .get("theirs")
            .unwrap()
            .unwrap()
            .lifecycle
            .attempt_started_at_ms,
        Some(4)
    );
    assert_eq!(
        store
            .get(&newest)
            .unwrap()
            .unwrap()
            .lifecycle
            .attempt_started_at_ms,
        Some(5)
    );
}

/// `inv-00` … `inv-29`: tenant `a` for every third, `b` for the others; pairs share a
/// timestamp; the even ones finalized complete, 5, 15 and 25 incomplete.
fn thirty_invocations(store: &dyn Store) {
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
}

fn ids(v: Vec<proof_store::InvocationRecord>) -> Vec<String> {
    v.into_iter().map(|r| r.meta.invocation_id).collect()
}

pub fn list_filters_and_pages(b: &dyn Backend) {
    let store = b.open();
    thirty_invocations(store.as_ref());
    let all = ids(store.list(&ListFilter::default()).unwrap());
    let expect: Vec<_> = (0..30).rev().map(|i| format!("inv-{i:02}")).collect();
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
    let by_build = ids(store
        .list(&ListFilter {
            build_id: Some("build-inv-07".into()),
            ..Default::default()
        })
        .unwrap());
    assert_eq!(by_build, ["inv-07"]);

    check_paging(store.as_ref(), &expect);
    assert!(store
        .list(&ListFilter {
            tenant: Some("nobody".into()),
            ..Default::default()
        })
        .unwrap()
        .is_empty());
    let summary = store.get("inv-04").unwrap().unwrap().summary;
    assert_eq!(summary, Some(json!({"i": 4})));
}

/// Offset and cursor paging over [`thirty_invocations`], listed as `expect`.
fn check_paging(store: &dyn Store, expect: &[String]) {
    // Offset paging.
    let page2 = ids(store
        .list(&ListFilter {
            limit: 7,
            offset: 7,
            ..Default::default()
        })
        .unwrap());
    assert_eq!(page2, expect[7..14]);

    // Cursor paging (`for_each_page`, `ListCursor::after`) visits everything exactly once.
    let mut seen = Vec::new();
    let mut pages = 0;
    let four = ListFilter {
        limit: 4,
        ..Default::default()
    };
    proof_store::for_each_page(store, &four, |page| {
        assert!(page.len() <= 4, "a page of {}", page.len());
        pages += 1;
        seen.extend(ids(page.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, expect);
    assert_eq!(pages, 8);
    // From a cursor: what comes after inv-10 (newest first).
    let mut after = Vec::new();
    let from = ListFilter {
        limit: 4,
        cursor: Some(ListCursor {
            created_at_ms: 1005,
            invocation_id: "inv-10".into(),
        }),
        ..Default::default()
    };
    proof_store::for_each_page(store, &from, |page| {
        after.extend(ids(page.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(after, expect[20..]);
}

pub fn many_invocations_concurrently(b: &dyn Backend) {
    let store = b.open();
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
    // Several threads append to one shared invocation too: appends are serialized,
    // and a batch that no longer follows the stored prefix is refused as a gap.
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
            check_records(&read_all(store.as_ref(), id), n - 1);
        }
    }
    check_records(&read_all(store.as_ref(), "shared"), 600);
    for (ids, _) in &results {
        for id in ids {
            store.release(id);
        }
    }
    store.release("shared");
    // Appending after release continues at the right place.
    store
        .append("shared", &recs(601, 2), AppendFlags::default())
        .unwrap();
    check_records(&read_all(store.as_ref(), "shared"), 602);
    drop(store);
    let store = b.open();
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 33);
    check_records(&read_all(store.as_ref(), "shared"), 602);
}

pub fn large_batches_round_trip(b: &dyn Backend) {
    let store = b.open();
    store.open_invocation(&meta("big")).unwrap();
    // ~10 MB of incompressible payload in one call.
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
    assert!(st.saw_last_message);
    assert!(st.journal_bytes >= 2500 * 4096, "{}", st.journal_bytes);
    assert_eq!(read_all(store.as_ref(), "big"), batch);
    // A single record over the limit is refused with a clear error, storing nothing.
    let huge = JournalRecord {
        seq: 2501,
        kind: RecordKind::Other,
        payload: Bytes::from(vec![0u8; proof_store::journal::MAX_RECORD_PAYLOAD + 1]),
    };
    let e = store
        .append("big", &[huge], AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::RecordTooLarge { .. }), "{e}");
    assert_eq!(store.state("big").unwrap().unwrap(), st);
}

pub fn read_while_appending_sees_a_consistent_prefix(b: &dyn Backend) {
    let store = b.open();
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
        let got = read_all(store.as_ref(), "rw");
        assert_eq!(got.len() % 10, 0);
        assert!(got.len() >= last);
        last = got.len();
        check_records(&got, got.len() as u64);
    }
    writer.join().unwrap();
    check_records(&read_all(store.as_ref(), "rw"), 3000);
}

pub fn exclusive_admits_one_holder_at_a_time(b: &dyn Backend) {
    let store = b.open();
    store.open_invocation(&meta("x")).unwrap();
    // Many threads race for the lock of one invocation, over and over: at no time do
    // two of them run the work, and every round someone does.
    let threads = 6;
    let rounds = 20;
    let inside = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, inside, overlap, ran, barrier) = (
                store.clone(),
                inside.clone(),
                overlap.clone(),
                ran.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let mut mine = 0;
                for _ in 0..rounds {
                    barrier.wait();
                    let got = store
                        .exclusive("x", &mut || {
                            if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                                overlap.store(true, Ordering::SeqCst);
                            }
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            inside.fetch_sub(1, Ordering::SeqCst);
                            ran.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                    mine += got as usize;
                    barrier.wait();
                }
                mine
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(!overlap.load(Ordering::SeqCst), "two holders ran at once");
    assert_eq!(total, ran.load(Ordering::SeqCst));
    assert!(total >= rounds, "{total} runs in {rounds} rounds");
    // Free again afterwards; an error inside is passed on and releases the lock.
    let e = store
        .exclusive("x", &mut || Err(StoreError::NotFound("boom".into())))
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    assert!(store.exclusive("x", &mut || Ok(())).unwrap());
    // Another invocation's lock is independent.
    let nested = store
        .exclusive("x", &mut || {
            assert!(store.exclusive("y", &mut || Ok(())).unwrap());
            assert!(!store.exclusive("x", &mut || Ok(())).unwrap());
            Ok(())
        })
        .unwrap();
    assert!(nested);
}

/// `append_unsynced` (a file import's batches) behaves like `append` for the writer, and
/// `sync` or `mark_complete` leaves everything durable: all of it is there after reopening.
pub fn unsynced_appends_are_kept_once_synced(b: &dyn Backend) {
    let store = b.open();
    for id in ["u-sync", "u-final"] {
        store.open_invocation(&meta(id)).unwrap();
        let st = store
            .append_unsynced(id, &recs(1, 40), AppendFlags::default())
            .unwrap();
        assert_eq!(st.last_seq, 40);
        // A durable append after unsynced ones, then more unsynced ones with flags.
        store
            .append(id, &recs(41, 3), AppendFlags::default())
            .unwrap();
        let flags = AppendFlags {
            saw_build_finished: true,
            saw_last_message: true,
            saw_stream_finished: false,
        };
        let st = store.append_unsynced(id, &recs(44, 57), flags).unwrap();
        assert_eq!(st.last_seq, 100);
        assert!(st.saw_build_finished && st.saw_last_message);
        assert_eq!(store.state(id).unwrap().unwrap(), st);
        // The writer reads its own unsynced batches.
        check_records(&read_all(store.as_ref(), id), 100);
        let e = store
            .append_unsynced(id, &recs(102, 1), AppendFlags::default())
            .unwrap_err();
        assert!(matches!(e, StoreError::SeqGap { .. }), "{e}");
    }
    store.sync("u-sync").unwrap();
    store.sync("u-sync").unwrap();
    store
        .mark_complete("u-final", true, None, &json!({"event_count": 100}))
        .unwrap();
    let before = store.state("u-sync").unwrap().unwrap();
    drop(store);
    let store = b.open();
    assert_eq!(store.state("u-sync").unwrap().unwrap(), before);
    check_records(&read_all(store.as_ref(), "u-sync"), 100);
    check_records(&read_all(store.as_ref(), "u-final"), 100);
    let st = store.state("u-final").unwrap().unwrap();
    assert!(st.finalized && st.complete && st.saw_build_finished && st.last_seq == 100);
    // Syncing an invocation with nothing pending, or one that does not exist, is harmless.
    store.sync("u-sync").unwrap();
    store.sync("nobody").unwrap();
}

pub fn retention_removes_finalized_journals_only(b: &dyn Backend) {
    let store = b.open();
    for id in ["old", "open", "kept"] {
        store.open_invocation(&meta(id)).unwrap();
        store
            .append(id, &recs(1, 40), AppendFlags::default())
            .unwrap();
    }
    let summary = json!({"command": "build", "stream_sha256": "ab"});
    store.mark_complete("old", true, None, &summary).unwrap();
    store.mark_complete("kept", true, None, &summary).unwrap();
    let before = store.get("old").unwrap().unwrap();
    assert!(before.journal_removed.is_none());
    assert!(before.state.journal_bytes > 0);

    // An open (unfinalized) invocation is refused and left whole.
    let e = store.remove_journal("open", None, 5).unwrap_err();
    assert!(matches!(e, StoreError::NotFinalized(_)), "{e}");
    check_records(&read_all(store.as_ref(), "open"), 40);
    assert!(matches!(
        store.remove_journal("nope", None, 5),
        Err(StoreError::NotFound(_))
    ));

    let freed = store
        .remove_journal("old", Some("proofs/old.proof.tar"), 1234)
        .unwrap();
    assert_eq!(
        freed, before.state.journal_bytes,
        "freed = the journal's size"
    );
    // Idempotent: nothing more to free.
    assert_eq!(store.remove_journal("old", None, 9999).unwrap(), 0);
    let check = |store: &dyn Store| {
        let r = store.get("old").unwrap().expect("the tombstone stays");
        let t = r.journal_removed.clone().expect("marked removed");
        assert_eq!(t.at_ms, 1234);
        assert_eq!(t.freed_bytes, freed);
        assert_eq!(t.proof_file.as_deref(), Some("proofs/old.proof.tar"));
        // Meta, outcome and summary stay.
        assert_eq!(r.meta, before.meta);
        assert!(r.state.finalized && r.state.complete);
        assert_eq!(r.state.record_count, 40);
        assert_eq!(r.state.event_count, before.state.event_count);
        assert_eq!(r.state.journal_bytes, 0, "no journal left");
        assert_eq!(r.summary.as_ref(), Some(&summary));
        let e = store.read("old").err().expect("no events any more");
        assert!(matches!(e, StoreError::JournalRemoved { .. }), "{e}");
        assert!(e.to_string().contains("removed by retention"), "{e}");
        // The list shows the tombstone; the others are untouched.
        let all = store.list(&ListFilter::default()).unwrap();
        assert_eq!(all.len(), 3);
        for r in &all {
            assert_eq!(
                r.journal_removed.is_some(),
                r.meta.invocation_id == "old",
                "{}",
                r.meta.invocation_id
            );
        }
        check_records(&read_all(store, "kept"), 40);
        check_records(&read_all(store, "open"), 40);
    };
    check(store.as_ref());
    drop(store);
    let store = b.open();
    check(store.as_ref());
    // The open one still takes appends; delete removes a tombstone too.
    store
        .append("open", &recs(41, 1), AppendFlags::default())
        .unwrap();
    store.delete("old").unwrap();
    assert!(store.get("old").unwrap().is_none());
}
