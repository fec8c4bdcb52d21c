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
use proof_ingest::{batch_flags, Finalized};
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

/// Called (on a blocking thread) after an invocation was finalized, e.g. to
/// write its proof artifact.
pub trait OnFinalized: Send + Sync + 'static {
    fn on_finalized(&self, store: &dyn Store, finalized: &Finalized);
}

/// A refused stream or request: the status to answer with, and the reason
/// counted in [`Metrics::denials`] (the `ErrorInfo.reason` of the status).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: Status,
    pub reason: &'static str,
}

/// What admission sees when an RPC's first batch arrives.
pub struct Opening<'a> {
    pub metadata: &'a tonic::metadata::MetadataMap,
    /// BES `project_id` (`--bes_instance_name`); "" when not set.
    pub project_id: &'a str,
    pub invocation_id: &'a str,
    /// `None`: a new invocation. `Some(tenant)`: the invocation exists (a
    /// retry or a resumed stream) and belongs to `tenant`.
    pub existing: Option<Option<&'a str>>,
}

/// Decides whether a stream may be stored (tenant enforcement plugs in here).
pub trait Admission: Send + Sync + 'static {
    /// Called when an RPC opens, from its metadata alone, before any message
    /// of it is read or decoded. Returns the authenticated principal (a tenant
    /// id; `None` when the server has no tenants), or the refusal.
    fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<String>, Refusal> {
        let _ = metadata;
        Ok(None)
    }

    /// Called once per RPC, before anything of it is stored, with the request
    /// metadata and the first request. Returns the per-RPC gate, or the refusal.
    /// The gate is dropped when the RPC ends.
    fn admit(&self, opening: &Opening<'_>) -> Result<Box<dyn Admitted>, Refusal>;

    /// Called for each lifecycle request before it is recorded. `owner` is
    /// `Some(tenant)` when the named invocation exists.
    fn admit_lifecycle(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        project_id: &str,
        invocation_id: Option<&str>,
        owner: Option<Option<&str>>,
    ) -> Result<(), Refusal> {
        let _ = (metadata, project_id, invocation_id, owner);
        Ok(())
    }
}

/// The per-RPC gate returned by [`Admission::admit`].
pub trait Admitted: Send {
    /// The tenant the invocation belongs to.
    fn tenant(&self) -> Option<&str>;
    /// Called for every new BEP event before it is stored, with the
    /// serialized event. The gate must judge the event by its payload, never
    /// by its id: a client chooses ids freely, and the evidence reads payloads.
    /// A refusal discards the whole invocation.
    fn check_event(&mut self, event: &[u8]) -> Result<(), Refusal> {
        let _ = event;
        Ok(())
    }
    /// Whether the stream may be stored yet. While `false` (the gate still
    /// waits for an event it needs, e.g. the canonical command line) the
    /// server holds the RPC's events, unstored and unacked.
    fn ready(&self) -> bool {
        true
    }
    /// The refusal when the gate is still not [`ready`](Self::ready) and the
    /// server will hold no more: `held` events are waiting, `at_end` the
    /// stream ended (or finished) first.
    fn not_ready(&self, held: usize, at_end: bool) -> Refusal {
        Refusal {
            status: Status::permission_denied(format!(
                "the stream was not admitted after {held} events{}",
                if at_end { " (it ended)" } else { "" }
            )),
            reason: "NOT_READY",
        }
    }
    /// The refusal of a stream for an invocation that belongs to another
    /// tenant, or that another tenant's open RPC has reserved (found when the
    /// store refuses an append, or at admission).
    fn not_owner(&self, invocation_id: &str) -> Refusal {
        Refusal {
            status: Status::permission_denied(format!(
                "invocation {invocation_id} is not this tenant's; a tenant may only continue its own invocations"
            )),
            reason: "INVOCATION_OF_OTHER_TENANT",
        }
    }
    /// Called before a batch is stored with the invocation's payload bytes
    /// after it. A refusal discards the whole invocation.
    fn check_bytes(&mut self, bytes_after: u64) -> Result<(), Refusal> {
        let _ = bytes_after;
        Ok(())
    }
}

/// Admits every stream, tenant-less.
pub struct OpenAdmission;

struct OpenAdmitted;

impl Admitted for OpenAdmitted {
    fn tenant(&self) -> Option<&str> {
        None
    }
}

impl Admission for OpenAdmission {
    fn admit(&self, _: &Opening<'_>) -> Result<Box<dyn Admitted>, Refusal> {
        Ok(Box::new(OpenAdmitted))
    }
}

/// Invocations whose stream was denied after events were stored, and
/// deleted: a retry gets the same answer instead of a sequence error. The
/// answer names the principal's limits, so only that principal gets it.
#[derive(Default)]
struct DeniedMemory {
    by_id: HashMap<String, (Option<String>, Refusal)>,
    order: std::collections::VecDeque<String>,
}

/// How many denied invocations are remembered.
const DENIED_MEMORY: usize = 4096;

impl DeniedMemory {
    fn remember(&mut self, id: &str, principal: Option<String>, r: Refusal) {
        if self.by_id.insert(id.to_string(), (principal, r)).is_none() {
            self.order.push_back(id.to_string());
            if self.order.len() > DENIED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
    }
}

/// Bounds on what one peer and one RPC may cost the server.
///
/// Memory in flight: an RPC holds at most one group commit
/// (`batch_bytes`, plus the one message that crossed it, at most the gRPC
/// message limit) and, before its gate is ready, [`HOLD_MAX_BYTES`]; HTTP/2
/// flow control bounds what is buffered below that. A peer opens at most
/// `rpcs_per_peer` tool-event RPCs at once, a tenant at most its
/// `concurrent_streams` quota (docs/tenants.md).
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Open PublishBuildToolEventStream RPCs per peer IP address.
    pub rpcs_per_peer: usize,
    /// An RPC that sends no first message for this long is closed.
    pub first_message_timeout: Duration,
    /// An RPC that sends nothing for this long between messages is closed
    /// (DEADLINE_EXCEEDED; Bazel resumes on a new RPC).
    pub idle_timeout: Duration,
    /// Message bytes taken into one group commit.
    pub batch_bytes: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            rpcs_per_peer: 64,
            first_message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            batch_bytes: 32 << 20,
        }
    }
}

/// Open RPCs per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<std::net::IpAddr, usize>>);

/// One open RPC of a peer; gives the place back when dropped.
struct PeerPermit {
    inner: Arc<Inner>,
    ip: Option<std::net::IpAddr>,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self.inner.peers.0.lock().expect("peers lock");
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// The principal [`Admission::authenticate`] found when the RPC opened,
/// carried from the interceptor to the handler in the request extensions.
#[derive(Debug, Clone)]
pub struct Principal(pub Option<String>);

/// The tonic interceptor of the BES service: authenticates every RPC from
/// its metadata before any message is decoded (a refused RPC costs no more
/// than its headers).
#[derive(Clone)]
pub struct Authenticate {
    admission: Arc<dyn Admission>,
    metrics: Arc<Metrics>,
}

impl Authenticate {
    pub fn new(admission: Arc<dyn Admission>, metrics: Arc<Metrics>) -> Self {
        Authenticate { admission, metrics }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.admission.authenticate(request.metadata()) {
            Ok(p) => {
                request.extensions_mut().insert(Principal(p));
                Ok(request)
            }
            Err(r) => {
                self.metrics.denied(r.reason);
                Err(r.status)
            }
        }
    }
}

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

/// One parsed tool-stream message.
struct Parsed {
    stream_id: StreamId,
    seq: u64,
    kind: RecordKind,
    payload: Bytes,
    probe: Option<Probe>,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn parse(req: PublishBuildToolEventStreamRequest) -> Result<Parsed, Status> {
    let OrderedBuildEvent {
        stream_id,
        sequence_number,
        event,
    } = req.ordered_build_event.ok_or_else(|| {
        invalid("request has no ordered_build_event; this is not a Bazel BES stream")
    })?;
    let stream_id = stream_id.ok_or_else(|| invalid("ordered_build_event has no stream_id"))?;
    if stream_id.invocation_id.is_empty() {
        return Err(invalid(
            "stream_id.invocation_id is empty; the tool event stream must name its invocation",
        ));
    }
    if stream_id.invocation_id.len() > proof_artifact::MAX_INVOCATION_ID_LEN {
        return Err(invalid(format!(
            "stream_id.invocation_id is {} characters, longer than the {} a proof can be named \
             with; let Bazel choose the id (a UUID) or pass a shorter --invocation_id",
            stream_id.invocation_id.len(),
            proof_artifact::MAX_INVOCATION_ID_LEN
        )));
    }
    let seq = u64::try_from(sequence_number)
        .map_err(|_| invalid(format!("sequence_number {sequence_number} is negative")))?;
    let event = event.ok_or_else(|| invalid(format!("event {seq} has no event")))?;
    let (kind, payload, probe) = match event.event {
        Some(Event::BazelEvent(any)) => {
            if any.type_url != proof_proto::BEP_EVENT_TYPE_URL {
                return Err(invalid(format!(
                    "event {seq}: bazel_event has type {:?}, expected {:?}",
                    any.type_url,
                    proof_proto::BEP_EVENT_TYPE_URL
                )));
            }
            if any.value.len() > proof_store::MAX_EVENT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "event {seq} is {} bytes, larger than the {} bytes this server stores per event; \
                     the event cannot be stored (Bazel's upload of this invocation will fail)",
                    any.value.len(),
                    proof_store::MAX_EVENT_BYTES
                )));
            }
            let p = probe(&any.value).map_err(|e| invalid(format!("event {seq}: {e}")))?;
            // The event's bytes move into the journal record: no copy.
            (RecordKind::BepEvent, Bytes::from(any.value), Some(p))
        }
        // ComponentStreamFinished, and every other kind, including ones
        // newer than our schema (prost sees no variant then): stored as they
        // decode and acked, never refused.
        other => {
            let kind = if matches!(other, Some(Event::ComponentStreamFinished(_))) {
                RecordKind::StreamFinished
            } else {
                RecordKind::Other
            };
            let event = BuildEvent {
                event_time: event.event_time,
                event: other,
            };
            (
                kind,
                Bytes::from(prost::Message::encode_to_vec(&event)),
                None,
            )
        }
    };
    Ok(Parsed {
        stream_id,
        seq,
        kind,
        payload,
        probe,
    })
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidInvocationId { .. } | StoreError::InvalidBuildId { .. } => {
            invalid(e.to_string())
        }
        StoreError::AlreadyFinalized(_) | StoreError::TenantMismatch { .. } => {
            Status::failed_precondition(e.to_string())
        }
        // Retrying cannot help: the same event is as large next time.
        StoreError::RecordTooLarge { .. } => Status::resource_exhausted(e.to_string()),
        other => Status::unavailable(format!("storage failed, retry later: {other}")),
    }
}

fn ack(p: &Parsed) -> PublishBuildToolEventStreamResponse {
    PublishBuildToolEventStreamResponse {
        stream_id: Some(p.stream_id.clone()),
        sequence_number: p.seq as i64,
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

    /// Handles one batch. Returns the acks to send, and the status to end the
    /// RPC with if a message was refused (its acks are for the messages before it).
    async fn batch(
        self: &Arc<Self>,
        rpc: &mut Rpc,
        msgs: Vec<PublishBuildToolEventStreamRequest>,
    ) -> (Vec<PublishBuildToolEventStreamResponse>, Option<Status>) {
        let mut parsed = Vec::with_capacity(msgs.len());
        let mut refusal = None;
        for m in msgs {
            if rpc.project_id.is_empty() && !m.project_id.is_empty() {
                rpc.project_id.clone_from(&m.project_id);
            }
            match parse(m) {
                Ok(p) => {
                    let id = &p.stream_id.invocation_id;
                    match &rpc.invocation_id {
                        None => rpc.invocation_id = Some(id.clone()),
                        Some(known) if known != id => {
                            refusal = Some(invalid(format!(
                                "one RPC carries two invocations ({known} and {id}); open one stream per invocation"
                            )));
                            break;
                        }
                        Some(_) => {}
                    }
                    parsed.push(p);
                }
                Err(s) => {
                    refusal = Some(s);
                    break;
                }
            }
        }
        let Some(id) = rpc.invocation_id.clone() else {
            return (Vec::new(), refusal);
        };
        if parsed.is_empty() {
            return (Vec::new(), refusal);
        }
        let slot = self.slot(&id);
        let mut guard = slot.lock().await;
        // A denied and deleted invocation: every later batch, on this RPC or
        // a retry, gets the same denial and stores nothing.
        let remembered = self
            .denied
            .lock()
            .expect("denied lock")
            .by_id
            .get(&id)
            .filter(|(who, _)| *who == rpc.principal)
            .map(|(_, r)| r.clone());
        if let Some(r) = remembered {
            self.metrics.denied(r.reason);
            return (Vec::new(), Some(r.status));
        }
        if rpc.admitted.is_none() {
            if let Err(status) = self.admit_rpc(rpc, &id).await {
                return (Vec::new(), Some(status));
            }
        }
        // A gate that is not ready yet (a tenant's stream before its canonical
        // command line): every new event is checked now and held, unstored and
        // unacked, until the gate is ready; refused if it never gets ready.
        let mut prechecked = 0;
        if !rpc.held.is_empty() || rpc.admitted.as_ref().is_some_and(|g| !g.ready()) {
            let gate = rpc.admitted.as_mut().expect("admitted above");
            for p in &parsed {
                if p.probe.is_some() {
                    if let Err(r) = gate.check_event(&p.payload) {
                        rpc.held.clear();
                        let status = self
                            .discard(&id, rpc.principal.clone(), r, rpc.deletable())
                            .await;
                        guard.reset();
                        return (Vec::new(), Some(status));
                    }
                }
            }
            rpc.held_bytes += parsed.iter().map(|p| p.payload.len()).sum::<usize>();
            rpc.held.append(&mut parsed);
            if !gate.ready() {
                let finished = rpc
                    .held
                    .iter()
                    .any(|p| p.kind == RecordKind::StreamFinished);
                if finished || rpc.held.len() > HOLD_MAX_EVENTS || rpc.held_bytes > HOLD_MAX_BYTES {
                    let r = gate.not_ready(rpc.held.len(), finished);
                    rpc.held.clear();
                    let status = self
                        .discard(&id, rpc.principal.clone(), r, rpc.deletable())
                        .await;
                    guard.reset();
                    return (Vec::new(), Some(status));
                }
                return (Vec::new(), refusal);
            }
            parsed = std::mem::take(&mut rpc.held);
            rpc.held_bytes = 0;
            prechecked = parsed.len();
        }
        // The finish is stored but finalizing never ran (the server died in
        // between): the re-sent events of the retry trigger it.
        let mut unfinalized = false;
        let cached = if rpc.fresh { None } else { guard.pos };
        rpc.fresh = false;
        let mut pos = match cached {
            Some(p) => p,
            None => {
                let sid = id.clone();
                match self.blocking(move |s| s.state(&sid)).await {
                    Ok(Some(st)) => {
                        unfinalized = st.saw_stream_finished && !st.finalized;
                        Position {
                            accepted: st.last_seq,
                            finished_at: st.saw_stream_finished.then_some(st.last_seq),
                        }
                    }
                    Ok(None) => Position::default(),
                    Err(e) => return (Vec::new(), Some(store_status(e))),
                }
            }
        };
        let start_pos = pos;
        // Re-sent events are compared with what was stored: digests of the
        // recent window, else read back from the journal once.
        let missing = parsed
            .iter()
            .filter(|p| (1..=pos.accepted).contains(&p.seq))
            .filter(|p| !guard.digests.contains_key(&p.seq))
            .map(|p| p.seq)
            .min();
        if let Some(from) = missing {
            let (sid, h, upto) = (id.clone(), self.hasher.clone(), pos.accepted);
            let loaded = self
                .blocking(move |s| {
                    let mut m = std::collections::BTreeMap::new();
                    for r in s.read(&sid)? {
                        let r = r?;
                        if (from..=upto).contains(&r.seq) {
                            m.insert(r.seq, digest(&h, r.kind, &r.payload));
                        }
                    }
                    Ok(m)
                })
                .await;
            match loaded {
                Ok(m) => guard.digests.extend(m),
                Err(e) => return (Vec::new(), Some(store_status(e))),
            }
        }
        // Decide every message; `acks` holds (message index, is_new).
        let mut acks = Vec::with_capacity(parsed.len());
        let mut new_from: Option<usize> = None;
        // Admission refused an event: the whole invocation is discarded.
        let mut denial: Option<Refusal> = None;
        for (i, p) in parsed.iter().enumerate() {
            match rpc.seq.decide(pos, p.seq) {
                Decision::Duplicate => {
                    let stored = guard.digests.get(&p.seq).copied();
                    if stored != Some(digest(&self.hasher, p.kind, &p.payload)) {
                        Metrics::add(&self.metrics.stream_errors_sequence, 1);
                        refusal = Some(Status::failed_precondition(format!(
                            "invocation {id}: event {} was already stored with different bytes; \
                             a re-sent event must be byte-identical to the one acked",
                            p.seq
                        )));
                        break;
                    }
                    Metrics::add(&self.metrics.events_duplicate, 1);
                    acks.push(i);
                }
                Decision::Append => {
                    if p.seq == 1 {
                        let started = p.probe.as_ref().and_then(|pr| pr.started_uuid.as_deref());
                        match started {
                            None => {
                                refusal = Some(invalid(format!(
                                    "event 1 of invocation {id} is not BuildStarted ({}); a BEP stream starts with BuildStarted",
                                    p.probe.as_ref().map_or("not a BEP event", |pr| pr.kind)
                                )));
                                break;
                            }
                            Some(uuid) if uuid != id => {
                                refusal = Some(invalid(format!(
                                    "BuildStarted.uuid {uuid} differs from the stream's invocation_id {id}"
                                )));
                                break;
                            }
                            Some(_) => {}
                        }
                    } else if let Some(uuid) =
                        p.probe.as_ref().and_then(|pr| pr.started_uuid.as_deref())
                    {
                        // The evidence takes its id from BuildStarted: a second one
                        // could name another invocation (and its proof file).
                        refusal = Some(invalid(format!(
                            "event {} of invocation {id} is a second BuildStarted (uuid {uuid}); a BEP stream has one, as event 1",
                            p.seq
                        )));
                        break;
                    }
                    if let (Some(gate), Some(_), true) =
                        (rpc.admitted.as_mut(), p.probe.as_ref(), i >= prechecked)
                    {
                        if let Err(r) = gate.check_event(&p.payload) {
                            denial = Some(r);
                            break;
                        }
                    }
                    new_from.get_or_insert(i);
                    pos.accepted = p.seq;
                    if p.kind == RecordKind::StreamFinished {
                        pos.finished_at = Some(p.seq);
                    }
                    acks.push(i);
                }
                Decision::Reject(v) => {
                    Metrics::add(&self.metrics.stream_errors_sequence, 1);
                    refusal = Some(Status::failed_precondition(format!("invocation {id}: {v}")));
                    break;
                }
            }
        }
        let records: Vec<JournalRecord> = acks
            .iter()
            .filter(|&&i| parsed[i].seq > start_pos.accepted)
            .map(|&i| JournalRecord {
                seq: parsed[i].seq,
                kind: parsed[i].kind,
                payload: parsed[i].payload.clone(),
            })
            .collect();
        if denial.is_none() && !records.is_empty() {
            let add: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
            if let Some(gate) = rpc.admitted.as_mut() {
                if let Err(r) = gate.check_bytes(rpc.bytes.saturating_add(add)) {
                    denial = Some(r);
                }
            }
        }
        if let Some(r) = denial {
            // Deleted while this RPC holds the invocation's slot: no other
            // RPC of it can append in between.
            let status = self
                .discard(&id, rpc.principal.clone(), r, rpc.deletable())
                .await;
            guard.reset();
            drop(guard);
            return (Vec::new(), Some(status));
        }
        let mut finished_now = false;
        if !records.is_empty() {
            let flags: AppendFlags = batch_flags(
                records
                    .iter()
                    .zip(acks.iter())
                    .filter_map(|(_, &i)| parsed[i].probe.as_ref()),
                records.iter().any(|r| r.kind == RecordKind::StreamFinished),
            );
            finished_now = flags.saw_stream_finished;
            let n_bep = records
                .iter()
                .filter(|r| r.kind == RecordKind::BepEvent)
                .count() as u64;
            // The owner is checked by the store on every append, under the
            // invocation's lock: whatever admission saw, a stream never adds to
            // (or creates over) another tenant's invocation.
            let meta = InvocationMeta {
                invocation_id: id.clone(),
                build_id: Some(parsed[0].stream_id.build_id.clone()).filter(|b| !b.is_empty()),
                source: InvocationSource::Bes,
                tenant: rpc.tenant().map(str::to_string),
                instance: Some(rpc.project_id.clone()).filter(|p| !p.is_empty()),
                created_at_ms: now_ms(),
            };
            let new_digests: Vec<(u64, u64)> = records
                .iter()
                .map(|r| (r.seq, digest(&self.hasher, r.kind, &r.payload)))
                .collect();
            let t0 = Instant::now();
            let res = self
                .blocking(move |s| s.append_as(&meta, &records, flags))
                .await;
            Metrics::add(&self.metrics.store_commits, 1);
            Metrics::add(
                &self.metrics.store_commit_micros,
                t0.elapsed().as_micros() as u64,
            );
            if let Ok(st) = &res {
                rpc.bytes = st.bytes;
                rpc.may_delete = true;
            }
            if let Err(StoreError::TenantMismatch { .. }) = res {
                guard.reset();
                let r = match rpc.admitted.as_ref() {
                    Some(gate) => gate.not_owner(&id),
                    None => OpenAdmitted.not_owner(&id),
                };
                self.metrics.denied(r.reason);
                return (Vec::new(), Some(r.status));
            }
            if let Err(e) = res {
                Metrics::add(&self.metrics.stream_errors_store, 1);
                guard.reset(); // reload from the store next time
                let first_new = new_from.unwrap_or(acks.len());
                let acks = acks
                    .iter()
                    .take_while(|&&i| i < first_new)
                    .map(|&i| ack(&parsed[i]))
                    .collect();
                return (acks, Some(store_status(e)));
            }
            Metrics::add(&self.metrics.events_ingested, n_bep);
            guard.digests.extend(new_digests);
            while guard.digests.len() > DIGEST_WINDOW {
                guard.digests.pop_first();
            }
            self.activity
                .lock()
                .expect("activity lock")
                .insert(id.clone(), Instant::now());
        }
        guard.pos = Some(pos);
        drop(guard);
        if finished_now || unfinalized {
            self.spawn_finalize(id);
        }
        (acks.iter().map(|&i| ack(&parsed[i])).collect(), refusal)
    }

    /// Lets the RPC in or refuses it, before anything of it is stored.
    async fn admit_rpc(&self, rpc: &mut Rpc, id: &str) -> Result<(), Status> {
        let sid = id.to_string();
        let rec = self
            .blocking(move |s| s.get(&sid))
            .await
            .map_err(store_status)?;
        let opening = Opening {
            metadata: &rpc.metadata,
            project_id: &rpc.project_id,
            invocation_id: id,
            existing: rec.as_ref().map(|r| r.meta.tenant.as_deref()),
        };
        let gate = self.admission.admit(&opening).map_err(|r| {
            self.metrics.denied(r.reason);
            r.status
        })?;
        // Admission let it in only if it is new or this tenant's own.
        let tenant = gate.tenant().map(str::to_string);
        {
            let mut reserved = self.reserved.lock().expect("reserved lock");
            let entry = reserved
                .entry(id.to_string())
                .or_insert((tenant.clone(), 0));
            if entry.0 != tenant {
                let r = gate.not_owner(id);
                self.metrics.denied(r.reason);
                return Err(r.status);
            }
            entry.1 += 1;
        }
        rpc.reserved = true;
        rpc.may_delete = rec.is_some();
        rpc.bytes = rec.map_or(0, |r| r.state.bytes);
        rpc.admitted = Some(gate);
        Ok(())
    }

    /// Gives back the RPC's place in [`Inner::reserved`].
    fn unreserve(&self, id: &str) {
        let mut reserved = self.reserved.lock().expect("reserved lock");
        if let Some(entry) = reserved.get_mut(id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                reserved.remove(id);
            }
        }
    }

    /// A place for one more RPC of the peer at `addr`, or RESOURCE_EXHAUSTED.
    fn peer_permit(
        self: &Arc<Self>,
        addr: Option<std::net::SocketAddr>,
    ) -> Result<PeerPermit, Status> {
        let ip = addr.map(|a| a.ip());
        if let Some(ip) = ip {
            let mut m = self.peers.0.lock().expect("peers lock");
            let n = m.entry(ip).or_default();
            if *n >= self.limits.rpcs_per_peer {
                Metrics::add(&self.metrics.stream_errors_peer_limit, 1);
                return Err(Status::resource_exhausted(format!(
                    "{} tool-event RPCs from {ip} are open, the most this server allows per peer; close finished streams or raise `proof serve --max-rpcs-per-peer`",
                    self.limits.rpcs_per_peer
                )));
            }
            *n += 1;
        }
        Ok(PeerPermit {
            inner: self.clone(),
            ip,
        })
    }

    /// The refusal of an RPC that ended while its gate still held events.
    async fn held_at_end(&self, rpc: &mut Rpc) -> Option<Status> {
        if rpc.held.is_empty() {
            return None;
        }
        let (Some(id), Some(gate)) = (rpc.invocation_id.clone(), rpc.admitted.as_ref()) else {
            return None;
        };
        let r = gate.not_ready(rpc.held.len(), true);
        rpc.held.clear();
        let slot = self.slot(&id);
        let _guard = slot.lock().await;
        Some(
            self.discard(&id, rpc.principal.clone(), r, rpc.deletable())
                .await,
        )
    }

    /// Deletes an invocation whose stream was denied after some of its events
    /// were stored, remembers the denial for retries, and returns the status
    /// to answer with. The caller holds the invocation's slot. `delete`:
    /// `Some(tenant)` when the denied RPC may delete the invocation
    /// ([`Rpc::deletable`]); it is deleted only if it belongs to that tenant.
    async fn discard(
        &self,
        id: &str,
        principal: Option<String>,
        r: Refusal,
        delete: Option<Option<String>>,
    ) -> Status {
        self.metrics.denied(r.reason);
        let sid = id.to_string();
        let res = self
            .blocking(move |s| {
                let Some(tenant) = delete else {
                    return Ok(false);
                };
                match s.get(&sid)? {
                    Some(rec) if rec.meta.tenant == tenant => {
                        s.delete(&sid)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await;
        match res {
            Ok(true) => Metrics::add(&self.metrics.denied_invocations_deleted, 1),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(invocation = %id, error = %e, "deleting a denied invocation failed")
            }
        }
        self.denied
            .lock()
            .expect("denied lock")
            .remember(id, principal, r.clone());
        r.status
    }

    /// One abandon sweep (blocking): see [`BesService::sweep_abandoned`].
    fn sweep(&self, after: Duration) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut done = 0;
        let mut cursor = None;
        loop {
            let page = self.store.list(&proof_store::ListFilter {
                complete: Some(false),
                limit: 1000,
                cursor: cursor.clone(),
                ..Default::default()
            })?;
            let Some(last) = page.last() else { break };
            cursor = Some(proof_store::ListCursor::after(last));
            for rec in page.iter().filter(|r| !r.state.finalized) {
                let id = &rec.meta.invocation_id;
                let hook = self.on_finalized.as_deref();
                if rec.state.saw_stream_finished {
                    // Finished, never finalized: whoever acked the finish died before
                    // finalizing (another replica, or this process before a restart).
                    if let Some(f) = finalize_once(self.store.as_ref(), id, hook)? {
                        self.activity.lock().expect("activity lock").remove(id);
                        Metrics::add(&self.metrics.invocations_finalized, 1);
                        if f.complete {
                            Metrics::add(&self.metrics.invocations_complete, 1);
                        }
                        tracing::info!(invocation = %id, complete = f.complete, "finalized a finished stream");
                        done += 1;
                    }
                    continue;
                }
                // Progress made through another replica (a shared store) counts as activity.
                let moved = {
                    let mut progress = self.progress.lock().expect("progress lock");
                    let prev = progress.insert(id.clone(), rec.state.last_seq);
                    prev.is_some_and(|p| p != rec.state.last_seq)
                };
                if moved {
                    self.activity
                        .lock()
                        .expect("activity lock")
                        .insert(id.clone(), now);
                    continue;
                }
                let seen = self
                    .activity
                    .lock()
                    .expect("activity lock")
                    .get(id)
                    .copied();
                let idle = now.duration_since(seen.unwrap_or(self.started));
                let open = self.slots.lock().expect("slots lock").contains_key(id);
                if idle < after || open {
                    continue;
                }
                let Some(f) = finalize_once(self.store.as_ref(), id, hook)? else {
                    continue;
                };
                self.activity.lock().expect("activity lock").remove(id);
                self.progress.lock().expect("progress lock").remove(id);
                Metrics::add(&self.metrics.invocations_finalized, 1);
                tracing::info!(invocation = %id, complete = f.complete, reason = ?f.reason, "abandoned stream finalized");
                done += 1;
            }
        }
        Ok(done)
    }

    /// New RPCs are refused once the drain began (the client retries elsewhere).
    fn refuse_if_draining(&self) -> Result<(), Status> {
        match &self.drain {
            Some(d) if d.phase() != crate::drain::Phase::Serving => Err(Status::unavailable(
                "this proof serve replica is shutting down; retry on another replica",
            )),
            _ => Ok(()),
        }
    }

    fn spawn_finalize(self: &Arc<Self>, id: String) {
        self.activity.lock().expect("activity lock").remove(&id);
        let inner = self.clone();
        let tracked = self.drain.as_ref().map(|d| d.track_finalization());
        tokio::task::spawn_blocking(move || {
            let _tracked = tracked;
            let hook = inner.on_finalized.as_deref();
            match finalize_once(inner.store.as_ref(), &id, hook) {
                Ok(Some(f)) => {
                    Metrics::add(&inner.metrics.invocations_finalized, 1);
                    if f.complete {
                        Metrics::add(&inner.metrics.invocations_complete, 1);
                    }
                    tracing::info!(invocation = %id, complete = f.complete, reason = ?f.reason, events = f.summary.event_count, "invocation finalized");
                }
                Ok(None) => {
                    tracing::debug!(invocation = %id, "already finalized, or being finalized elsewhere")
                }
                Err(e) => tracing::error!(invocation = %id, error = %e, "finalizing failed"),
            }
        });
    }

    async fn run(
        self: Arc<Self>,
        mut inbound: Streaming<PublishBuildToolEventStreamRequest>,
        metadata: tonic::metadata::MetadataMap,
        principal: Option<String>,
        tx: mpsc::Sender<Result<PublishBuildToolEventStreamResponse, Status>>,
        _permit: PeerPermit,
        _tracked: Option<crate::drain::Tracked>,
    ) {
        let mut rpc = Rpc {
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
        };
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
            let mut bytes = prost::Message::encoded_len(&first);
            let mut msgs = vec![first];
            let mut end = false;
            let mut broken = None;
            while msgs.len() < MAX_BATCH && bytes < self.limits.batch_bytes {
                match inbound.next().now_or_never() {
                    Some(Some(Ok(m))) => {
                        bytes += prost::Message::encoded_len(&m);
                        msgs.push(m);
                    }
                    Some(Some(Err(status))) => {
                        Metrics::add(&self.metrics.streams_broken, 1);
                        broken = Some(status);
                        end = true;
                        break;
                    }
                    Some(None) => {
                        end = true;
                        break;
                    }
                    None => break,
                }
            }
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

/// The status to end an RPC with whose request stream failed to decode:
/// tonic reports a request above the size limit as OUT_OF_RANGE; gRPC's code
/// for it is RESOURCE_EXHAUSTED.
fn inbound_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(format!(
            "request too large for this server: {}; raise `proof serve --max-message-bytes`",
            status.message()
        ))
    } else {
        status
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A client's timestamp in milliseconds, with checked arithmetic: a time
/// that does not fit is refused, never wrapped (or a panic).
fn ts_ms(t: Option<&prost_types::Timestamp>) -> Result<Option<i64>, Status> {
    let Some(t) = t else { return Ok(None) };
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos) / 1_000_000))
        .map(Some)
        .ok_or_else(|| {
            invalid(format!(
                "lifecycle event_time {}s {}ns is out of range; send a real time",
                t.seconds, t.nanos
            ))
        })
}

fn status_name(s: Option<&proof_proto::bes::BuildStatus>) -> String {
    let r = s.map_or(0, |s| s.result);
    proof_proto::bes::build_status::Result::try_from(r)
        .map_or_else(|_| format!("RESULT_{r}"), |r| r.as_str_name().to_string())
}

type AckStream =
    Pin<Box<dyn Stream<Item = Result<PublishBuildToolEventStreamResponse, Status>> + Send>>;

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
