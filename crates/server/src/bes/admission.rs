//! Who may stream: authentication on the request head, admission of an RPC
//! (tenant, instance, ownership, quota) and of each event, and the memory of
//! denied invocations.

use super::*;

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

pub(super) struct OpenAdmitted;

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
pub(super) struct DeniedMemory {
    pub(super) by_id: HashMap<String, (Option<String>, Refusal)>,
    pub(super) order: std::collections::VecDeque<String>,
}

/// How many denied invocations are remembered.
pub(super) const DENIED_MEMORY: usize = 4096;

impl DeniedMemory {
    pub(super) fn remember(&mut self, id: &str, principal: Option<String>, r: Refusal) {
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

/// The principal [`Admission::authenticate`] found when the RPC opened,
/// carried from the interceptor to the handler in the request extensions.
#[derive(Debug, Clone)]
pub struct Principal(pub Option<String>);

/// The tonic interceptor of the BES service: authenticates every RPC from
/// its metadata before any message is decoded (a refused RPC costs no more
/// than its headers).
#[derive(Clone)]
pub struct Authenticate {
    pub(super) admission: Arc<dyn Admission>,
    pub(super) metrics: Arc<Metrics>,
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

impl Inner {
    /// Lets the RPC in or refuses it, before anything of it is stored.
    pub(super) async fn admit_rpc(&self, rpc: &mut Rpc, id: &str) -> Result<(), Status> {
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
    pub(super) fn unreserve(&self, id: &str) {
        let mut reserved = self.reserved.lock().expect("reserved lock");
        if let Some(entry) = reserved.get_mut(id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                reserved.remove(id);
            }
        }
    }
}
