//! Graceful drain (`proof serve` on SIGTERM): the replica says it is not ready
//! (`/readyz` 503, so the load balancer stops sending it RPCs), refuses new RPCs with
//! UNAVAILABLE, lets open tool-event RPCs run for a bounded time, then ends them with
//! UNAVAILABLE (Bazel resumes each on a new RPC, which the balancer sends to another
//! replica), waits for the finalizations in flight (its own streams and the ones its sweep
//! adopted), and only then lets the listener close.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Ready: accepting RPCs.
    Serving,
    /// Not ready: new RPCs are refused, open ones continue.
    Draining,
    /// The drain bound passed: open RPCs end with UNAVAILABLE at their next wait.
    Closing,
}

/// Shared by the BES service, the HTTP side (`/readyz`) and `proof serve`.
#[derive(Debug)]
pub struct Drain {
    /// Where readiness is published (`/readyz` reads `Metrics::draining`).
    metrics: Option<Arc<crate::Metrics>>,
    phase: watch::Sender<Phase>,
    ready: AtomicBool,
    rpcs: AtomicUsize,
    finalizing: AtomicUsize,
    changed: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            metrics: None,
            phase: watch::channel(Phase::Serving).0,
            ready: AtomicBool::new(true),
            rpcs: AtomicUsize::new(0),
            finalizing: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }
}

/// Counts one open RPC or finalization while alive.
#[derive(Debug)]
pub struct Tracked {
    drain: Arc<Drain>,
    rpc: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let n = if self.rpc {
            &self.drain.rpcs
        } else {
            &self.drain.finalizing
        };
        n.fetch_sub(1, Ordering::SeqCst);
        self.drain.changed.notify_waiters();
    }
}

/// What [`Drain::run`] did, for the log and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Open tool-event RPCs when the drain began.
    pub rpcs_at_start: usize,
    /// RPCs still open when the bound passed (ended with UNAVAILABLE).
    pub rpcs_cut: usize,
    /// Finalizations waited for after the RPCs ended.
    pub finalizations_waited: usize,
    pub elapsed: Duration,
}

impl Drain {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A drain that also flips `metrics.draining` (what `/readyz` answers from).
    pub fn with_metrics(metrics: Arc<crate::Metrics>) -> Arc<Self> {
        Arc::new(Drain {
            metrics: Some(metrics),
            ..Self::default()
        })
    }

    /// `false` once the drain began (`/readyz` answers 503).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Open tool-event RPCs.
    pub fn open_rpcs(&self) -> usize {
        self.rpcs.load(Ordering::SeqCst)
    }

    /// Finalizations running.
    pub fn finalizations(&self) -> usize {
        self.finalizing.load(Ordering::SeqCst)
    }

    /// Counts an RPC until the guard is dropped.
    pub fn track_rpc(self: &Arc<Self>) -> Tracked {
        self.rpcs.fetch_add(1, Ordering::SeqCst);
        Tracked {
            drain: self.clone(),
            rpc: true,
        }
    }

    /// Counts a finalization until the guard is dropped.
    pub fn track_finalization(self: &Arc<Self>) -> Tracked {
        self.finalizing.fetch_add(1, Ordering::SeqCst);
        Tracked {
            drain: self.clone(),
            rpc: false,
        }
    }

    /// Resolves once the phase is at least `Closing` (never, while serving normally).
    pub async fn closing(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= Phase::Closing).await;
    }

    async fn until(&self, cond: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            // Re-check now and then as well: a guard dropped between the check and
            // `enable` is covered by `enable`, this is belt and braces.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// The drain: not ready and refusing new RPCs now; open RPCs get `bound` to end by
    /// themselves, then are ended with UNAVAILABLE; then the finalizations in flight are
    /// waited for (at most `finalize_bound`). Returns when the listener may close.
    pub async fn run(&self, bound: Duration, finalize_bound: Duration) -> DrainReport {
        let t = Instant::now();
        self.ready.store(false, Ordering::SeqCst);
        if let Some(m) = &self.metrics {
            m.draining.store(true, Ordering::SeqCst);
        }
        self.phase.send_replace(Phase::Draining);
        let rpcs_at_start = self.open_rpcs();
        tracing::info!(open_rpcs = rpcs_at_start, bound = ?bound, "draining: not ready, refusing new RPCs");
        let ended = tokio::time::timeout(bound, self.until(|d| d.open_rpcs() == 0)).await;
        let mut rpcs_cut = 0;
        if ended.is_err() {
            rpcs_cut = self.open_rpcs();
            tracing::info!(
                open_rpcs = rpcs_cut,
                "drain bound reached: ending open RPCs with UNAVAILABLE"
            );
            self.phase.send_replace(Phase::Closing);
            // Each ends at its next wait for a message (a batch being stored finishes
            // and is acked first).
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.until(|d| d.open_rpcs() == 0))
                    .await;
        }
        self.phase.send_replace(Phase::Closing);
        let finalizations_waited = self.finalizations();
        if tokio::time::timeout(finalize_bound, self.until(|d| d.finalizations() == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.finalizations(),
                "finalizations still running after {finalize_bound:?}; the next start (or another replica's sweep) finishes them"
            );
        }
        let report = DrainReport {
            rpcs_at_start,
            rpcs_cut,
            finalizations_waited,
            elapsed: t.elapsed(),
        };
        tracing::info!(?report, "drained");
        report
    }
}
