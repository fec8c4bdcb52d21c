//! Tenant enforcement at ingest: the [`Admission`] of `proof serve --tenants`,
//! over the pure decisions of [`proof_tenancy`]. See `docs/tenants.md`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proof_tenancy::{
    command_options, Code, Denial, OptionsSource, QuotaBook, StreamTicket, Tenant, Tenants,
};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::bes::{Admission, Admitted, Opening, Refusal};

/// The pure tenancy crate, re-exported for callers of this module.
pub use proof_tenancy as tenancy;

/// `ErrorInfo`'s type URL inside `google.rpc.Status.details`.
pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// The gRPC status for a denial: the code of its reason, a readable message
/// ending in `[REASON]`, and a `google.rpc.Status` with one `ErrorInfo`
/// (reason, domain "rbe-proof.dev", metadata) in the status details.
pub fn denial_status(d: &Denial) -> Status {
    let code = match d.code() {
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
    };
    let message = d.to_string();
    let info = proof_proto::rpc::ErrorInfo {
        reason: d.reason.as_str().to_string(),
        domain: proof_tenancy::ERROR_DOMAIN.to_string(),
        metadata: d.metadata.clone().into_iter().collect(),
    };
    let details = proof_proto::rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_INFO_TYPE_URL.to_string(),
            value: prost::Message::encode_to_vec(&info),
        }],
    };
    Status::with_details(
        code,
        message,
        Bytes::from(prost::Message::encode_to_vec(&details)),
    )
}

/// The `ErrorInfo` of a status made by [`denial_status`], if any.
pub fn error_info(status: &Status) -> Option<proof_proto::rpc::ErrorInfo> {
    let st: proof_proto::rpc::Status = prost::Message::decode(status.details()).ok()?;
    st.details
        .iter()
        .find(|a| a.type_url == ERROR_INFO_TYPE_URL)
        .and_then(|a| prost::Message::decode(a.value.as_slice()).ok())
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Self {
        Refusal {
            status: denial_status(&d),
            reason: d.reason.as_str(),
        }
    }
}

/// The tenant of an `authorization` metadata value.
fn authorization(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

/// Enforces a tenants file on every BES RPC.
pub struct TenantAdmission {
    tenants: Arc<Tenants>,
    book: Arc<Mutex<QuotaBook>>,
    now_ms: fn() -> i64,
}

impl TenantAdmission {
    pub fn new(tenants: Arc<Tenants>) -> Self {
        TenantAdmission {
            tenants,
            book: Arc::default(),
            now_ms: wall_ms,
        }
    }

    /// Open streams of a tenant (for tests and diagnostics).
    pub fn open_streams(&self, tenant: &str) -> u32 {
        self.book.lock().expect("quota lock").open_streams(tenant)
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Admission for TenantAdmission {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Option<String>, Refusal> {
        let t = self.tenants.authenticate(authorization(metadata))?;
        Ok(Some(t.id.clone()))
    }

    fn admit(&self, o: &Opening<'_>) -> Result<Box<dyn Admitted>, Refusal> {
        let t = self.tenants.authenticate(authorization(o.metadata))?;
        t.check_bes_instance(o.project_id)?;
        if let Some(owner) = o.existing {
            t.check_owner(o.invocation_id, owner)?;
        }
        let ticket =
            self.book
                .lock()
                .expect("quota lock")
                .open(t, o.existing.is_none(), (self.now_ms)())?;
        Ok(Box::new(TenantStream {
            tenant: t.clone(),
            ticket: Some(ticket),
            book: self.book.clone(),
            // An existing invocation was only stored after its canonical
            // command line passed (a retry does not re-send acked events).
            command_line_seen: o.existing.is_some(),
        }))
    }

    fn admit_lifecycle(
        &self,
        metadata: &MetadataMap,
        project_id: &str,
        invocation_id: Option<&str>,
        owner: Option<Option<&str>>,
    ) -> Result<(), Refusal> {
        let t = self.tenants.authenticate(authorization(metadata))?;
        t.check_bes_instance(project_id)?;
        if let (Some(id), Some(owner)) = (invocation_id, owner) {
            t.check_owner(id, owner)?;
        }
        Ok(())
    }
}

/// One admitted RPC: checks the options of every event by payload and the
/// bytes; holds the stream until its canonical command line was checked;
/// gives its stream slot back when dropped.
struct TenantStream {
    tenant: Tenant,
    ticket: Option<StreamTicket>,
    book: Arc<Mutex<QuotaBook>>,
    command_line_seen: bool,
}

impl Admitted for TenantStream {
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant.id)
    }

    fn check_event(&mut self, event: &[u8]) -> Result<(), Refusal> {
        // Whatever the event's id: a canonical command line or OptionsParsed
        // sent under any id is what the evidence would read.
        let Some(o) = command_options(event) else {
            return Ok(());
        };
        self.tenant.check_options(&o)?;
        if o.source == OptionsSource::CanonicalCommandLine {
            self.command_line_seen = true;
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.command_line_seen
    }

    fn not_ready(&self, held: usize, at_end: bool) -> Refusal {
        self.tenant.command_line_missing(held, at_end).into()
    }

    fn check_bytes(&mut self, bytes_after: u64) -> Result<(), Refusal> {
        Ok(self.tenant.check_bytes(bytes_after)?)
    }

    fn not_owner(&self, invocation_id: &str) -> Refusal {
        self.tenant.not_owner(invocation_id).into()
    }
}

impl Drop for TenantStream {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            if let Ok(mut b) = self.book.lock() {
                b.close(t);
            }
        }
    }
}
