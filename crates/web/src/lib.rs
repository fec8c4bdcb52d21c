//! proof-web: the HTTP side of `proof serve`.
//!
//! - JSON API under `/api/v1/` (invocations with filters and paging, one
//!   invocation, its evidence, proof status, KPIs, diagnosis; fleet views);
//! - Prometheus text at `/metrics` (names prefixed `proof_`);
//! - server-rendered HTML: `/invocations` and `/invocations/<id>` (what
//!   Bazel's `--bes_results_url` points at). No JavaScript.
//!
//! It shares the gRPC server's `Arc<dyn Store>` and `Arc<Metrics>`. Store
//! work runs on the blocking pool. Analyses of finalized invocations are
//! cached (they cannot change); live ones are re-derived per request.
//! Endpoints are documented in `docs/kpis.md`.

mod api;
mod html;
mod prom;

use std::collections::HashMap;
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

/// Largest number of cached analyses.
const CACHE_CAP: usize = 512;

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
}

/// What an analysis was derived from: (journal last_seq, exec-log size).
type Version = (u64, Option<u64>);

pub(crate) struct Inner {
    pub cfg: WebConfig,
    pub web: WebMetrics,
    /// invocation id → (version, analysis); version = (last_seq, exec-log size)
    cache: Mutex<HashMap<String, (Version, Arc<Analysis>)>>,
}

pub(crate) type State = Arc<Inner>;

/// What went wrong answering a request.
#[derive(Debug, Error)]
pub enum WebError {
    #[error("no invocation {0} in the store; GET /api/v1/invocations lists what is stored")]
    NotFound(String),
    #[error("invocation {id} cannot be analyzed: {message}")]
    Unanalyzable { id: String, message: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the store failed: {0}")]
    Store(#[from] proof_store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Unanalyzable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
        self.timed(|| self.cfg.store.get(id))?
            .ok_or_else(|| WebError::NotFound(id.to_string()))
    }

    pub(crate) fn list(&self, f: &ListFilter) -> Result<Vec<InvocationRecord>, WebError> {
        Ok(self.timed(|| self.cfg.store.list(f))?)
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
        if let Some((v, a)) = self.cache.lock().map_err(poisoned)?.get(id) {
            if *v == version && rec.state.finalized {
                self.web.analysis_cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(a.clone());
            }
        }
        let unanalyzable = |message: String| WebError::Unanalyzable {
            id: id.clone(),
            message,
        };
        let mut analyzer = proof_kpi::Analyzer::new();
        let records = self.timed(|| self.cfg.store.read(id))?;
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
        if rec.state.finalized {
            let mut c = self.cache.lock().map_err(poisoned)?;
            if c.len() >= CACHE_CAP {
                c.clear();
            }
            c.insert(id.clone(), (version, a.clone()));
        }
        Ok(a)
    }
}

fn poisoned<T>(_: T) -> WebError {
    WebError::Internal("the analysis cache lock is poisoned".into())
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Inner) -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    let s = state.clone();
    s.web.http_requests.fetch_add(1, Ordering::Relaxed);
    let out = tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    if out.is_err() {
        state.web.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// The HTTP routes.
pub fn router(cfg: WebConfig) -> Router {
    let state: State = Arc::new(Inner {
        cfg,
        web: WebMetrics::default(),
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(html::root))
        .route("/invocations", get(html::list_page))
        .route("/invocations/{id}", get(html::invocation_page))
        .route("/fleet", get(html::fleet_page))
        .route("/metrics", get(prom::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/invocations", get(api::list))
        .route("/api/v1/invocations/{id}", get(api::one))
        .route("/api/v1/invocations/{id}/evidence", get(api::evidence))
        .route("/api/v1/invocations/{id}/proof", get(api::proof))
        .route("/api/v1/invocations/{id}/kpis", get(api::kpis))
        .route("/api/v1/invocations/{id}/diagnosis", get(api::diagnosis))
        .route("/api/v1/fleet", get(api::fleet))
        .with_state(state)
}

/// Serves [`router`] on an already bound listener until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    cfg: WebConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(cfg))
        .with_graceful_shutdown(shutdown)
        .await
}
