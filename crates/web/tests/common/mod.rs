//! Shared set-up: a store with the real Bazel 4.2.3 fixture invocations and
//! the HTTP server on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proof_server::Metrics;
use proof_store::{AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store};
use proof_stream::delimited::DelimitedReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const REMOTE_BUILD: &str = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
pub const REMOTE_TEST: &str = "dd402f9a-e089-4cc9-a5aa-bedb4e54194b";
pub const CACHE_HIT: &str = "157e9e69-d528-419e-b489-0bd10843f996";
pub const LOCAL_ONLY: &str = "2adc59b1-3597-4db0-bda0-2ec133eca612";
pub const FAILING: &str = "f4ad9d4e-0f0f-4934-b3ab-818bd5087a87";

pub fn fixture(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join("bep.bin")
}

/// Stores one fixture's events under `tenant`, received at `at_ms`, and finalizes it.
pub fn store_fixture(
    store: &dyn Store,
    scenario: &str,
    tenant: Option<&str>,
    at_ms: i64,
) -> String {
    let f = std::fs::File::open(fixture(scenario)).unwrap();
    let events: Vec<Vec<u8>> = DelimitedReader::new(std::io::BufReader::new(f))
        .collect::<Result<_, _>>()
        .unwrap();
    let first = proof_stream::probe::probe(&events[0]).unwrap();
    let id = first.started_uuid.unwrap();
    store_invocation(
        store,
        &id,
        Some(format!("build-{scenario}")),
        tenant,
        at_ms,
        &events,
    );
    id
}

pub struct Server {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// All five fixtures: remote-build and remote-test for tenant "acme",
/// remote-cache-hit for "beta", the others without a tenant. Newest last.
pub async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let t0 = 1_795_735_800_000;
    store_fixture(&*store, "remote-build", Some("acme"), t0);
    store_fixture(&*store, "remote-test", Some("acme"), t0 + 1000);
    store_fixture(&*store, "remote-cache-hit", Some("beta"), t0 + 2000);
    store_fixture(&*store, "local-only", None, t0 + 3000);
    store_fixture(&*store, "failing-build", None, t0 + 4000);
    let metrics = Arc::new(Metrics::default());
    Metrics::add(&metrics.events_ingested, 318);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = proof_web::WebConfig {
        store,
        metrics: metrics.clone(),
        classes: proof_kpi::fleet::TargetClassMap::parse("//failing=failing,//=all").unwrap(),
        execlog_dir: None,
    };
    tokio::spawn(proof_web::serve_http(listener, cfg, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        metrics,
        _dir: dir,
        _stop: tx,
    }
}

/// A minimal HTTP/1.1 GET: (status, content-type, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "test client expects a content-length body"
    );
    (status, ctype, body.to_string())
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, ctype, body) = get(addr, path).await;
    assert_eq!(ctype, "application/json", "{path}");
    (status, serde_json::from_str(&body).unwrap())
}

/// Stores raw BEP events (already encoded) as one finalized invocation.
pub fn store_events(
    store: &dyn Store,
    id: &str,
    tenant: Option<&str>,
    at_ms: i64,
    events: &[Vec<u8>],
) {
    store_invocation(store, id, None, tenant, at_ms, events);
}

/// Opens, appends and finalizes one invocation.
fn store_invocation(
    store: &dyn Store,
    id: &str,
    build_id: Option<String>,
    tenant: Option<&str>,
    at_ms: i64,
    events: &[Vec<u8>],
) {
    store
        .open_invocation(&InvocationMeta {
            invocation_id: id.to_string(),
            build_id,
            source: InvocationSource::File,
            tenant: tenant.map(str::to_string),
            instance: None,
            created_at_ms: at_ms,
        })
        .unwrap();
    let records = JournalRecord::bep_events(events.iter().cloned());
    let flags = AppendFlags {
        saw_build_finished: true,
        saw_last_message: true,
        saw_stream_finished: false,
    };
    store.append(id, &records, flags).unwrap();
    proof_ingest::finalize(store, id).unwrap();
}

/// Serves an existing store.
pub async fn serve_store(
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    execlog_dir: Option<PathBuf>,
) -> Server {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = proof_web::WebConfig {
        store,
        metrics: metrics.clone(),
        classes: proof_kpi::fleet::TargetClassMap::default(),
        execlog_dir,
    };
    tokio::spawn(proof_web::serve_http(listener, cfg, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        metrics,
        _dir: dir,
        _stop: tx,
    }
}
