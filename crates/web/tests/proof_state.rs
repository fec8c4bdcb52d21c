//! The proof state the pages, the API and the fleet view show comes from the
//! signed proof (`PROOFS/<id>.proof.tar`, verified as `proof verify` does),
//! never from what the stream claims: a stream whose claims pass every
//! client-side check is still NOT PROVEN when its signed proof fails (here:
//! signed by the server's proof writer with an executor that cannot be
//! reached, so `executor_attested` fails closed), PENDING while it has no
//! proof yet, NO PROOF when it ended incomplete. Real Bazel 4.2.3 fixtures.

mod common;

use std::sync::Arc;

use common::*;
use proof_server::Metrics;
use proof_store::{FsStore, InvocationMeta, InvocationSource, Store};
use sha2::Digest;

/// The `<tr>` of the list page that links to `id`.
fn row<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("href=\"/invocations/{id}\""))
        .unwrap_or_else(|| panic!("{id} is not listed: {page}"));
    let start = page[..at].rfind("<tr>").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    &page[start..end]
}

/// The "Proof status" box of an invocation page.
fn proof_box(page: &str) -> &str {
    let start = page.find("id=\"proof\"").expect("a proof box");
    let end = start + page[start..].find("</div>").unwrap();
    &page[start..end]
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn open_stream(store: &dyn Store, id: &str, events: Vec<Vec<u8>>) {
    store
        .open_invocation(&InvocationMeta {
            invocation_id: id.into(),
            build_id: None,
            source: InvocationSource::Bes,
            tenant: None,
            instance: None,
            created_at_ms: 1_795_735_900_000,
        })
        .unwrap();
    store
        .append(
            id,
            &proof_store::JournalRecord::bep_events(events),
            proof_store::AppendFlags::default(),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surface_shows_the_signed_verdict_not_the_streams_claims() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let proofs = dir.path().join("proofs");
    let metrics = Arc::new(Metrics::default());
    // remote-build claims 8 remote executions on a forced, pinned executor:
    // every client-side check passes. Its proof is signed by the server's
    // writer with --executor pointing at nothing: executor_attested fails.
    let unreachable = format!("grpc://127.0.0.1:{}", closed_port());
    let writer = proof_writer(&proofs, Some(metrics.clone()), Some(&unreachable));
    let t0 = 1_795_735_800_000;
    store_fixture_with(&*store, "remote-build", None, t0, Some(&writer));
    // remote-test: complete, claims pass, no proof signed (yet).
    store_fixture(&*store, "remote-test", None, t0 + 1000);
    // local-only, cut short and finalized: incomplete, no proof.
    let mut cut = fixture_events("local-only");
    cut.truncate(30);
    store_events(&*store, "cut-short", None, t0 + 2000, &cut);
    // remote-build's first 20 events under another id, still streaming.
    let mut live = fixture_events("remote-build");
    live.truncate(20);
    open_stream(&*store, "still-open", live);

    // The writer counted the verdict of what it signed.
    assert_eq!(Metrics::get(&metrics.proofs_signed_fail), 1);
    assert_eq!(Metrics::get(&metrics.proofs_signed_pass), 0);
    let failures = metrics.proof_check_failures();
    assert!(
        failures.contains(&("executor_attested".to_string(), 1)),
        "{failures:?}"
    );
    let s = serve_store_with(store, dir, None, Some(proofs.clone())).await;

    // JSON: the list and the invocation carry the proof state.
    let (_, list) = get_json(s.addr, "/api/v1/invocations").await;
    let by_id = |id: &str| {
        list["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["invocation_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .clone()
    };
    let forged = by_id(REMOTE_BUILD);
    assert_eq!(forged["proof"]["state"], "not proven", "{forged}");
    assert!(forged["proof"]["failed_checks"]
        .as_array()
        .unwrap()
        .contains(&"executor_attested".into()));
    assert!(forged["proof"].get("checks").is_none(), "lists omit checks");
    assert_eq!(by_id(REMOTE_TEST)["proof"]["state"], "pending");
    let cut = by_id("cut-short");
    assert_eq!(cut["proof"]["state"], "no proof", "{cut}");
    assert!(
        cut["proof"]["reason"]
            .as_str()
            .unwrap()
            .contains("ended incomplete"),
        "{cut}"
    );
    assert_eq!(by_id("still-open")["proof"]["state"], "pending");

    let (_, one) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}")).await;
    let p = &one["proof"];
    assert_eq!(p["state"], "not proven");
    let check = |name: &str| {
        p["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {p}"))
            .clone()
    };
    assert_eq!(check("executor_attested")["ok"], false);
    assert!(
        check("executor_attested")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{unreachable} could not be asked")),
        "{p}"
    );
    for name in [
        "signature",
        "rederived",
        "executor_forced",
        "remote_executions",
    ] {
        assert_eq!(check(name)["ok"], true, "{name}: {p}");
    }
    // The stream's own claims pass; they are labelled, and decide nothing.
    let (_, pr) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}/proof")).await;
    assert_eq!(pr["state"], "not proven");
    assert_eq!(pr["client_claims"]["claims_pass"], true, "{pr}");

    // The artifact is served, with the digest the API names.
    let (st, head, bytes) = get_bytes(
        s.addr,
        &format!("/api/v1/invocations/{REMOTE_BUILD}/artifact"),
    )
    .await;
    assert_eq!(st, 200);
    assert!(head.contains("content-type: application/x-tar"), "{head}");
    assert!(
        head.contains(&format!("filename=\"{REMOTE_BUILD}.proof.tar\"")),
        "{head}"
    );
    assert_eq!(
        bytes,
        std::fs::read(proofs.join(format!("{REMOTE_BUILD}.proof.tar"))).unwrap()
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        p["artifact_sha256"].as_str().unwrap()
    );
    let (st, v) = get_json(
        s.addr,
        &format!("/api/v1/invocations/{REMOTE_TEST}/artifact"),
    )
    .await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("\"pending\""), "{v}");

    // The list page and the invocation page.
    let (_, _, page) = get(s.addr, "/invocations").await;
    let r = row(&page, REMOTE_BUILD);
    assert!(
        r.contains("data-proof=\"not proven\">NOT PROVEN</span>"),
        "{r}"
    );
    assert!(r.contains("executor_attested"), "{r}");
    assert!(!page.contains("PROVEN REMOTE"), "{page}");
    assert!(row(&page, REMOTE_TEST).contains(">PENDING</span>"));
    assert!(row(&page, "cut-short").contains(">NO PROOF</span>"));
    assert!(row(&page, "still-open").contains(">PENDING</span>"));

    let (_, _, inv) = get(s.addr, &format!("/invocations/{REMOTE_BUILD}")).await;
    let b = proof_box(&inv);
    assert!(b.contains(">NOT PROVEN</span>"), "{b}");
    assert!(b.contains("<code>executor_attested</code>"), "{b}");
    assert!(b.contains(p["artifact_sha256"].as_str().unwrap()), "{b}");
    assert!(
        b.contains(&format!(
            "href=\"/api/v1/invocations/{REMOTE_BUILD}/artifact\""
        )),
        "{b}"
    );
    assert!(!inv.contains("PROVEN REMOTE"), "{inv}");
    assert!(inv.contains("Client's view: what the stream claims"));
    assert!(inv.contains("Diagnosis (client's view)"));

    // The fleet view counts by the signed verdict: nothing is proven.
    let (_, f) = get_json(s.addr, "/api/v1/fleet").await;
    assert_eq!(
        f["proofs"]["overall"],
        serde_json::json!({"proven": 0, "not proven": 1, "pending": 2, "no proof": 1}),
        "{f}"
    );
    let (_, _, fleet) = get(s.addr, "/fleet").await;
    assert!(
        fleet.contains("<span id=\"fleet-proven\">0 proven</span>"),
        "{fleet}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_that_is_tampered_foreign_or_another_invocations_is_not_proven() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let proofs = dir.path().join("proofs");
    let writer = proof_writer(&proofs, None, None);
    let t0 = 1_795_735_800_000;
    // Properly signed: proven (no executor ledger, so no attestation asked).
    store_fixture_with(&*store, "remote-build", None, t0, Some(&writer));
    // Tampered after signing: one byte of the events member flipped.
    store_fixture_with(&*store, "remote-test", None, t0 + 1000, Some(&writer));
    let tampered = proofs.join(format!("{REMOTE_TEST}.proof.tar"));
    let mut bytes = std::fs::read(&tampered).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();
    // Signed by a key the server does not trust.
    let other = tempfile::tempdir().unwrap();
    let foreign = proof_server::proofs::ProofWriter {
        key: proof_artifact::SigningKey::from_bytes(&[9; 32]),
        ..proof_writer(other.path(), None, None)
    };
    store_fixture_with(&*store, "remote-cache-hit", None, t0 + 2000, Some(&foreign));
    std::fs::copy(
        other.path().join(format!("{CACHE_HIT}.proof.tar")),
        proofs.join(format!("{CACHE_HIT}.proof.tar")),
    )
    .unwrap();
    // remote-build's proof copied under another stored invocation's id.
    store_fixture(&*store, "local-only", None, t0 + 3000);
    std::fs::copy(
        proofs.join(format!("{REMOTE_BUILD}.proof.tar")),
        proofs.join(format!("{LOCAL_ONLY}.proof.tar")),
    )
    .unwrap();
    let s = serve_store_with(store, dir, None, Some(proofs)).await;

    let proof = |id: &'static str| async move {
        get_json(s.addr, &format!("/api/v1/invocations/{id}/proof"))
            .await
            .1
    };
    let p = proof(REMOTE_BUILD).await;
    assert_eq!(p["state"], "proven", "{p}");
    let p = proof(REMOTE_TEST).await;
    assert_eq!(p["state"], "not proven", "{p}");
    assert_eq!(p["client_claims"]["claims_pass"], true);
    let failed = p["failed_checks"].as_array().unwrap();
    assert!(
        failed.contains(&"digests".into()) || failed.contains(&"envelope".into()),
        "{p}"
    );
    let p = proof(CACHE_HIT).await;
    assert_eq!(p["state"], "not proven");
    assert_eq!(p["failed_checks"][0], "signature", "{p}");
    let p = proof(LOCAL_ONLY).await;
    assert_eq!(p["state"], "not proven");
    let last = p["checks"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "matches_store");
    assert_eq!(last["ok"], false);
    assert!(
        last["detail"].as_str().unwrap().contains(REMOTE_BUILD),
        "{last}"
    );
    // The list page agrees, row by row.
    let (_, _, page) = get(s.addr, "/invocations").await;
    assert!(row(&page, REMOTE_BUILD).contains(">PROVEN REMOTE</span>"));
    for id in [REMOTE_TEST, CACHE_HIT, LOCAL_ONLY] {
        assert!(row(&page, id).contains(">NOT PROVEN</span>"), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_proofs_directory_nothing_is_proven() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    store_fixture(&*store, "remote-build", None, 1);
    let s = serve_store(store, dir, None).await;
    let (_, v) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}")).await;
    assert_eq!(v["proof"]["state"], "no proof", "{v}");
    let (_, _, page) = get(s.addr, "/invocations").await;
    assert!(!page.contains("PROVEN REMOTE"), "{page}");
    let (st, v) = get_json(
        s.addr,
        &format!("/api/v1/invocations/{REMOTE_BUILD}/artifact"),
    )
    .await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("no proofs directory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_views_are_capped_below_the_analysis_cache() {
    let s = start().await;
    let max = proof_web::FLEET_MAX_LIMIT;
    assert!(max * 2 <= proof_web::CACHE_CAP);
    let (st, v) = get_json(s.addr, "/api/v1/fleet?limit=1000").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains(&format!("1..={max}")),
        "{v}"
    );
    let (st, _) = get_json(s.addr, &format!("/api/v1/fleet?limit={max}")).await;
    assert_eq!(st, 200);
    let (st, _, _) = get(s.addr, "/fleet?limit=1000").await;
    assert_eq!(st, 400);
}

/// An id deleted and stored again (another tenant, another stream, the same
/// journal length) is analyzed again, not served the old analysis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_cache_is_keyed_by_tenant_and_creation() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let mut first = fixture_events("remote-build");
    first.truncate(40);
    let mut second = fixture_events("remote-test");
    second.truncate(40);
    store_events(&*store, "reused", Some("a"), 1_000, &first);
    let s = serve_store(store.clone(), dir, None).await;
    let (_, ev) = get_json(s.addr, "/api/v1/invocations/reused/evidence").await;
    assert_eq!(ev["invocation_id"], REMOTE_BUILD);
    let before = store.get("reused").unwrap().unwrap().state.last_seq;

    store.delete("reused").unwrap();
    store_events(&*store, "reused", Some("b"), 2_000, &second);
    assert_eq!(
        store.get("reused").unwrap().unwrap().state.last_seq,
        before,
        "the same journal version: only tenant and creation differ"
    );
    let (_, ev) = get_json(s.addr, "/api/v1/invocations/reused/evidence").await;
    assert_eq!(
        ev["invocation_id"], REMOTE_TEST,
        "a stale analysis was served"
    );
    let (_, v) = get_json(s.addr, "/api/v1/invocations/reused").await;
    assert_eq!(v["tenant"], "b");
}
