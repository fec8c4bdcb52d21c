//! The Build Event Service backend: `google.devtools.build.v1.PublishBuildEvent`.
//!
//! Ack policy (group commit): the handler reads every message that has
//! already arrived on the RPC (up to [`MAX_BATCH`]), decides each one with the
//! sequence rules ([`proof_stream::sequencer`]), appends the new ones to the
//! store in one durable write, and only then sends the acks, in the order the
//! messages came. An event is never acked before it is on disk.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use proof_ingest::batch_flags;
use proof_proto::bes::{
    build_event::Event, publish_build_event_server::PublishBuildEvent, stream_id::BuildComponent,
    BuildEvent, OrderedBuildEvent, PublishBuildToolEventStreamRequest,
    PublishBuildToolEventStreamResponse, PublishLifecycleEventRequest, StreamId,
};
use proof_store::{
    AppendFlags, InvocationMeta, InvocationSource, JournalRecord, LifecycleEvent, RecordKind,
    Store, StoreError,
};
use proof_stream::probe::{probe, Probe};
use proof_stream::sequencer::{Decision, Position, RpcSequencer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::recover::finalize_once;

/// Most messages taken into one group commit.
pub const MAX_BATCH: usize = 512;
/// Acks buffered towards a slow client before the handler stops reading.
const ACK_BUFFER: usize = 1024;
/// Most events an RPC holds, unstored and unacked, while its gate is not
/// ready (a tenant's stream waiting for its canonical command line; Bazel
/// sends that among its first ten events).
pub const HOLD_MAX_EVENTS: usize = 256;
/// Most payload bytes an RPC holds while its gate is not ready.
pub const HOLD_MAX_BYTES: usize = 16 << 20;

mod admission;
mod batch;
mod lifecycle;
mod peers;
mod wire;

pub use crate::recover::OnFinalized;
pub use admission::{
    Admission, Admitted, Authenticate, OpenAdmission, Opening, Principal, Refusal,
};
use admission::{DeniedMemory, OpenAdmitted};
pub use peers::RpcLimits;
use peers::{PeerPermit, Peers};
use wire::*;

/// The BES service: a small struct over shared state.
pub struct BesService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Per-invocation position, shared by the RPCs of one invocation.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Keyed hash of stored events (re-sent events are compared by it).
    hasher: std::collections::hash_map::RandomState,
    on_finalized: Option<Arc<dyn OnFinalized>>,
    admission: Arc<dyn Admission>,
    denied: Mutex<DeniedMemory>,
    /// Invocation ids reserved by open, admitted RPCs: the tenant and how many
    /// of its RPCs hold the id. Another tenant's RPC for a reserved id is
    /// refused, so it can neither wait for the owner's stream to appear (and
    /// then delete or extend it) nor race it to creation.
    reserved: Mutex<HashMap<String, (Option<String>, usize)>>,
    /// When each invocation last stored something (for the abandon sweep).
    activity: Mutex<HashMap<String, Instant>>,
    /// `last_seq` of each open invocation at the previous abandon sweep.
    progress: Mutex<HashMap<String, u64>>,
    started: Instant,
    limits: RpcLimits,
    peers: Peers,
    /// Set by `proof serve`: refuse new RPCs and end open ones when draining.
    drain: Option<Arc<crate::drain::Drain>>,
    /// How often the abandon sweep runs (default: `--abandon-after`/4, 100 ms..60 s).
    sweep_every: Option<Duration>,
}

impl BesService {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        on_finalized: Option<Arc<dyn OnFinalized>>,
        admission: Arc<dyn Admission>,
    ) -> Self {
        let inner = Inner {
            store,
            metrics,
            slots: Mutex::default(),
            hasher: Default::default(),
            on_finalized,
            admission,
            denied: Mutex::default(),
            reserved: Mutex::default(),
            activity: Mutex::default(),
            progress: Mutex::default(),
            started: Instant::now(),
            limits: RpcLimits::default(),
            peers: Peers::default(),
            drain: None,
            sweep_every: None,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Uses `limits` instead of [`RpcLimits::default`]; call before serving.
    pub fn with_limits(mut self, limits: RpcLimits) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_limits is called before the service is shared")
            .limits = limits;
        self
    }

    /// Drains with `drain` (see [`crate::drain`]); call before serving.
    pub fn with_drain(mut self, drain: Arc<crate::drain::Drain>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_drain is called before the service is shared")
            .drain = Some(drain);
        self
    }

    /// Runs the abandon sweep every `every` instead of `after`/4; call before serving.
    pub fn with_sweep_every(mut self, every: Option<Duration>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_sweep_every is called before the service is shared")
            .sweep_every = every;
        self
    }

    /// Finalizes, as incomplete, every invocation that stored nothing for
    /// `after` and has no open RPC (a Bazel that died or gave up mid-stream).
    /// Invocations found in the store at start-up count from the start.
    /// Runs until the runtime stops.
    pub fn sweep_abandoned(&self, after: Duration) {
        let inner = self.inner.clone();
        let every = inner.sweep_every.unwrap_or_else(|| {
            (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
        });
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let sweeper = inner.clone();
                // Its finalizations (streams adopted from a dead replica) are finished
                // before a drain lets the process exit.
                let tracked = inner.drain.as_ref().map(|d| d.track_finalization());
                let swept = tokio::task::spawn_blocking(move || {
                    let _tracked = tracked;
                    sweeper.sweep(after)
                })
                .await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        tracing::info!(invocations = n, ?after, "finalized abandoned streams")
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "abandon sweep failed"),
                    Err(e) => tracing::error!(error = %e, "abandon sweep panicked"),
                }
            }
        });
    }
}

/// Most digests of stored events kept per invocation while an RPC of it is
/// open (older re-sent events are compared by reading the journal back).
const DIGEST_WINDOW: usize = 16 << 10;

/// What the RPCs of one invocation share while any of them is open.
#[derive(Default)]
struct Slot {
    /// The stored position; `None`: load it from the store.
    pos: Option<Position>,
    /// seq → keyed hash of (kind, payload) of recently stored events.
    digests: std::collections::BTreeMap<u64, u64>,
}

impl Slot {
    fn reset(&mut self) {
        self.pos = None;
        self.digests.clear();
    }
}

fn digest(h: &std::collections::hash_map::RandomState, kind: RecordKind, payload: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    h.hash_one((kind.as_u8(), payload))
}

/// What one RPC knows across its batches.
struct Rpc {
    seq: RpcSequencer,
    invocation_id: Option<String>,
    project_id: String,
    metadata: tonic::metadata::MetadataMap,
    /// Who authenticated when the RPC opened.
    principal: Option<String>,
    /// Set once admission let the RPC in; dropped when the RPC ends.
    admitted: Option<Box<dyn Admitted>>,
    /// Payload bytes of the invocation stored so far (for the byte quota).
    bytes: u64,
    /// No batch of this RPC has been decided yet: its position is read from the store,
    /// not from this process's cache (another replica may have moved it since).
    fresh: bool,
    /// Events held (checked, unstored, unacked) while the gate is not ready.
    held: Vec<Parsed>,
    held_bytes: usize,
    /// The invocation may be deleted by a denial of this RPC: it stored
    /// something of it, or resumed its own tenant's invocation. An RPC that
    /// stored nothing of an invocation it did not own deletes nothing.
    may_delete: bool,
    /// This RPC holds a place in [`Inner::reserved`] (given back at its end).
    reserved: bool,
}

impl Rpc {
    fn new(metadata: tonic::metadata::MetadataMap, principal: Option<String>) -> Self {
        Rpc {
            seq: RpcSequencer::new(),
            invocation_id: None,
            project_id: String::new(),
            metadata,
            principal,
            admitted: None,
            bytes: 0,
            fresh: true,
            held: Vec::new(),
            held_bytes: 0,
            may_delete: false,
            reserved: false,
        }
    }

    fn tenant(&self) -> Option<&str> {
        self.admitted.as_ref().and_then(|a| a.tenant())
    }

    /// What a denial of this RPC may delete: the invocation, if it belongs to
    /// this RPC's tenant and [`Rpc::may_delete`] holds.
    fn deletable(&self) -> Option<Option<String>> {
        self.may_delete.then(|| self.tenant().map(str::to_string))
    }
}

impl Inner {
    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("slots lock");
        slots.entry(id.to_string()).or_default().clone()
    }

    fn release_slot(&self, id: &str) {
        let mut slots = self.slots.lock().expect("slots lock");
        if slots.get(id).is_some_and(|s| Arc::strong_count(s) == 1) {
            slots.remove(id);
            // No RPC of this invocation is open: let the store drop its handles.
            self.store.release(id);
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    context: "store task panicked".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// One group commit's messages: `first` and every message that has
    /// already arrived, up to [`MAX_BATCH`] messages or the batch byte bound.
    /// Also says whether the client's stream ended, and how if it broke.
    fn take_arrived(
        &self,
        inbound: &mut Streaming<PublishBuildToolEventStreamRequest>,
        first: PublishBuildToolEventStreamRequest,
    ) -> (
        Vec<PublishBuildToolEventStreamRequest>,
        bool,
        Option<Status>,
    ) {
        let mut bytes = prost::Message::encoded_len(&first);
        let mut msgs = vec![first];
        while msgs.len() < MAX_BATCH && bytes < self.limits.batch_bytes {
            match inbound.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    bytes += prost::Message::encoded_len(&m);
                    msgs.push(m);
                }
                Some(Some(Err(status))) => {
                    Metrics::add(&self.metrics.streams_broken, 1);
                    return (msgs, true, Some(status));
                }
                Some(None) => return (msgs, true, None),
                None => break,
            }
        }
        (msgs, false, None)
    }

    /// Reads the RPC's messages, one group commit at a time, and sends the
    /// acks; ends on the client's close, a refusal, an idle timeout or the
    /// end of a drain.
    async fn run(
        self: Arc<Self>,
        mut inbound: Streaming<PublishBuildToolEventStreamRequest>,
        metadata: tonic::metadata::MetadataMap,
        principal: Option<String>,
        tx: mpsc::Sender<Result<PublishBuildToolEventStreamResponse, Status>>,
        _permit: PeerPermit,
        _tracked: Option<crate::drain::Tracked>,
    ) {
        let mut rpc = Rpc::new(metadata, principal);
        let mut wait = self.limits.first_message_timeout;
        let drain = self.drain.clone();
        let closing = async move {
            match drain {
                Some(d) => d.closing().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(closing);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut closing => {
                    // The drain bound passed: end here (everything acked is stored);
                    // Bazel resumes on a new RPC, which the balancer sends elsewhere.
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "this proof serve replica is shutting down; resume the stream on another replica",
                        )))
                        .await;
                    break;
                }
                next = tokio::time::timeout(wait, inbound.next()) => next,
            };
            let Ok(next) = next else {
                Metrics::add(&self.metrics.stream_errors_idle, 1);
                let _ = tx
                    .send(Err(Status::deadline_exceeded(format!(
                        "no message on this RPC for {}s; closed (a client resumes on a new RPC)",
                        wait.as_secs()
                    ))))
                    .await;
                break;
            };
            wait = self.limits.idle_timeout;
            let first = match next {
                None => {
                    if let Some(status) = self.held_at_end(&mut rpc).await {
                        let _ = tx.send(Err(status)).await;
                    }
                    break;
                }
                Some(Ok(m)) => m,
                Some(Err(status)) => {
                    Metrics::add(&self.metrics.streams_broken, 1);
                    tracing::debug!(%status, "client stream ended with an error");
                    // Not OK: a client still listening must not take this for success.
                    let _ = tx.send(Err(inbound_status(status))).await;
                    break;
                }
            };
            let (msgs, mut end, broken) = self.take_arrived(&mut inbound, first);
            let (acks, refusal) = self.batch(&mut rpc, msgs).await;
            for a in acks {
                if tx.send(Ok(a)).await.is_err() {
                    end = true;
                    break;
                }
                Metrics::add(&self.metrics.acks_sent, 1);
            }
            if let Some(status) = refusal {
                if status.code() == tonic::Code::InvalidArgument {
                    Metrics::add(&self.metrics.stream_errors_invalid, 1);
                }
                tracing::warn!(invocation = ?rpc.invocation_id, %status, "refused a BES stream");
                let _ = tx.send(Err(status)).await;
                break;
            }
            if let Some(status) = broken {
                tracing::debug!(%status, "client stream ended with an error");
                let _ = tx.send(Err(inbound_status(status))).await;
                break;
            }
            if end {
                if let Some(status) = self.held_at_end(&mut rpc).await {
                    let _ = tx.send(Err(status)).await;
                }
                break;
            }
        }
        if let Some(id) = rpc.invocation_id {
            if rpc.reserved {
                self.unreserve(&id);
            }
            self.release_slot(&id);
        }
    }
}

#[tonic::async_trait]
impl PublishBuildEvent for BesService {
    async fn publish_lifecycle_event(
        &self,
        request: Request<PublishLifecycleEventRequest>,
    ) -> Result<Response<()>, Status> {
        self.inner.refuse_if_draining()?;
        let metadata = request.metadata().clone();
        let principal = request.extensions().get::<Principal>().map(|p| p.0.clone());
        let req = request.into_inner();
        let project_id = req.project_id.clone();
        let obe = req
            .build_event
            .ok_or_else(|| invalid("lifecycle request has no build_event"))?;
        let sid = obe
            .stream_id
            .ok_or_else(|| invalid("lifecycle build_event has no stream_id"))?;
        if sid.build_id.is_empty() {
            return Err(invalid("lifecycle stream_id.build_id is empty"));
        }
        let ev = obe
            .event
            .ok_or_else(|| invalid("lifecycle build_event has no event"))?;
        let at = ts_ms(ev.event_time.as_ref())?;
        let event = match ev.event {
            Some(Event::BuildEnqueued(_)) => LifecycleEvent::BuildEnqueued { at_ms: at },
            Some(Event::InvocationAttemptStarted(a)) => LifecycleEvent::InvocationAttemptStarted {
                attempt_number: u64::try_from(a.attempt_number).unwrap_or(0),
                at_ms: at,
            },
            Some(Event::InvocationAttemptFinished(f)) => {
                LifecycleEvent::InvocationAttemptFinished {
                    status: status_name(f.invocation_status.as_ref()),
                    at_ms: at,
                }
            }
            Some(Event::BuildFinished(f)) => LifecycleEvent::BuildFinished {
                status: status_name(f.status.as_ref()),
                at_ms: at,
            },
            other => {
                return Err(invalid(format!(
                    "lifecycle event of kind {:?} is not a lifecycle event",
                    other.map(|_| "stream event")
                )))
            }
        };
        let _ = sid.component == BuildComponent::Controller as i32;
        Metrics::add(&self.inner.metrics.lifecycle_events, 1);
        let invocation = Some(sid.invocation_id).filter(|s| !s.is_empty());
        let owner = match invocation.clone() {
            Some(inv) => self
                .inner
                .blocking(move |s| s.get(&inv))
                .await
                .map_err(store_status)?
                .map(|r| r.meta.tenant),
            None => None,
        };
        if let Err(r) = self.inner.admission.admit_lifecycle(
            &metadata,
            &project_id,
            invocation.as_deref(),
            owner.as_ref().map(|t| t.as_deref()),
        ) {
            self.inner.metrics.denied(r.reason);
            return Err(r.status);
        }
        // The rows belong to the tenant that wrote them (see `Store::record_lifecycle`).
        let tenant = match principal {
            Some(p) => p,
            None => self.inner.admission.authenticate(&metadata).map_err(|r| {
                self.inner.metrics.denied(r.reason);
                r.status
            })?,
        };
        self.inner
            .blocking(move |s| {
                s.record_lifecycle(
                    &sid.build_id,
                    invocation.as_deref(),
                    tenant.as_deref(),
                    event,
                )
            })
            .await
            .map_err(|e| match e {
                // The invocation was opened by another tenant since the check above.
                StoreError::TenantMismatch { .. } => {
                    self.inner.metrics.denied("INVOCATION_OF_OTHER_TENANT");
                    Status::permission_denied(e.to_string())
                }
                e => store_status(e),
            })?;
        Ok(Response::new(()))
    }

    type PublishBuildToolEventStreamStream = AckStream;

    async fn publish_build_tool_event_stream(
        &self,
        request: Request<Streaming<PublishBuildToolEventStreamRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        Metrics::add(&self.inner.metrics.streams_opened, 1);
        let principal = match request.extensions().get::<Principal>() {
            Some(p) => p.0.clone(),
            // Served without the interceptor: authenticate here, still
            // before any message is read.
            None => self
                .inner
                .admission
                .authenticate(request.metadata())
                .map_err(|r| {
                    self.inner.metrics.denied(r.reason);
                    r.status
                })?,
        };
        self.inner.refuse_if_draining()?;
        let permit = self.inner.peer_permit(request.remote_addr())?;
        let metadata = request.metadata().clone();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_BUFFER);
        let tracked = self.inner.drain.as_ref().map(|d| d.track_rpc());
        tokio::spawn(
            self.inner
                .clone()
                .run(inbound, metadata, principal, tx, permit, tracked),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
