//! Shared set-up: a store with the real Bazel 4.2.3 fixture invocations, their
//! proofs signed as `proof serve` signs them, and the HTTP server on
//! 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proof_server::Metrics;
use proof_store::{AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const REMOTE_BUILD: &str = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
pub const REMOTE_TEST: &str = "dd402f9a-e089-4cc9-a5aa-bedb4e54194b";
pub const CACHE_HIT: &str = "157e9e69-d528-419e-b489-0bd10843f996";
pub const LOCAL_ONLY: &str = "2adc59b1-3597-4db0-bda0-2ec133eca612";
pub const FAILING: &str = "f4ad9d4e-0f0f-4934-b3ab-818bd5087a87";

/// A fixture scenario's `bep.bin`.
pub fn fixture(scenario: &str) -> PathBuf {
    proof_testkit::fixtures::fixture(scenario, "bep.bin")
}

/// The events of a fixture's `bep.bin`.
pub use proof_testkit::fixtures::fixture_events;

/// Stores one fixture's events under `tenant`, received at `at_ms`, and finalizes it.
pub fn store_fixture(
    store: &dyn Store,
    scenario: &str,
    tenant: Option<&str>,
    at_ms: i64,
) -> String {
    store_fixture_with(store, scenario, tenant, at_ms, None)
}

/// [`store_fixture`], then the finalization `hook` (e.g. [`proof_writer`]).
pub fn store_fixture_with(
    store: &dyn Store,
    scenario: &str,
    tenant: Option<&str>,
    at_ms: i64,
    hook: Option<&dyn proof_server::OnFinalized>,
) -> String {
    let events = fixture_events(scenario);
    let first = proof_stream::probe::probe(&events[0]).unwrap();
    let id = first.started_uuid.unwrap();
    store_invocation(
        store,
        &id,
        Some(format!("build-{scenario}")),
        tenant,
        at_ms,
        &events,
        hook,
    );
    id
}

pub struct Server {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The proofs directory the server reads, when it has one.
    pub proofs: Option<PathBuf>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The key the test proofs are signed with.
pub fn test_key() -> proof_artifact::SigningKey {
    proof_artifact::SigningKey::from_bytes(&[7; 32])
}

/// The server's proof writer (`proof serve`'s finalization hook), signing
/// with [`test_key`] into `proofs`; with `executor`, every proof carries
/// what that executor says it ran (`proof serve --executor`, asked once).
pub fn proof_writer(
    proofs: &Path,
    metrics: Option<Arc<Metrics>>,
    executor: Option<&str>,
) -> proof_server::proofs::ProofWriter {
    std::fs::create_dir_all(proofs).unwrap();
    proof_server::proofs::ProofWriter {
        key: test_key(),
        dir: proofs.to_path_buf(),
        executor: executor.map(|url| proof_server::proofs::LedgerConfig {
            ledger: Arc::new(proof_executor::BuildGrid::new(url).unwrap()),
            instance_names: Vec::new(),
            endpoint_aliases: Vec::new(),
            retry: proof_executor::Retry {
                total: std::time::Duration::ZERO,
                first_delay: std::time::Duration::from_millis(1),
            },
            budget: proof_executor::Budget::default(),
        }),
        metrics,
        vsa: None,
        log: None,
    }
}

/// The web's view of `proofs`, trusting [`test_key`].
pub fn proofs_config(proofs: &Path) -> proof_web::ProofsConfig {
    proof_web::ProofsConfig {
        dir: proofs.to_path_buf(),
        trusted: vec![test_key().verifying_key()],
    }
}

/// All five fixtures: remote-build and remote-test for tenant "acme",
/// remote-cache-hit for "beta", the others without a tenant. Newest last.
/// Each has its signed proof in `STORE/proofs`.
pub async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let proofs = dir.path().join("proofs");
    let t0 = 1_795_735_800_000;
    for (i, (scenario, tenant)) in [
        ("remote-build", Some("acme")),
        ("remote-test", Some("acme")),
        ("remote-cache-hit", Some("beta")),
        ("local-only", None),
        ("failing-build", None),
    ]
    .into_iter()
    .enumerate()
    {
        store_fixture_with(
            &*store,
            scenario,
            tenant,
            t0 + 1000 * i as i64,
            Some(&proof_writer(&proofs, None, None)),
        );
    }
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
        proofs: Some(proofs_config(&proofs)),
    };
    tokio::spawn(proof_web::serve_http(listener, cfg, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        metrics,
        proofs: Some(proofs),
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

/// A minimal HTTP/1.1 GET of a binary body: (status, headers, body).
pub async fn get_bytes(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(buf[..at].to_vec()).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), buf[at + 4..].to_vec())
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
    store_invocation(store, id, None, tenant, at_ms, events, None);
}

/// [`store_events`], then the finalization `hook`.
pub fn store_events_with(
    store: &dyn Store,
    id: &str,
    tenant: Option<&str>,
    at_ms: i64,
    events: &[Vec<u8>],
    hook: Option<&dyn proof_server::OnFinalized>,
) {
    store_invocation(store, id, None, tenant, at_ms, events, hook);
}

/// Opens, appends and finalizes one invocation; runs `hook` on the outcome
/// as the BES server does.
fn store_invocation(
    store: &dyn Store,
    id: &str,
    build_id: Option<String>,
    tenant: Option<&str>,
    at_ms: i64,
    events: &[Vec<u8>],
    hook: Option<&dyn proof_server::OnFinalized>,
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
    let f = proof_ingest::finalize(store, id).unwrap();
    if let Some(h) = hook {
        h.on_finalized(store, &f);
    }
}

/// Serves an existing store, without a proofs directory.
pub async fn serve_store(
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    execlog_dir: Option<PathBuf>,
) -> Server {
    serve_store_with(store, dir, execlog_dir, None).await
}

/// Serves an existing store with the proofs in `proofs` (signed by [`test_key`]).
pub async fn serve_store_with(
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    execlog_dir: Option<PathBuf>,
    proofs: Option<PathBuf>,
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
        proofs: proofs.as_deref().map(proofs_config),
    };
    tokio::spawn(proof_web::serve_http(listener, cfg, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        metrics,
        proofs,
        _dir: dir,
        _stop: tx,
    }
}
