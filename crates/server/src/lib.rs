//! rbe-proof's network adapters, kept thin: decode, store, ack.
//!
//! - [`bes`]: the Build Event Service backend (`PublishBuildEvent`).
//! - [`replay`]: a client that pushes a recorded stream the way Bazel does.
//! - [`metrics`]: counters of the backend.
//! - [`proofs`]: the proof queue: signs a proof for every finalized invocation.
//! - [`recover`]: finalization after a restart and the abandoned-stream sweep.
//! - [`tenants`]: tenant admission of the BES backend.

pub mod attested;
pub mod bes;
pub mod drain;
pub mod metrics;
pub mod proofs;
pub mod recover;
pub mod replay;
pub mod retention;
pub mod tenants;
pub mod vsa;

use std::net::SocketAddr;
use std::sync::Arc;

use proof_proto::bes::publish_build_event_server::PublishBuildEventServer;
use proof_store::Store;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use bes::{
    Admission, Admitted, Authenticate, BesService, OnFinalized, OpenAdmission, Opening, Refusal,
    RpcLimits,
};
pub use metrics::Metrics;
pub use tenants::TenantAdmission;

/// Room for a request's envelope (stream id, sequence number, Any type URL,
/// project id) around one event.
pub const ENVELOPE_BYTES: usize = 64 << 10;

/// Default (and largest) gRPC message accepted: one event of the store's
/// [`proof_store::MAX_EVENT_BYTES`] plus its envelope. One limit: a message
/// the server decodes is one the store can hold; a bigger event is
/// RESOURCE_EXHAUSTED at either layer, never "retry later".
pub const DEFAULT_MAX_MESSAGE: usize = proof_store::MAX_EVENT_BYTES + ENVELOPE_BYTES;

/// How to run the gRPC server.
pub struct GrpcConfig {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub on_finalized: Option<Arc<dyn OnFinalized>>,
    pub admission: Arc<dyn Admission>,
    pub max_message: usize,
    /// Finalize (as incomplete) streams idle this long with no open RPC;
    /// `None` keeps them open forever.
    pub abandon_after: Option<std::time::Duration>,
    /// Per-peer and per-RPC bounds.
    pub limits: RpcLimits,
}

impl GrpcConfig {
    /// `store` served to anyone (open admission), with fresh metrics, no finalization
    /// hook, the default message limit and RPC bounds, streams never abandoned; set the
    /// fields that differ with struct update syntax.
    pub fn open(store: Arc<dyn Store>) -> GrpcConfig {
        GrpcConfig {
            store,
            metrics: Arc::new(Metrics::default()),
            on_finalized: None,
            admission: Arc::new(OpenAdmission),
            max_message: DEFAULT_MAX_MESSAGE,
            abandon_after: None,
            limits: RpcLimits::default(),
        }
    }
}

/// Serves the BES on an already bound listener until `shutdown` resolves.
pub async fn serve_grpc(
    listener: TcpListener,
    cfg: GrpcConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_inner(listener, cfg, None, None, shutdown).await
}

/// How [`serve_grpc_drained`] drains (`proof serve --drain-timeout`, docs/operations.md).
#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub drain: Arc<drain::Drain>,
    /// How long open RPCs may run after the signal before they are ended with UNAVAILABLE.
    pub bound: std::time::Duration,
    /// How long to wait, after that, for finalizations in flight.
    pub finalize_bound: std::time::Duration,
    /// The abandon sweep's interval (default: `abandon_after`/4, 100 ms..60 s).
    pub sweep_every: Option<std::time::Duration>,
}

/// [`serve_grpc`] with a graceful drain: when `signal` resolves, the drain runs
/// ([`drain::Drain::run`]: not ready, new RPCs refused, open ones bounded, finalizations
/// finished) and only then does the listener close. Returns the drain's report.
pub async fn serve_grpc_drained(
    listener: TcpListener,
    cfg: GrpcConfig,
    opts: DrainOptions,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<drain::DrainReport>, tonic::transport::Error> {
    let report = Arc::new(std::sync::Mutex::new(None));
    let (d, out) = (opts.drain.clone(), report.clone());
    let (bound, finalize_bound) = (opts.bound, opts.finalize_bound);
    let shutdown = async move {
        signal.await;
        let r = d.run(bound, finalize_bound).await;
        *out.lock().expect("drain report") = Some(r);
    };
    serve_inner(listener, cfg, Some(opts.drain), opts.sweep_every, shutdown).await?;
    let r = report.lock().expect("drain report").clone();
    Ok(r)
}

async fn serve_inner(
    listener: TcpListener,
    cfg: GrpcConfig,
    drain: Option<Arc<drain::Drain>>,
    sweep_every: Option<std::time::Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    {
        // Streams that finished but were never finalized (a crash between the
        // last ack and finalization): Bazel will not come back for them.
        let (store, hook) = (cfg.store.clone(), cfg.on_finalized.clone());
        let tracked = drain.as_ref().map(|d| d.track_finalization());
        tokio::task::spawn_blocking(move || {
            let _tracked = tracked;
            match recover::finalize_pending(store.as_ref(), hook.as_deref()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(invocations = n, "finalized at start-up"),
                Err(e) => tracing::error!(error = %e, "start-up finalization failed"),
            }
        });
    }
    let auth = Authenticate::new(cfg.admission.clone(), cfg.metrics.clone());
    let mut svc = BesService::new(cfg.store, cfg.metrics, cfg.on_finalized, cfg.admission)
        .with_limits(cfg.limits)
        .with_sweep_every(sweep_every);
    if let Some(d) = drain {
        svc = svc.with_drain(d);
    }
    if let Some(after) = cfg.abandon_after {
        svc.sweep_abandoned(after);
    }
    let svc = PublishBuildEventServer::new(svc)
        .max_decoding_message_size(cfg.max_message)
        .max_encoding_message_size(cfg.max_message);
    // Authentication runs on the request head, before any message is decoded.
    let svc = tonic::service::interceptor::InterceptedService::new(svc, auth);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Binds `addr` (use port 0 for any free port) and reports the real address.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
