//! The HTTP side under operations (docs/operations.md): an invocation whose journal
//! retention removed is served from its tombstone (410 where events are needed, the
//! proof still), and `/readyz` follows the drain while `/healthz` stays up.

mod common;

use std::sync::Arc;

use common::*;
use proof_server::Metrics;
use proof_store::{FsStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_served_and_readyz_follows_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let proofs = dir.path().join("proofs");
    let id = store_fixture_with(
        &*store,
        "remote-build",
        None,
        1_795_735_800_000,
        Some(&proof_writer(&proofs, None, None)),
    );
    let proof = proofs.join(format!("{id}.proof.tar"));
    store
        .remove_journal(&id, Some(proof.to_str().unwrap()), 1_795_800_000_000)
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = proof_web::WebConfig {
        store,
        metrics: metrics.clone(),
        classes: Default::default(),
        execlog_dir: None,
        proofs: Some(proofs_config(&proofs)),
    };
    tokio::spawn(proof_web::serve_http(listener, cfg, std::future::pending()));

    // The record and its proof stay.
    let (st, v) = get_json(addr, &format!("/api/v1/invocations/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    let (st, p) = get_json(addr, &format!("/api/v1/invocations/{id}/proof")).await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["state"], "proven", "{p}");
    // What needs the events says they are gone, and why: 410, not a server error.
    for path in [
        format!("/api/v1/invocations/{id}/evidence"),
        format!("/api/v1/invocations/{id}/kpis"),
    ] {
        let (st, v) = get_json(addr, &path).await;
        assert_eq!(st, 410, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("removed by retention"),
            "{path}: {v}"
        );
    }
    let (st, _, page) = get(addr, "/invocations").await;
    assert_eq!(st, 200);
    assert!(page.contains(&id));
    let (st, _, page) = get(addr, &format!("/invocations/{id}")).await;
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("Journal removed by retention"), "{page}");
    // Fleet views and /metrics skip it instead of failing.
    let (st, f) = get_json(addr, "/api/v1/fleet").await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["skipped"][0]["invocation_id"], id.as_str(), "{f}");
    assert_eq!(get(addr, "/metrics").await.0, 200);
    assert_eq!(get(addr, "/fleet").await.0, 200);

    assert_eq!(get(addr, "/readyz").await.0, 200);
    metrics
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (st, _, body) = get(addr, "/readyz").await;
    assert_eq!((st, body.as_str()), (503, "draining\n"));
    assert_eq!(get(addr, "/healthz").await.0, 200);
}
