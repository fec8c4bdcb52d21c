//! proof-executor: asks the remote executor what it ran for one Bazel
//! invocation and returns its raw answers as the bytes of an artifact's
//! `executor.bin` member (`rbe_proof.ledger.LedgerRecord`s). The evidence
//! derivation (`proof_evidence::attestation`) reads those bytes; a verifier
//! trusts nothing here beyond the raw answers stored.
//!
//! One trait, [`ExecutorLedger`], one adapter per executor:
//! - [`BuildGrid`]: `google.longrunning.Operations/ListOperations` with the
//!   filter `invocation_id=<uuid>` (BuildGrid keeps each Execute call's
//!   `RequestMetadata`), paged, then the executed actions' `Action` (and
//!   `Command`, where Bazel 4.x puts the platform) from the CAS
//!   (`BatchReadBlobs`).
//!
//! Buildbarn and BuildBuddy need their own adapters (docs/proof-format.md,
//! "Executor attestation").
//!
//! [`fetch_with_retry`] wraps any adapter: an unreachable executor is asked
//! again with exponential backoff for a bounded time, then the ledger says
//! "unreachable" (the proof fails closed, it never silently passes).

use std::time::{Duration, Instant};

use proof_proto::ledger::{ledger_record, Blob, Header, LedgerRecord, OperationsPage, Unreachable};
use proof_proto::longrunning::operations_client::OperationsClient;
use proof_proto::longrunning::{operation, ListOperationsRequest, Operation};
use proof_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use proof_proto::reapi::{
    Action, BatchReadBlobsRequest, Digest, ExecuteOperationMetadata, ExecuteResponse,
};
use proof_stream::delimited::encode_varint;
use prost::Message;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

/// Per-call deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Operations asked for per ListOperations page (BuildGrid's default maximum).
pub const PAGE_SIZE: i32 = 1000;
/// Blobs asked for per BatchReadBlobs call.
const BLOBS_PER_CALL: usize = 200;
/// Largest answer accepted.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// At most this many pages per instance (a misbehaving server cannot loop us).
const MAX_PAGES: usize = 100_000;

/// Why the executor could not be asked. `Unreachable` is retried.
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(
        "--executor {0:?} is not a grpc://HOST:PORT address; TLS (grpcs://) is not supported yet"
    )]
    BadEndpoint(String),
    #[error("the invocation id {0:?} cannot be used in an executor filter; expected letters, digits, '-', '_' or '.' (a Bazel UUID)")]
    BadInvocationId(String),
    #[error("the executor at {endpoint} cannot be reached: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// What the ledger asks about.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    pub invocation_id: String,
    /// REAPI instance names to ask under, in order (usually one).
    pub instance_names: Vec<String>,
}

/// An executor that can say what it ran for an invocation.
pub trait ExecutorLedger: Send + Sync {
    /// The endpoint, as recorded in the ledger header (no credentials).
    fn endpoint(&self) -> &str;
    /// The adapter name recorded in the header (e.g. "buildgrid").
    fn adapter(&self) -> &'static str;
    /// One attempt: the whole `executor.bin` (header + raw answers), or
    /// [`LedgerError::Unreachable`] when the executor could not be asked.
    fn fetch(&self, query: &LedgerQuery) -> Result<Vec<u8>, LedgerError>;
}

/// Bounded retries of an unreachable executor.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Stop retrying after this long (then record "unreachable").
    pub total: Duration,
    /// First delay; doubled after every failed attempt.
    pub first_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            total: Duration::from_secs(30),
            first_delay: Duration::from_millis(500),
        }
    }
}

fn push(out: &mut Vec<u8>, rec: ledger_record::Record) {
    let body = LedgerRecord { record: Some(rec) }.encode_to_vec();
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(&body);
}

fn header(ledger: &dyn ExecutorLedger, q: &LedgerQuery) -> Vec<u8> {
    let mut out = Vec::new();
    push(
        &mut out,
        ledger_record::Record::Header(Header {
            executor: ledger.endpoint().to_string(),
            adapter: ledger.adapter().to_string(),
            invocation_id: q.invocation_id.clone(),
            instance_names: q.instance_names.clone(),
        }),
    );
    out
}

/// The ledger of an executor that could not be asked: the header and one
/// `Unreachable` record.
pub fn unreachable_ledger(
    ledger: &dyn ExecutorLedger,
    q: &LedgerQuery,
    reason: &str,
    attempts: u32,
    waited: Duration,
) -> Vec<u8> {
    let mut out = header(ledger, q);
    push(
        &mut out,
        ledger_record::Record::Unreachable(Unreachable {
            reason: reason.to_string(),
            attempts,
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        }),
    );
    out
}

/// Asks `ledger`, retrying an unreachable executor with exponential
/// backoff for at most `retry.total`; then returns a ledger that says
/// unreachable. Never fails: every outcome is evidence.
pub fn fetch_with_retry(ledger: &dyn ExecutorLedger, q: &LedgerQuery, retry: Retry) -> Vec<u8> {
    let start = Instant::now();
    let mut delay = retry.first_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match ledger.fetch(q) {
            Ok(bytes) => return bytes,
            Err(LedgerError::Unreachable { reason, .. })
                if start.elapsed() + delay < retry.total =>
            {
                tracing::warn!(executor = ledger.endpoint(), invocation = %q.invocation_id, attempts, %reason, "executor unreachable; retrying");
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
            Err(e) => {
                let reason = match e {
                    LedgerError::Unreachable { reason, .. } => reason,
                    e => e.to_string(),
                };
                return unreachable_ledger(ledger, q, &reason, attempts, start.elapsed());
            }
        }
    }
}

fn http_uri(endpoint: &str) -> Result<String, LedgerError> {
    let rest = endpoint
        .strip_prefix("grpc://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| LedgerError::BadEndpoint(endpoint.to_string()))?;
    if rest.is_empty() || rest.contains('@') || rest.contains('/') {
        return Err(LedgerError::BadEndpoint(endpoint.to_string()));
    }
    Ok(format!("http://{rest}"))
}

fn valid_invocation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// BuildGrid (0.2.x): ListOperations filtered on `invocation_id`, then the
/// executed actions' Action and Command blobs from its CAS.
#[derive(Debug, Clone)]
pub struct BuildGrid {
    endpoint: String,
    uri: String,
}

impl BuildGrid {
    /// `endpoint` is grpc://HOST:PORT.
    pub fn new(endpoint: &str) -> Result<Self, LedgerError> {
        Ok(BuildGrid {
            uri: http_uri(endpoint)?,
            endpoint: endpoint.to_string(),
        })
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> LedgerError {
        LedgerError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }

    fn retryable(code: tonic::Code) -> bool {
        matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        )
    }

    async fn ask(&self, q: &LedgerQuery) -> Result<Vec<u8>, LedgerError> {
        let channel: Channel = Endpoint::from_shared(self.uri.clone())
            .map_err(|_| LedgerError::BadEndpoint(self.endpoint.clone()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        let mut ops = OperationsClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let mut cas =
            ContentAddressableStorageClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let mut out = header(self, q);
        let filter = format!("invocation_id={}", q.invocation_id);
        for instance in &q.instance_names {
            let mut token = String::new();
            let mut executed: Vec<Digest> = Vec::new();
            for _ in 0..MAX_PAGES {
                let req = ListOperationsRequest {
                    name: instance.clone(),
                    filter: filter.clone(),
                    page_size: PAGE_SIZE,
                    page_token: token.clone(),
                };
                let mut page = OperationsPage {
                    instance_name: instance.clone(),
                    filter: filter.clone(),
                    page_token: token.clone(),
                    ..OperationsPage::default()
                };
                match ops.list_operations(req).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        executed.extend(resp.operations.iter().filter_map(executed_digest));
                        token = resp.next_page_token.clone();
                        page.response = Some(resp);
                        push(&mut out, ledger_record::Record::Page(page));
                        if token.is_empty() {
                            break;
                        }
                    }
                    Err(s) if Self::retryable(s.code()) => {
                        return Err(self.unreachable(format!(
                            "ListOperations: {:?}: {}",
                            s.code(),
                            s.message()
                        )))
                    }
                    Err(s) => {
                        page.status_code = s.code() as i32;
                        page.status_message = s.message().to_string();
                        push(&mut out, ledger_record::Record::Page(page));
                        break;
                    }
                }
            }
            executed.sort_by(|a, b| (&a.hash, a.size_bytes).cmp(&(&b.hash, b.size_bytes)));
            executed.dedup();
            // The Actions, then the Commands of the Actions that carry no
            // platform of their own (Bazel 4.x).
            let actions = self
                .read_blobs(&mut cas, instance, &executed, &mut out)
                .await?;
            let mut commands: Vec<Digest> = actions
                .iter()
                .filter_map(|data| Action::decode(data.as_slice()).ok())
                .filter(|a| a.platform.as_ref().is_none_or(|p| p.properties.is_empty()))
                .filter_map(|a| a.command_digest)
                .collect();
            commands.sort_by(|a, b| (&a.hash, a.size_bytes).cmp(&(&b.hash, b.size_bytes)));
            commands.dedup();
            self.read_blobs(&mut cas, instance, &commands, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Reads `digests` from the CAS, pushing one Blob record each (in
    /// `digests` order); returns the data of the OK ones.
    async fn read_blobs(
        &self,
        cas: &mut ContentAddressableStorageClient<Channel>,
        instance: &str,
        digests: &[Digest],
        out: &mut Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, LedgerError> {
        let mut found = Vec::new();
        for chunk in digests.chunks(BLOBS_PER_CALL) {
            let req = BatchReadBlobsRequest {
                instance_name: instance.to_string(),
                digests: chunk.to_vec(),
            };
            match cas.batch_read_blobs(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    for d in chunk {
                        let r = resp.responses.iter().find(|r| r.digest.as_ref() == Some(d));
                        let blob = match r {
                            Some(r) => {
                                let code = r.status.as_ref().map_or(0, |s| s.code);
                                if code == 0 {
                                    found.push(r.data.clone());
                                }
                                Blob {
                                    instance_name: instance.to_string(),
                                    digest: Some(d.clone()),
                                    status_code: code,
                                    status_message: r
                                        .status
                                        .as_ref()
                                        .map(|s| s.message.clone())
                                        .unwrap_or_default(),
                                    data: if code == 0 {
                                        r.data.clone()
                                    } else {
                                        Vec::new()
                                    },
                                }
                            }
                            None => Blob {
                                instance_name: instance.to_string(),
                                digest: Some(d.clone()),
                                status_code: tonic::Code::NotFound as i32,
                                status_message:
                                    "the BatchReadBlobs answer has no entry for this digest".into(),
                                data: Vec::new(),
                            },
                        };
                        push(out, ledger_record::Record::Blob(blob));
                    }
                }
                Err(s) if Self::retryable(s.code()) => {
                    return Err(self.unreachable(format!(
                        "BatchReadBlobs: {:?}: {}",
                        s.code(),
                        s.message()
                    )))
                }
                Err(s) => {
                    for d in chunk {
                        push(
                            out,
                            ledger_record::Record::Blob(Blob {
                                instance_name: instance.to_string(),
                                digest: Some(d.clone()),
                                status_code: s.code() as i32,
                                status_message: s.message().to_string(),
                                data: Vec::new(),
                            }),
                        );
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The action digest of a completed, executed (not cached) operation.
fn executed_digest(op: &Operation) -> Option<Digest> {
    if !op.done {
        return None;
    }
    let Some(operation::Result::Response(any)) = &op.result else {
        return None;
    };
    let resp = ExecuteResponse::decode(any.value.as_slice()).ok()?;
    if resp.cached_result || resp.result.is_none() {
        return None;
    }
    let meta = ExecuteOperationMetadata::decode(op.metadata.as_ref()?.value.as_slice()).ok()?;
    meta.action_digest.filter(|d| !d.hash.is_empty())
}

impl ExecutorLedger for BuildGrid {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn adapter(&self) -> &'static str {
        "buildgrid"
    }

    fn fetch(&self, q: &LedgerQuery) -> Result<Vec<u8>, LedgerError> {
        if !valid_invocation_id(&q.invocation_id) {
            return Err(LedgerError::BadInvocationId(q.invocation_id.clone()));
        }
        // A thread of its own: callers may be inside an async runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| LedgerError::Runtime(e.to_string()))?
                    .block_on(self.ask(q))
            })
            .join()
            .unwrap_or_else(|_| Err(LedgerError::Runtime("the ledger thread panicked".into())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_grpc_endpoints() {
        assert!(BuildGrid::new("grpc://127.0.0.1:50051").is_ok());
        for bad in ["grpcs://h:1", "127.0.0.1:1", "grpc://", "grpc://u:p@h:1"] {
            assert!(
                matches!(BuildGrid::new(bad), Err(LedgerError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_invocation_id_cannot_extend_the_filter() {
        let bg = BuildGrid::new("grpc://127.0.0.1:1").unwrap();
        let q = LedgerQuery {
            invocation_id: "x&stage=COMPLETED".into(),
            instance_names: vec![String::new()],
        };
        assert!(matches!(bg.fetch(&q), Err(LedgerError::BadInvocationId(_))));
    }

    #[test]
    fn an_unreachable_executor_is_retried_then_recorded_as_unreachable() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ep = format!("grpc://127.0.0.1:{port}");
        let bg = BuildGrid::new(&ep).unwrap();
        let q = LedgerQuery {
            invocation_id: "0b5c4ecb-83c7-4d70-bb94-964e8bdbb3b2".into(),
            instance_names: vec![String::new()],
        };
        let retry = Retry {
            total: Duration::from_millis(700),
            first_delay: Duration::from_millis(100),
        };
        let t = Instant::now();
        let bytes = fetch_with_retry(&bg, &q, retry);
        assert!(t.elapsed() < Duration::from_secs(20));
        let mut b = proof_evidence::EvidenceBuilder::new();
        b.push_executor_ledger(bytes.as_slice()).unwrap();
        let recs = proof_stream::delimited::split_delimited(&bytes, usize::MAX).unwrap();
        assert_eq!(recs.len(), 2);
        let last = LedgerRecord::decode(recs[1]).unwrap();
        let Some(ledger_record::Record::Unreachable(u)) = last.record else {
            panic!("{last:?}")
        };
        assert!(u.attempts >= 2, "{u:?}");
        assert!(u.reason.contains("cannot connect"), "{u:?}");
    }
}
