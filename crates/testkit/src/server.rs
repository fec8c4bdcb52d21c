//! The BES server in-process, on a loopback port: one builder for every test that
//! streams to `proof serve`'s gRPC side without starting the binary.
//!
//! ```text
//! let srv = TestServer::builder().max_message(1 << 20).start().await; // FsStore in a temp dir
//! let replica = TestServer::on(srv.store.clone()).start().await;     // a second server, one store
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proof_server::{Admission, GrpcConfig, Metrics, OnFinalized, RpcLimits};
use proof_store::{FsStore, Store};
use tokio::sync::oneshot;

/// A running in-process BES server; stopped when [`TestServer::stop`] is awaited or
/// when it is dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// What the server is started with: [`GrpcConfig::open`] plus the settings a test names.
pub struct ServerBuilder {
    cfg: GrpcConfig,
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server on a fresh `FsStore` in a temporary directory (removed with the server).
    pub fn builder() -> ServerBuilder {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(FsStore::open(dir.path()).expect("open an FsStore"));
        ServerBuilder {
            cfg: GrpcConfig::open(store),
            dir: Some(dir),
        }
    }

    /// A server on `store` (a replica, when another server already serves it).
    pub fn on(store: Arc<dyn Store>) -> ServerBuilder {
        ServerBuilder {
            cfg: GrpcConfig::open(store),
            dir: None,
        }
    }

    /// The directory of the `FsStore` made by [`TestServer::builder`] (`None` for a server
    /// started [`TestServer::on`] a store of the caller's).
    pub fn store_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The `grpc://` target a client (or `bazel --bes_backend`) connects to.
    pub fn target(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Stops the server and waits (at most [`crate::timeouts::STOP`]: open RPCs may hold
    /// it longer) until it has; panics if serving failed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            if let Ok(ended) = tokio::time::timeout(crate::timeouts::STOP, t).await {
                ended.expect("the in-process server failed");
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl ServerBuilder {
    /// Counts into `metrics` (default: fresh ones).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.cfg.metrics = metrics;
        self
    }

    /// Admits streams with `admission` (default: open to anyone).
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.cfg.admission = admission;
        self
    }

    /// Runs `hook` on every finalized invocation (e.g. a proof writer or queue).
    pub fn on_finalized(mut self, hook: Arc<dyn OnFinalized>) -> Self {
        self.cfg.on_finalized = Some(hook);
        self
    }

    /// The largest gRPC message accepted.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.cfg.max_message = bytes;
        self
    }

    /// Finalizes (as incomplete) streams idle this long with no open RPC.
    pub fn abandon_after(mut self, idle: Duration) -> Self {
        self.cfg.abandon_after = Some(idle);
        self
    }

    /// Per-peer and per-RPC bounds.
    pub fn limits(mut self, limits: RpcLimits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Binds 127.0.0.1:0 and serves on the current runtime.
    pub async fn start(self) -> TestServer {
        let (listener, addr) = proof_server::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let (stop, stopped) = oneshot::channel::<()>();
        let (store, metrics) = (self.cfg.store.clone(), self.cfg.metrics.clone());
        let cfg = self.cfg;
        let task = tokio::spawn(async move {
            proof_server::serve_grpc(listener, cfg, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve_grpc");
        });
        TestServer {
            addr,
            store,
            metrics,
            stop: Some(stop),
            task: Some(task),
            _dir: self.dir,
        }
    }
}
