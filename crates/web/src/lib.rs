//! proof-web: the HTTP side of `proof serve`.
//!
//! - JSON API under `/api/v1/` (invocations with filters and paging, one
//!   invocation, its evidence, proof status, KPIs, diagnosis; fleet views);
//! - Prometheus text at `/metrics` (names prefixed `proof_`);
//! - server-rendered HTML: `/invocations` and `/invocations/<id>` (what
//!   Bazel's `--bes_results_url` points at). No JavaScript.
//!
//! Whether a build is proven comes only from its signed proof artifact,
//! verified as `proof verify` does ([`verdict`]); KPIs and the diagnosis are
//! the client's view, derived from what the stream claims.
//!
//! It shares the gRPC server's `Arc<dyn Store>` and `Arc<Metrics>`. Store
//! work runs on the blocking pool. Analyses are cached by journal version
//! (a journal only grows); a live invocation that grew is re-derived at most
//! every 10 s, so a fleet view or `/metrics` costs at most one analysis per
//! live invocation per 10 s, not one per request. The cache is an LRU of
//! [`CACHE_CAP`] entries keyed by invocation id, tenant and creation time;
//! a fleet view covers at most [`FLEET_MAX_LIMIT`] invocations, so one never
//! evicts its own analyses.
//! Endpoints are documented in `docs/kpis.md`.
//!
//! With a tenants file ([`router_for`]), every route but `/healthz` needs
//! `Authorization: Bearer TOKEN`, and every store read is scoped to that
//! token's tenant: lists show only its invocations, another tenant's
//! invocation is a 404 (`docs/tenants.md`).

mod acaudit;
mod api;
mod html;
mod prom;
pub mod tlog;
pub mod verdict;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use proof_kpi::fleet::TargetClassMap;
use proof_kpi::Analysis;
use proof_server::Metrics;
use proof_store::{InvocationRecord, ListFilter, RecordKind, Store};
use thiserror::Error;
pub use verdict::{ProofState, ProofsConfig};

/// Largest number of cached analyses.
pub const CACHE_CAP: usize = 512;
/// Most invocations one fleet view (or `/metrics` window) covers: half the
/// analysis cache, so a fleet view is served from the cache the second time.
pub const FLEET_MAX_LIMIT: usize = CACHE_CAP / 2;
/// A live (unfinished) invocation that received events since its analysis
/// is re-analyzed at most this often; in between its cached analysis is
/// served (fleet views and `/metrics` lag a live build by at most this).
const LIVE_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// How the HTTP server is configured.
#[derive(Clone)]
pub struct WebConfig {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Optional pattern-prefix → target-class mapping for fleet views.
    pub classes: TargetClassMap,
    /// Directory of execution logs named `<invocation id>.execlog` (binary
    /// or compact); when one exists it is read with the stored events.
    pub execlog_dir: Option<PathBuf>,
    /// The signed proofs and the key they must verify with; `None`: no
    /// invocation is shown as proven (every proof state is "no proof").
    pub proofs: Option<ProofsConfig>,
}

tokio::task_local! {
    /// The tenant of the request being answered (set by the auth layer).
    static REQUEST_TENANT: Option<String>;
}

thread_local! {
    /// The tenant of the blocking store work running on this thread.
    static SCOPED_TENANT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Counters of the HTTP side itself.
#[derive(Debug, Default)]
pub struct WebMetrics {
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    pub store_reads: AtomicU64,
    pub store_read_micros: AtomicU64,
    pub analyses: AtomicU64,
    pub analysis_cache_hits: AtomicU64,
    /// Proof artifacts verified, and verdicts served from the cache.
    pub verifications: AtomicU64,
    pub verdict_cache_hits: AtomicU64,
}

/// What an analysis was derived from: (journal last_seq, exec-log size).
type Version = (u64, Option<u64>);

/// A cached analysis: its version, when it was derived, the analysis.
type Cached = (Version, Instant, Arc<Analysis>);

/// What an analysis is cached under: invocation id, tenant, creation time
/// (an id deleted and stored again, e.g. by another tenant, is another key).
type CacheKey = (String, Option<String>, i64);

pub(crate) struct Inner {
    pub cfg: WebConfig,
    /// When set, requests must name a tenant with a bearer token.
    tenants: Option<Arc<proof_tenancy::Tenants>>,
    pub web: WebMetrics,
    /// (invocation id, tenant, created) → (version, when derived,
    /// analysis); version = (last_seq, exec-log size). A journal only grows,
    /// so an analysis of the same version is the same analysis, finalized or
    /// not. Least recently used first out.
    cache: Mutex<hashlink::LruCache<CacheKey, Cached>>,
    verdicts: verdict::VerdictCache,
}

pub(crate) type State = Arc<Inner>;

/// What went wrong answering a request.
#[derive(Debug, Error)]
pub enum WebError {
    #[error("no invocation {0} in the store; GET /api/v1/invocations lists what is stored")]
    NotFound(String),
    #[error("invocation {id} cannot be analyzed: {message}")]
    Unanalyzable { id: String, message: String },
    /// Retention removed the events (a tombstone): its record and proof stay.
    #[error("{message}")]
    Gone { id: String, message: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0}; GET /api/v1/invocations/ID/proof says why")]
    NoArtifact(String),
    #[error("the store failed: {0}")]
    Store(#[from] proof_store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) | WebError::NoArtifact(_) => StatusCode::NOT_FOUND,
            WebError::Unanalyzable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Gone { .. } => StatusCode::GONE,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Store(_) | WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl Inner {
    fn new(
        cfg: WebConfig,
        tenants: Option<Arc<proof_tenancy::Tenants>>,
        cache_cap: usize,
    ) -> Inner {
        Inner {
            cfg,
            tenants,
            web: WebMetrics::default(),
            cache: Mutex::new(hashlink::LruCache::new(cache_cap)),
            verdicts: verdict::VerdictCache::new(verdict::VERDICT_CACHE_CAP),
        }
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.web.store_reads.fetch_add(1, Ordering::Relaxed);
        self.web.store_read_micros.fetch_add(
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        out
    }

    /// `<execlog_dir>/<id>.execlog` (ids are validated by the store: no
    /// path separators).
    fn execlog_path(&self, id: &str) -> Option<PathBuf> {
        let dir = self.cfg.execlog_dir.as_ref()?;
        proof_store::validate_invocation_id(id).ok()?;
        Some(dir.join(format!("{id}.execlog")))
    }

    pub(crate) fn get(&self, id: &str) -> Result<InvocationRecord, WebError> {
        // A malformed id is the client's mistake (400), not the store's (500).
        proof_store::validate_invocation_id(id).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let rec = self
            .timed(|| self.cfg.store.get(id))?
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        match scoped_tenant() {
            // Another tenant's invocation looks exactly like a missing one.
            Some(t) if rec.meta.tenant.as_deref() != Some(t.as_str()) => {
                Err(WebError::NotFound(id.to_string()))
            }
            _ => Ok(rec),
        }
    }

    pub(crate) fn list(&self, f: &ListFilter) -> Result<Vec<InvocationRecord>, WebError> {
        let Some(t) = scoped_tenant() else {
            return Ok(self.timed(|| self.cfg.store.list(f))?);
        };
        if f.tenant.as_ref().is_some_and(|asked| *asked != t) {
            return Ok(Vec::new());
        }
        let f = ListFilter {
            tenant: Some(t),
            ..f.clone()
        };
        Ok(self.timed(|| self.cfg.store.list(&f))?)
    }

    /// The evidence, KPIs and diagnosis of one stored invocation (blocking).
    pub(crate) fn analysis(&self, rec: &InvocationRecord) -> Result<Arc<Analysis>, WebError> {
        let id = &rec.meta.invocation_id;
        let execlog = self.execlog_path(id);
        let version = (
            rec.state.last_seq,
            execlog
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
        );
        let key: CacheKey = (id.clone(), rec.meta.tenant.clone(), rec.meta.created_at_ms);
        if let Some((v, at, a)) = self.cache.lock().map_err(poisoned)?.get(&key) {
            let fresh_enough = !rec.state.finalized && at.elapsed() < LIVE_REFRESH;
            if *v == version || fresh_enough {
                self.web.analysis_cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(a.clone());
            }
        }
        let unanalyzable = |message: String| WebError::Unanalyzable {
            id: id.clone(),
            message,
        };
        let mut analyzer = proof_kpi::Analyzer::new();
        let records = match self.timed(|| self.cfg.store.read(id)) {
            Err(e @ proof_store::StoreError::JournalRemoved { .. }) => {
                return Err(WebError::Gone {
                    id: id.clone(),
                    message: e.to_string(),
                })
            }
            r => r?,
        };
        for r in records {
            let r = r?;
            if r.kind == RecordKind::BepEvent {
                analyzer
                    .push_event(&r.payload)
                    .map_err(|e| unanalyzable(e.to_string()))?;
            }
        }
        if let Some(p) = execlog.filter(|_| version.1.is_some()) {
            analyzer
                .push_exec_log(|| std::fs::File::open(&p).map(std::io::BufReader::new))
                .map_err(|e| unanalyzable(format!("execution log {}: {e}", p.display())))?;
        }
        let a = Arc::new(analyzer.finish().map_err(|e| unanalyzable(e.to_string()))?);
        self.web.analyses.fetch_add(1, Ordering::Relaxed);
        self.cache
            .lock()
            .map_err(poisoned)?
            .insert(key, (version, Instant::now(), a.clone()));
        Ok(a)
    }
}

fn poisoned<T>(_: T) -> WebError {
    WebError::Internal("the analysis cache lock is poisoned".into())
}

/// The tenant the current blocking store work is scoped to.
fn scoped_tenant() -> Option<String> {
    SCOPED_TENANT.with(|t| t.borrow().clone())
}

/// Runs blocking store work off the async threads, scoped to the request's
/// tenant.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Inner) -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    let s = state.clone();
    s.web.http_requests.fetch_add(1, Ordering::Relaxed);
    let tenant = REQUEST_TENANT.try_with(Clone::clone).ok().flatten();
    if s.tenants.is_some() && tenant.is_none() {
        return Err(WebError::Internal(
            "a store read without a tenant while tenants are configured".into(),
        ));
    }
    let out = tokio::task::spawn_blocking(move || {
        SCOPED_TENANT.with(|t| *t.borrow_mut() = tenant);
        let out = f(&s);
        SCOPED_TENANT.with(|t| *t.borrow_mut() = None);
        out
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    if out.is_err() {
        state.web.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// The HTTP routes, open to anyone (no tenants file).
pub fn router(cfg: WebConfig) -> Router {
    router_for(cfg, None)
}

/// Answers a request without a known bearer token (tenants configured).
fn unauthorized(d: &proof_tenancy::Denial) -> Response {
    let body = serde_json::json!({ "error": d.message, "reason": d.reason.as_str() });
    (
        StatusCode::UNAUTHORIZED,
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::WWW_AUTHENTICATE, "Bearer"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// With tenants: the request's bearer token names its tenant, which scopes
/// every store read of the handler.
async fn tenant_layer(
    axum::extract::State(state): axum::extract::State<State>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(tenants) = state.tenants.clone() else {
        return REQUEST_TENANT.scope(None, next.run(req)).await;
    };
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let auth = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tenants.authenticate(auth) {
        Ok(t) => {
            let id = t.id.clone();
            REQUEST_TENANT.scope(Some(id), next.run(req)).await
        }
        Err(d) => unauthorized(&d),
    }
}

/// Readiness for a load balancer: 200 while serving, 503 once the replica drains
/// (SIGTERM; `/healthz` stays 200 until the process exits).
async fn readyz(axum::extract::State(state): axum::extract::State<State>) -> Response {
    if state
        .cfg
        .metrics
        .draining
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// The HTTP routes; with `tenants`, every route but `/healthz` and `/readyz` requires
/// `Authorization: Bearer TOKEN` and shows only that tenant's invocations.
pub fn router_for(cfg: WebConfig, tenants: Option<Arc<proof_tenancy::Tenants>>) -> Router {
    let state: State = Arc::new(Inner::new(cfg, tenants, CACHE_CAP));
    Router::new()
        .route("/", get(html::root))
        .route("/invocations", get(html::list_page))
        .route("/invocations/{id}", get(html::invocation_page))
        .route("/fleet", get(html::fleet_page))
        .route("/ac-audit", get(acaudit::page))
        .route("/api/v1/ac-audit", get(acaudit::api))
        .route("/metrics", get(prom::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/invocations", get(api::list))
        .route("/api/v1/invocations/{id}", get(api::one))
        .route("/api/v1/invocations/{id}/evidence", get(api::evidence))
        .route("/api/v1/invocations/{id}/proof", get(api::proof))
        .route("/api/v1/invocations/{id}/artifact", get(api::artifact))
        .route("/api/v1/invocations/{id}/kpis", get(api::kpis))
        .route("/api/v1/invocations/{id}/diagnosis", get(api::diagnosis))
        .route("/api/v1/fleet", get(api::fleet))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tenant_layer,
        ))
        .with_state(state)
}

/// Serves [`router`] on an already bound listener until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    cfg: WebConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http_for(listener, cfg, None, shutdown).await
}

/// [`serve_http_for`], also serving the transparency log under `/log/`
/// ([`tlog`], public).
pub async fn serve_http_with_log(
    listener: tokio::net::TcpListener,
    cfg: WebConfig,
    tenants: Option<Arc<proof_tenancy::Tenants>>,
    log: Option<Arc<proof_tlog::Published>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = router_for(cfg, tenants);
    if let Some(log) = log {
        app = tlog::router(log).merge(app);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve_http`] with a tenants file (see [`router_for`]).
pub async fn serve_http_for(
    listener: tokio::net::TcpListener,
    cfg: WebConfig,
    tenants: Option<Arc<proof_tenancy::Tenants>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router_for(cfg, tenants))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_store(dir: &std::path::Path) -> (Arc<dyn Store>, Vec<String>) {
        let store: Arc<dyn Store> = Arc::new(proof_store::FsStore::open(dir).unwrap());
        let mut ids = Vec::new();
        for (i, scenario) in ["remote-build", "remote-test", "local-only"]
            .into_iter()
            .enumerate()
        {
            let bep = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/bazel-4.2.3")
                .join(scenario)
                .join("bep.bin");
            let events: Vec<Vec<u8>> = proof_stream::delimited::DelimitedReader::new(
                std::io::BufReader::new(std::fs::File::open(bep).unwrap()),
            )
            .collect::<Result<_, _>>()
            .unwrap();
            let id = format!("inv-{i}");
            store
                .open_invocation(&proof_store::InvocationMeta {
                    invocation_id: id.clone(),
                    build_id: None,
                    source: proof_store::InvocationSource::File,
                    tenant: None,
                    instance: None,
                    created_at_ms: i as i64,
                })
                .unwrap();
            let flags = proof_store::AppendFlags {
                saw_build_finished: true,
                saw_last_message: true,
                saw_stream_finished: false,
            };
            store
                .append(&id, &proof_store::JournalRecord::bep_events(events), flags)
                .unwrap();
            proof_ingest::finalize(&*store, &id).unwrap();
            ids.push(id);
        }
        (store, ids)
    }

    /// A full cache drops its least recently used analysis, not all of them.
    #[test]
    fn a_full_analysis_cache_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = fixture_store(dir.path());
        let cfg = WebConfig {
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            classes: TargetClassMap::default(),
            execlog_dir: None,
            proofs: None,
        };
        let inner = Inner::new(cfg, None, 2);
        let analyze = |id: &str| {
            let rec = store.get(id).unwrap().unwrap();
            let before = inner.web.analyses.load(Ordering::Relaxed);
            inner.analysis(&rec).unwrap();
            inner.web.analyses.load(Ordering::Relaxed) > before
        };
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        assert!(analyze(a) && analyze(b));
        assert!(!analyze(a), "a is cached, and now the most recently used");
        assert!(analyze(c), "c is new: the cache is full, b goes");
        assert!(!analyze(a), "a survived the eviction");
        assert!(!analyze(c));
        assert!(analyze(b), "b was evicted");
    }
}
