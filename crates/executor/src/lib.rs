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

pub mod ac;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proof_proto::ledger::{
    ledger_record, Blob, Header, LedgerRecord, OperationsPage, Truncated, Unreachable,
};
use proof_proto::longrunning::operations_client::OperationsClient;
use proof_proto::longrunning::{operation, ListOperationsRequest, Operation};
use proof_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use proof_proto::reapi::{
    Action, BatchReadBlobsRequest, Digest, ExecuteOperationMetadata, ExecuteResponse,
};
use prost::Message;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

/// Per-call deadline (shortened to what is left of the query's
/// [`Budget::max_time`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Operations asked for per ListOperations page: 0, the executor's own
/// maximum (BuildGrid's `max-list-operations-page-size`, default 1000). An
/// executor that refuses it with `INVALID_ARGUMENT: The maximum page size
/// is N.` is asked once more with N.
pub const PAGE_SIZE: i32 = 0;
/// Blobs asked for per BatchReadBlobs call.
const BLOBS_PER_CALL: usize = 200;
/// Largest answer accepted (one ListOperations page or one BatchReadBlobs
/// answer).
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;

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
    #[error("--header {0:?} is not NAME: VALUE (an ASCII gRPC metadata name and value)")]
    BadHeader(String),
}

/// Bounds on one ledger query: what a hostile or broken executor can make
/// the server hold or wait for. Over a bound the server stops asking and the
/// ledger ends with a `Truncated` record naming it, so the proof is signed
/// as failing `executor_attested` (and a verifier re-derives why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Operations read, over every page and instance.
    pub max_operations: u64,
    /// ListOperations pages read, over every instance.
    pub max_pages: u64,
    /// Bytes of the whole ledger (`executor.bin`): pages and blobs.
    pub max_bytes: usize,
    /// Wall time of the whole query, retries of an unreachable executor
    /// included.
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_operations: 200_000,
            max_pages: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_time: Duration::from_secs(120),
        }
    }
}

/// What the ledger asks about.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    pub invocation_id: String,
    /// REAPI instance names to ask under, in order (usually one).
    pub instance_names: Vec<String>,
    /// Other endpoints of this executor the operator declared (e.g. the
    /// address Bazel clients use), recorded in the header.
    pub endpoint_aliases: Vec<String>,
    /// Bounds on the answers.
    pub budget: Budget,
}

/// An executor that can say what it ran for an invocation.
pub trait ExecutorLedger: Send + Sync {
    /// The endpoint, as recorded in the ledger header (no credentials).
    fn endpoint(&self) -> &str;
    /// The adapter name recorded in the header (e.g. "buildgrid").
    fn adapter(&self) -> &'static str;
    /// One attempt, to finish by `deadline`: the whole `executor.bin`
    /// (header + raw answers, ending with a `Truncated` record when the
    /// query's [`Budget`] or `deadline` stopped it), or
    /// [`LedgerError::Unreachable`] when the executor could not be asked.
    fn fetch(&self, query: &LedgerQuery, deadline: Instant) -> Result<Vec<u8>, LedgerError>;
}

/// Bounded retries of an unreachable executor.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Stop retrying after this long (then record "unreachable"); never
    /// longer than the query's [`Budget::max_time`].
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
    LedgerRecord { record: Some(rec) }
        .encode_length_delimited(out)
        .expect("a Vec grows as needed");
}

/// The bytes `rec` takes in the ledger (its length prefix included).
fn record_len(rec: &ledger_record::Record) -> usize {
    // A oneof's encoded length includes its field's tag and length prefix.
    let body = rec.encoded_len();
    prost::length_delimiter_len(body) + body
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
            endpoint_aliases: q.endpoint_aliases.clone(),
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
/// backoff for at most `retry.total` (and never past the query's
/// [`Budget::max_time`]); then returns a ledger that says unreachable.
/// Never fails: every outcome is evidence. Sleeps between attempts: run it
/// on a thread of its own, never on a pool that serves clients.
pub fn fetch_with_retry(ledger: &dyn ExecutorLedger, q: &LedgerQuery, retry: Retry) -> Vec<u8> {
    let start = Instant::now();
    let deadline = start + q.budget.max_time;
    let total = retry.total.min(q.budget.max_time);
    let mut delay = retry.first_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match ledger.fetch(q, deadline) {
            Ok(bytes) => return bytes,
            Err(LedgerError::Unreachable { reason, .. }) if start.elapsed() + delay < total => {
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

/// The maximum an executor names when it refuses a page size
/// (BuildGrid: "The maximum page size is 5.").
fn max_page_size(message: &str) -> Option<i32> {
    let rest = &message[message.find("maximum page size is")? + "maximum page size is".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// Why a query stopped early (the `Truncated` record's reason).
struct Stop(String);

/// The ledger being written, within the query's budget.
struct Collect {
    out: Vec<u8>,
    budget: Budget,
    deadline: Instant,
    operations: u64,
    pages: u64,
}

impl Collect {
    fn remaining(&self) -> Result<Duration, Stop> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.too_slow());
        }
        Ok(left)
    }

    fn too_slow(&self) -> Stop {
        Stop(format!(
            "the executor's answers took longer than the server's limit of {} s per query",
            self.budget.max_time.as_secs_f64()
        ))
    }

    /// Appends `rec` unless it would take the ledger past its byte budget.
    fn push(&mut self, rec: ledger_record::Record) -> Result<(), Stop> {
        let len = record_len(&rec);
        if self.out.len() + len > self.budget.max_bytes {
            return Err(Stop(format!(
                "the executor's answers exceed the server's limit of {} bytes per query",
                self.budget.max_bytes
            )));
        }
        push(&mut self.out, rec);
        Ok(())
    }
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

    async fn ask(&self, q: &LedgerQuery, deadline: Instant) -> Result<Vec<u8>, LedgerError> {
        let mut c = Collect {
            out: header(self, q),
            budget: q.budget,
            deadline,
            operations: 0,
            pages: 0,
        };
        let connect = c
            .remaining()
            .map_or(Duration::ZERO, |left| left.min(Duration::from_secs(5)));
        let channel: Channel = Endpoint::from_shared(self.uri.clone())
            .map_err(|_| LedgerError::BadEndpoint(self.endpoint.clone()))?
            .connect_timeout(connect.max(Duration::from_millis(1)))
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        match self.collect(&mut c, q, channel).await {
            Ok(()) => {}
            Err(Ok(Stop(reason))) => {
                tracing::warn!(executor = %self.endpoint, invocation = %q.invocation_id, %reason, "ledger query stopped early");
                push(
                    &mut c.out,
                    ledger_record::Record::Truncated(Truncated { reason }),
                );
            }
            Err(Err(e)) => return Err(e),
        }
        Ok(c.out)
    }

    /// `call` within what is left of the query's time.
    async fn timed<T>(
        c: &Collect,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<Result<T, tonic::Status>, Stop> {
        let left = c.remaining()?;
        tokio::time::timeout(left.min(CALL_TIMEOUT), call)
            .await
            .map_err(|_| c.too_slow())
    }

    async fn collect(
        &self,
        c: &mut Collect,
        q: &LedgerQuery,
        channel: Channel,
    ) -> Result<(), Result<Stop, LedgerError>> {
        let mut ops = OperationsClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let mut cas =
            ContentAddressableStorageClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let filter = format!("invocation_id={}", q.invocation_id);
        for instance in &q.instance_names {
            let (executed, trees) = self.list_pages(c, &mut ops, instance, &filter).await?;
            self.read_instance_blobs(c, &mut cas, instance, executed, trees)
                .await?;
        }
        Ok(())
    }

    /// Every ListOperations page of `instance` for `filter`, pushed as Page
    /// records (a non-OK answer as a page with its status): the executed
    /// operations' action digests and their output directories' Tree
    /// digests.
    async fn list_pages(
        &self,
        c: &mut Collect,
        ops: &mut OperationsClient<Channel>,
        instance: &str,
        filter: &str,
    ) -> Result<(Vec<Digest>, Vec<Digest>), Result<Stop, LedgerError>> {
        let mut token = String::new();
        let mut tokens: HashSet<String> = HashSet::new();
        let mut page_size = PAGE_SIZE;
        let mut executed: Vec<Digest> = Vec::new();
        let mut trees: Vec<Digest> = Vec::new();
        loop {
            if c.pages >= c.budget.max_pages {
                return Err(Ok(Stop(format!(
                    "the executor's answers exceed the server's limit of {} ListOperations pages per query",
                    c.budget.max_pages
                ))));
            }
            let req = ListOperationsRequest {
                name: instance.to_string(),
                filter: filter.to_string(),
                page_size,
                page_token: token.clone(),
            };
            let answer = Self::timed(c, ops.list_operations(req)).await.map_err(Ok)?;
            let mut page = OperationsPage {
                instance_name: instance.to_string(),
                filter: filter.to_string(),
                page_token: token.clone(),
                ..OperationsPage::default()
            };
            match answer {
                Ok(resp) => {
                    c.pages += 1;
                    let resp = resp.into_inner();
                    c.operations += resp.operations.len() as u64;
                    if c.operations > c.budget.max_operations {
                        return Err(Ok(Stop(format!(
                            "the executor answered more than the server's limit of {} operations per query",
                            c.budget.max_operations
                        ))));
                    }
                    executed.extend(resp.operations.iter().filter_map(executed_digest));
                    trees.extend(resp.operations.iter().flat_map(executed_trees));
                    let next = resp.next_page_token.clone();
                    page.response = Some(resp);
                    c.push(ledger_record::Record::Page(page)).map_err(Ok)?;
                    if next.is_empty() {
                        break;
                    }
                    tokens.insert(std::mem::replace(&mut token, next));
                    if tokens.contains(&token) {
                        return Err(Ok(Stop(format!(
                            "the executor repeated the page token {token:?} on instance {instance:?}: its answers loop"
                        ))));
                    }
                }
                Err(s) if Self::retryable(s.code()) => {
                    return Err(Err(self.unreachable(format!(
                        "ListOperations: {:?}: {}",
                        s.code(),
                        s.message()
                    ))))
                }
                Err(s) => {
                    // An executor with a smaller maximum page size than
                    // asked names it: ask once more with it.
                    if s.code() == tonic::Code::InvalidArgument && page_size == PAGE_SIZE {
                        if let Some(max) = max_page_size(s.message()) {
                            tracing::info!(executor = %self.endpoint, max, "the executor's maximum ListOperations page size");
                            page_size = max;
                            continue;
                        }
                    }
                    page.status_code = s.code() as i32;
                    page.status_message = s.message().to_string();
                    c.push(ledger_record::Record::Page(page)).map_err(Ok)?;
                    break;
                }
            }
        }
        Ok((executed, trees))
    }

    /// The Actions of the executed operations, then the Commands of the
    /// Actions that carry no platform of their own (Bazel 4.x), then the
    /// Tree blobs of their output directories (so the files inside them
    /// bind, issue 27); within the budget.
    async fn read_instance_blobs(
        &self,
        c: &mut Collect,
        cas: &mut ContentAddressableStorageClient<Channel>,
        instance: &str,
        mut executed: Vec<Digest>,
        mut trees: Vec<Digest>,
    ) -> Result<(), Result<Stop, LedgerError>> {
        executed.sort_by(|a, b| (&a.hash, a.size_bytes).cmp(&(&b.hash, b.size_bytes)));
        executed.dedup();
        let mut commands = Vec::new();
        self.read_blobs(c, cas, instance, &executed, Some(&mut commands))
            .await?;
        commands.sort_by(|a, b| (&a.hash, a.size_bytes).cmp(&(&b.hash, b.size_bytes)));
        commands.dedup();
        self.read_blobs(c, cas, instance, &commands, None).await?;
        trees.sort_by(|a, b| (&a.hash, a.size_bytes).cmp(&(&b.hash, b.size_bytes)));
        trees.dedup();
        self.read_blobs(c, cas, instance, &trees, None).await
    }

    /// Reads `digests` from the CAS, pushing one Blob record each (in
    /// `digests` order). With `commands`, the blobs are Actions: the
    /// command digests of those that carry no platform of their own are
    /// added to it.
    async fn read_blobs(
        &self,
        c: &mut Collect,
        cas: &mut ContentAddressableStorageClient<Channel>,
        instance: &str,
        digests: &[Digest],
        mut commands: Option<&mut Vec<Digest>>,
    ) -> Result<(), Result<Stop, LedgerError>> {
        for chunk in digests.chunks(BLOBS_PER_CALL) {
            let req = BatchReadBlobsRequest {
                instance_name: instance.to_string(),
                digests: chunk.to_vec(),
            };
            match Self::timed(c, cas.batch_read_blobs(req))
                .await
                .map_err(Ok)?
            {
                Ok(resp) => {
                    let mut answers: HashMap<(String, i64), _> = HashMap::new();
                    for r in resp.into_inner().responses {
                        if let Some(d) = &r.digest {
                            answers.entry((d.hash.clone(), d.size_bytes)).or_insert(r);
                        }
                    }
                    for d in chunk {
                        let blob = match answers.remove(&(d.hash.clone(), d.size_bytes)) {
                            Some(r) => {
                                let code = r.status.as_ref().map_or(0, |s| s.code);
                                if code == 0 {
                                    if let Some(cmds) = commands.as_deref_mut() {
                                        if let Ok(a) = Action::decode(r.data.as_slice()) {
                                            if a.platform
                                                .as_ref()
                                                .is_none_or(|p| p.properties.is_empty())
                                            {
                                                cmds.extend(a.command_digest);
                                            }
                                        }
                                    }
                                }
                                Blob {
                                    instance_name: instance.to_string(),
                                    digest: Some(d.clone()),
                                    status_code: code,
                                    status_message: r.status.map(|s| s.message).unwrap_or_default(),
                                    data: if code == 0 { r.data } else { Vec::new() },
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
                        c.push(ledger_record::Record::Blob(blob)).map_err(Ok)?;
                    }
                }
                Err(s) if Self::retryable(s.code()) => {
                    return Err(Err(self.unreachable(format!(
                        "BatchReadBlobs: {:?}: {}",
                        s.code(),
                        s.message()
                    ))))
                }
                Err(s) => {
                    for d in chunk {
                        c.push(ledger_record::Record::Blob(Blob {
                            instance_name: instance.to_string(),
                            digest: Some(d.clone()),
                            status_code: s.code() as i32,
                            status_message: s.message().to_string(),
                            data: Vec::new(),
                        }))
                        .map_err(Ok)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The action digest of an operation the executor ran to success: done,
/// an ExecuteResponse with an OK status and an ActionResult of exit code 0,
/// not served from its cache (the evidence counts the same ones as
/// executed).
fn executed_digest(op: &Operation) -> Option<Digest> {
    if !op.done {
        return None;
    }
    let Some(operation::Result::Response(any)) = &op.result else {
        return None;
    };
    let resp = ExecuteResponse::decode(any.value.as_slice()).ok()?;
    let status_ok = resp.status.as_ref().is_none_or(|s| s.code == 0);
    if resp.cached_result || !status_ok || resp.result.as_ref().is_none_or(|r| r.exit_code != 0) {
        return None;
    }
    let meta = ExecuteOperationMetadata::decode(op.metadata.as_ref()?.value.as_slice()).ok()?;
    meta.action_digest.filter(|d| !d.hash.is_empty())
}

/// The Tree digests of an executed operation's output directories (the
/// same operations as [`executed_digest`]).
fn executed_trees(op: &Operation) -> Vec<Digest> {
    if executed_digest(op).is_none() {
        return Vec::new();
    }
    let Some(operation::Result::Response(any)) = &op.result else {
        return Vec::new();
    };
    let Ok(resp) = ExecuteResponse::decode(any.value.as_slice()) else {
        return Vec::new();
    };
    resp.result
        .into_iter()
        .flat_map(|r| r.output_directories)
        .filter_map(|d| d.tree_digest)
        .filter(|d| !d.hash.is_empty())
        .collect()
}

impl ExecutorLedger for BuildGrid {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn adapter(&self) -> &'static str {
        "buildgrid"
    }

    fn fetch(&self, q: &LedgerQuery, deadline: Instant) -> Result<Vec<u8>, LedgerError> {
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
                    .block_on(self.ask(q, deadline))
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
            endpoint_aliases: Vec::new(),
            budget: Budget::default(),
        };
        assert!(matches!(
            bg.fetch(&q, Instant::now() + Duration::from_secs(5)),
            Err(LedgerError::BadInvocationId(_))
        ));
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
            endpoint_aliases: Vec::new(),
            budget: Budget::default(),
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
