//! The invocations page shows each invocation's proof status, read from its
//! signed proof (proven remote or not, remote executions claimed, failed
//! checks), next to its build status, on the real fixtures.

mod common;

use std::sync::Arc;

use common::*;
use proof_store::{FsStore, InvocationMeta, InvocationSource, Store};

/// The `<tr>` of the list page that links to `id`.
fn row<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("href=\"/invocations/{id}\""))
        .unwrap_or_else(|| panic!("{id} is not listed: {page}"));
    let start = page[..at].rfind("<tr>").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    &page[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_row_shows_proof_status_and_remote_executions_beside_the_build_status() {
    let s = start().await;
    let (st, _, page) = get(s.addr, "/invocations").await;
    assert_eq!(st, 200);
    assert!(page.contains("<th>Status</th><th>Proof</th>"), "{page}");

    let r = row(&page, REMOTE_BUILD);
    assert!(r.contains(">SUCCESS</span>"), "{r}");
    assert!(r.contains(">PROVEN REMOTE</span>"), "{r}");
    assert!(r.contains("8 remote executions claimed"), "{r}");
    let r = row(&page, LOCAL_ONLY);
    assert!(r.contains(">SUCCESS</span>"), "{r}");
    assert!(r.contains(">NOT PROVEN</span>"), "{r}");
    assert!(r.contains("0 remote executions claimed"), "{r}");
    assert!(r.contains("failed: executor_forced"), "{r}");
    let r = row(&page, FAILING);
    assert!(r.contains(">BUILD_FAILURE</span>"), "{r}");

    // Every row agrees with the invocation's own proof and evidence endpoints.
    for id in [REMOTE_BUILD, REMOTE_TEST, CACHE_HIT, LOCAL_ONLY, FAILING] {
        let (_, p) = get_json(s.addr, &format!("/api/v1/invocations/{id}/proof")).await;
        let (_, ev) = get_json(s.addr, &format!("/api/v1/invocations/{id}/evidence")).await;
        let r = row(&page, id);
        let proven = p["state"] == "proven";
        assert_eq!(r.contains(">PROVEN REMOTE</span>"), proven, "{id}: {r}");
        assert_eq!(r.contains(">NOT PROVEN</span>"), !proven, "{id}: {r}");
        let n = ev["processes"]["remote_executions"].as_u64().unwrap();
        let want = format!("{n} remote execution{}", if n == 1 { "" } else { "s" });
        assert!(r.contains(&want), "{id}: {want} not in {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    store
        .open_invocation(&InvocationMeta {
            invocation_id: "still-streaming".into(),
            build_id: None,
            source: InvocationSource::Bes,
            tenant: None,
            instance: None,
            created_at_ms: 1_795_735_800_000,
        })
        .unwrap();
    let proofs = dir.path().join("proofs");
    std::fs::create_dir_all(&proofs).unwrap();
    let s = serve_store_with(store, dir, None, Some(proofs)).await;
    let (_, _, page) = get(s.addr, "/invocations").await;
    let r = row(&page, "still-streaming");
    assert!(r.contains(">streaming</span>"), "{r}");
    assert!(r.contains("data-proof=\"pending\">PENDING</span>"), "{r}");
}
