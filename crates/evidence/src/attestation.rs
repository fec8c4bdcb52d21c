//! The executor section of the evidence: what the remote executor itself
//! recorded about an invocation (its operations, the workers that ran them,
//! the Action/Command it ran and so the worker image), derived from the raw
//! answers an adapter (`proof-executor`) stored in the artifact's
//! `executor.bin` member, and the cross-checks that hold the client's claims
//! (BEP, execution log) against each other and against the executor.
//!
//! Pure: bytes in, [`ExecutorAttestation`] out. Every CAS blob is checked
//! against its digest (SHA-256, REAPI's default digest function) before it
//! is read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use proof_proto::ledger::{ledger_record, LedgerRecord};
use proof_proto::longrunning::{operation, Operation};
use proof_proto::reapi::{
    execution_stage, Action, Command, Digest, ExecuteOperationMetadata, ExecuteResponse,
    ExecutedActionMetadata,
};
use proof_stream::delimited::DelimitedReader;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{is_pinned_image, ActionDigest, EvidenceError, CONTAINER_IMAGE};

/// Largest ledger record read (one ListOperations page or one blob).
const MAX_LEDGER_RECORD: usize = 256 * 1024 * 1024;

/// One action as the executor recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedAction {
    /// The operation name, without the instance prefix.
    pub operation: String,
    pub action_digest: ActionDigest,
    /// ExecutionStage name (COMPLETED, QUEUED, ...).
    pub stage: String,
    /// Completed with an ActionResult and an OK status (whatever the
    /// action's exit code).
    pub completed: bool,
    /// ExecuteResponse.cached_result: served from the action cache, not run.
    pub cached: bool,
    pub exit_code: Option<i32>,
    /// ExecutedActionMetadata.worker.
    pub worker: Option<String>,
    pub queued_at: Option<String>,
    pub worker_start_at: Option<String>,
    pub worker_completed_at: Option<String>,
    /// The `container-image` platform property of the Action (or, as Bazel
    /// 4.x sends it, of its Command), read from the executor's CAS.
    pub image: Option<String>,
}

/// One worker image the executor ran actions on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedImage {
    pub image: String,
    pub pinned: bool,
    /// Executed (not cached) actions with this image.
    pub executed_actions: u64,
}

/// What the executor recorded for the invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorAttestation {
    /// The endpoint asked (set by the server's operator, not by the client).
    pub executor: String,
    /// The adapter that asked (e.g. "buildgrid").
    pub adapter: String,
    /// The invocation whose operations were asked for.
    pub invocation_id: String,
    pub instance_names: Vec<String>,
    /// The executor answered.
    pub reachable: bool,
    /// Why it could not be asked (after retries), when unreachable.
    pub unreachable: Option<String>,
    /// Non-OK answers of the executor (status code and message).
    pub errors: Vec<String>,
    /// Distinct operations for the invocation.
    pub operations: u64,
    /// Completed operations the executor ran to exit code 0 (not served
    /// from its cache).
    pub executed: u64,
    /// Completed operations the executor ran whose action exited nonzero:
    /// not counted in `executed`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Completed operations served from the executor's action cache.
    pub cached: u64,
    /// Operations not completed (queued, executing, cancelled, failed).
    pub unfinished: u64,
    /// Distinct workers of the executed operations, sorted.
    pub workers: Vec<String>,
    /// Worker images of the executed operations, sorted by image.
    pub images: Vec<AttestedImage>,
    /// Executed operations whose Action/Command names no container-image.
    pub executed_without_image: u64,
    /// Other endpoints the server's operator declared for this executor
    /// (`proof serve --executor-alias`), e.g. the address clients use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_aliases: Vec<String>,
    /// Why the server stopped asking before the answers were complete (a
    /// repeated page token, or a bound on one query exceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// Action or Command blobs missing from the answers, unreadable, or not
    /// matching their digest.
    pub blob_problems: Vec<String>,
    /// Earliest queued time and latest completion of the executed operations.
    pub first_queued_at: Option<String>,
    pub last_completed_at: Option<String>,
    /// One entry per distinct operation, in answer order.
    pub actions: Vec<AttestedAction>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Two sources that disagree about one fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contradiction {
    /// The fact, e.g. `remote_executions` or `worker_image`.
    pub fact: String,
    /// The source making the claim and what it claims.
    pub claim_source: String,
    pub claimed: String,
    /// The source that contradicts it and what it shows.
    pub other_source: String,
    pub shown: String,
    /// One sentence naming both sources and both values.
    pub detail: String,
}

/// The raw ledger records, decoded.
#[derive(Debug, Default)]
pub(crate) struct LedgerAccum {
    header: Option<proof_proto::ledger::Header>,
    pages: Vec<proof_proto::ledger::OperationsPage>,
    /// By digest (hash, size); the first record of a digest wins.
    blobs: HashMap<(String, i64), proof_proto::ledger::Blob>,
    unreachable: Option<proof_proto::ledger::Unreachable>,
    truncated: Option<String>,
    /// Earlier executions the server witnessed (remote cache hits bind to
    /// them, `binding`); they never count as this invocation's.
    attested: Vec<proof_proto::ledger::AttestedResult>,
}

fn nanos(t: Option<&prost_types::Timestamp>) -> Option<i128> {
    let t = t?;
    Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

fn stage_name(v: i32) -> String {
    execution_stage::Value::try_from(v)
        .map_or_else(|_| format!("UNKNOWN_{v}"), |s| s.as_str_name().to_string())
}

fn image_of(platform: Option<&proof_proto::reapi::Platform>) -> Option<String> {
    platform?
        .properties
        .iter()
        .rev()
        .find(|p| p.name == CONTAINER_IMAGE)
        .map(|p| p.value.clone())
}

impl LedgerAccum {
    pub(crate) fn read(input: impl Read) -> Result<Self, EvidenceError> {
        let mut acc = LedgerAccum::default();
        for (index, record) in DelimitedReader::with_limit(input, MAX_LEDGER_RECORD).enumerate() {
            let record = record.map_err(EvidenceError::LedgerFraming)?;
            let bad = |what: String| EvidenceError::BadLedger {
                index: index as u64,
                what,
            };
            let rec = LedgerRecord::decode(record.as_slice())
                .map_err(|e| bad(format!("not a LedgerRecord: {e}")))?;
            use ledger_record::Record as R;
            match (rec.record, acc.header.is_some()) {
                (Some(R::Header(h)), false) => acc.header = Some(h),
                (Some(R::Header(_)), true) => return Err(bad("a second header".into())),
                (_, false) => return Err(bad("the first record must be the header".into())),
                (Some(R::Page(p)), true) => acc.pages.push(p),
                (Some(R::Blob(b)), true) => {
                    if let Some(d) = &b.digest {
                        acc.blobs.entry((d.hash.clone(), d.size_bytes)).or_insert(b);
                    }
                }
                (Some(R::Unreachable(u)), true) => acc.unreachable = Some(u),
                (Some(R::Truncated(t)), true) => {
                    acc.truncated.get_or_insert(t.reason);
                }
                (Some(R::Attested(a)), true) => acc.attested.push(a),
                (None, true) => return Err(bad("an empty record".into())),
            }
        }
        if acc.header.is_none() {
            return Err(EvidenceError::BadLedger {
                index: 0,
                what: "the file has no header record".into(),
            });
        }
        Ok(acc)
    }

    /// The digest-verified blob `d`, or why there is none.
    pub(crate) fn blob(&self, d: &Digest) -> Result<&[u8], String> {
        let name = format!("{}/{}", d.hash, d.size_bytes);
        let Some(b) = self.blobs.get(&(d.hash.clone(), d.size_bytes)) else {
            return Err(format!("blob {name} was not read from the CAS"));
        };
        if b.status_code != 0 {
            return Err(format!(
                "the CAS answered status {} for blob {name}: {}",
                b.status_code, b.status_message
            ));
        }
        let got = hex::encode(sha2::Sha256::digest(&b.data));
        if got != d.hash || b.data.len() as i64 != d.size_bytes {
            return Err(format!(
                "blob {name} has sha256 {got} and {} bytes: it does not match its digest",
                b.data.len()
            ));
        }
        Ok(&b.data)
    }

    /// The image of the executed action `d` (Action.platform, else the
    /// Command's platform), or a problem.
    fn image(&self, d: &Digest) -> Result<Option<String>, String> {
        let action = Action::decode(self.blob(d)?)
            .map_err(|e| format!("blob {}/{} is not an Action: {e}", d.hash, d.size_bytes))?;
        if let Some(image) = image_of(action.platform.as_ref()) {
            return Ok(Some(image));
        }
        let Some(cd) = action.command_digest.as_ref() else {
            return Err(format!(
                "Action {}/{} names no command",
                d.hash, d.size_bytes
            ));
        };
        let command = Command::decode(self.blob(cd)?)
            .map_err(|e| format!("blob {}/{} is not a Command: {e}", cd.hash, cd.size_bytes))?;
        Ok(image_of(command.platform.as_ref()))
    }

    /// The attestation with the header's facts and nothing counted yet.
    fn empty_attestation(&self) -> ExecutorAttestation {
        let h = self.header.clone().unwrap_or_default();
        ExecutorAttestation {
            executor: h.executor,
            adapter: h.adapter,
            invocation_id: h.invocation_id,
            instance_names: h.instance_names,
            reachable: self.unreachable.is_none(),
            unreachable: self.unreachable.as_ref().map(|u| {
                format!(
                    "{} ({} attempt(s) over {} ms)",
                    u.reason, u.attempts, u.waited_ms
                )
            }),
            errors: Vec::new(),
            operations: 0,
            executed: 0,
            failed: 0,
            cached: 0,
            unfinished: 0,
            workers: Vec::new(),
            images: Vec::new(),
            executed_without_image: 0,
            endpoint_aliases: h.endpoint_aliases,
            truncated: self.truncated.clone(),
            blob_problems: Vec::new(),
            first_queued_at: None,
            last_completed_at: None,
            actions: Vec::new(),
        }
    }

    pub(crate) fn finish(self) -> ExecutorAttestation {
        let mut att = self.empty_attestation();
        let mut tally = Tally::default();
        let mut seen = BTreeSet::new();
        for page in &self.pages {
            if page.status_code != 0 {
                att.errors.push(format!(
                    "ListOperations on instance {:?} answered status {}: {}",
                    page.instance_name, page.status_code, page.status_message
                ));
                continue;
            }
            let prefix = format!("{}/", page.instance_name);
            for op in page.response.iter().flat_map(|r| &r.operations) {
                let name = op.name.strip_prefix(&prefix).unwrap_or(&op.name);
                if !seen.insert(name.to_string()) {
                    continue;
                }
                let (a, md) = attested_action(op, name);
                self.count(&mut att, &mut tally, a, md);
            }
        }
        tally.apply(&mut att);
        att
    }

    /// Counts one operation into `att` (and its worker, image and times
    /// into `t` when it executed successfully).
    fn count(
        &self,
        att: &mut ExecutorAttestation,
        t: &mut Tally,
        mut a: AttestedAction,
        md: Option<ExecutedActionMetadata>,
    ) {
        att.operations += 1;
        if !a.completed {
            att.unfinished += 1;
        } else if a.cached {
            att.cached += 1;
        } else if a.exit_code != Some(0) {
            // Ran, and failed: not an execution that built anything.
            att.failed += 1;
        } else {
            att.executed += 1;
            t.executed(&a, md.as_ref());
            let digest = Digest {
                hash: a.action_digest.hash.clone(),
                size_bytes: a.action_digest.size_bytes,
            };
            match self.image(&digest) {
                Ok(Some(image)) => {
                    *t.images.entry(image.clone()).or_insert(0) += 1;
                    a.image = Some(image);
                }
                Ok(None) => att.executed_without_image += 1,
                Err(p) => att.blob_problems.push(p),
            }
        }
        att.actions.push(a);
    }
}

/// Workers, images and times of the executed operations.
#[derive(Default)]
struct Tally {
    workers: BTreeSet<String>,
    images: BTreeMap<String, u64>,
    first: Option<i128>,
    last: Option<i128>,
}

impl Tally {
    fn executed(&mut self, a: &AttestedAction, md: Option<&ExecutedActionMetadata>) {
        if let Some(w) = &a.worker {
            self.workers.insert(w.clone());
        }
        let Some(m) = md else { return };
        if let Some(q) = nanos(m.queued_timestamp.as_ref()) {
            self.first = Some(self.first.map_or(q, |f| f.min(q)));
        }
        if let Some(c) = nanos(m.worker_completed_timestamp.as_ref()) {
            self.last = Some(self.last.map_or(c, |l| l.max(c)));
        }
    }

    fn apply(self, att: &mut ExecutorAttestation) {
        att.workers = self.workers.into_iter().collect();
        att.images = self
            .images
            .into_iter()
            .map(|(image, n)| AttestedImage {
                pinned: is_pinned_image(&image),
                image,
                executed_actions: n,
            })
            .collect();
        att.first_queued_at = self.first.and_then(crate::rfc3339_nanos);
        att.last_completed_at = self.last.and_then(crate::rfc3339_nanos);
    }
}

/// The ExecuteResponse of a done operation, if it answered one.
pub(crate) fn execute_response(op: &Operation) -> Option<ExecuteResponse> {
    match &op.result {
        Some(operation::Result::Response(a)) if a.type_url.ends_with("ExecuteResponse") => {
            ExecuteResponse::decode(a.value.as_slice()).ok()
        }
        _ => None,
    }
}

/// The operation's ExecuteOperationMetadata (default when absent).
pub(crate) fn operation_metadata(op: &Operation) -> ExecuteOperationMetadata {
    op.metadata
        .as_ref()
        .filter(|a| a.type_url.ends_with("ExecuteOperationMetadata"))
        .and_then(|a| ExecuteOperationMetadata::decode(a.value.as_slice()).ok())
        .unwrap_or_default()
}

/// Completed (done, no error, OK status, an ActionResult) and cached.
pub(crate) fn completion(op: &Operation, resp: Option<&ExecuteResponse>) -> (bool, bool) {
    let op_error = matches!(&op.result, Some(operation::Result::Error(s)) if s.code != 0);
    let status_ok = resp.is_some_and(|r| r.status.as_ref().is_none_or(|s| s.code == 0));
    let completed = op.done && !op_error && status_ok && resp.is_some_and(|r| r.result.is_some());
    (
        completed,
        completed && resp.is_some_and(|r| r.cached_result),
    )
}

/// One operation as the executor recorded it (no image yet), and its
/// ExecutedActionMetadata.
fn attested_action(op: &Operation, name: &str) -> (AttestedAction, Option<ExecutedActionMetadata>) {
    let meta = operation_metadata(op);
    let resp = execute_response(op);
    let (completed, cached) = completion(op, resp.as_ref());
    let result = resp.as_ref().and_then(|r| r.result.as_ref());
    let digest = meta.action_digest.clone().unwrap_or_default();
    let md = result.and_then(|r| r.execution_metadata.clone());
    let ts = |t: Option<&prost_types::Timestamp>| crate::posture::ts(t);
    let a = AttestedAction {
        operation: name.to_string(),
        action_digest: ActionDigest {
            hash: digest.hash,
            size_bytes: digest.size_bytes,
        },
        stage: stage_name(meta.stage),
        completed,
        cached,
        exit_code: result.map(|r| r.exit_code),
        worker: md
            .as_ref()
            .map(|m| m.worker.clone())
            .filter(|w| !w.is_empty()),
        queued_at: md.as_ref().and_then(|m| ts(m.queued_timestamp.as_ref())),
        worker_start_at: md
            .as_ref()
            .and_then(|m| ts(m.worker_start_timestamp.as_ref())),
        worker_completed_at: md
            .as_ref()
            .and_then(|m| ts(m.worker_completed_timestamp.as_ref())),
        image: None,
    };
    (a, md)
}

/// `endpoint` as compared with another: trimmed, lower-case, without its
/// scheme (grpc, grpcs, http, https) or a trailing '/'.
pub fn normalise_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim().to_ascii_lowercase();
    let e = ["grpc://", "grpcs://", "http://", "https://"]
        .iter()
        .find_map(|p| e.strip_prefix(p))
        .unwrap_or(&e);
    e.trim_end_matches('/').to_string()
}

fn source_name(s: crate::ProcessSource) -> &'static str {
    match s {
        crate::ProcessSource::RunnerCount => "the BEP's runner_count",
        crate::ProcessSource::ProcessStatsLog => "the BEP's process stats log",
        crate::ProcessSource::ProgressInfoLine => "the BEP's process summary line",
        crate::ProcessSource::ExecLog => "the execution log",
    }
}

fn remote(f: &crate::ProcessFigure) -> u64 {
    f.runners.get(crate::runners::REMOTE).copied().unwrap_or(0)
}

/// The cross-checks between the evidence's sources: the BEP's process
/// figures, the execution log, and the executor's ledger (the execution
/// log's spawns held against its operations are
/// [`crate::crosscheck::ledger_contradictions`]).
pub(crate) fn contradictions(
    processes: &crate::Processes,
    executor: &crate::Executor,
    attestation: Option<&ExecutorAttestation>,
) -> Vec<Contradiction> {
    let bep = processes
        .sources
        .iter()
        .find(|f| f.source != crate::ProcessSource::ExecLog);
    let log = processes
        .sources
        .iter()
        .find(|f| f.source == crate::ProcessSource::ExecLog);
    let mut out: Vec<Contradiction> = bep_against_log(bep, log).into_iter().collect();
    out.extend(attestation.and_then(|a| endpoint_mismatch(a, executor)));
    let Some(att) = attestation.filter(|a| a.reachable && a.errors.is_empty()) else {
        return out;
    };
    out.extend(
        [bep, log]
            .into_iter()
            .flatten()
            .filter_map(|f| claimed_over_ran(f, att)),
    );
    out.extend(image_mismatch(executor, att));
    out
}

/// The BEP claims more remote executions than the execution log shows.
fn bep_against_log(
    bep: Option<&crate::ProcessFigure>,
    log: Option<&crate::ProcessFigure>,
) -> Option<Contradiction> {
    let (b, l) = (bep?, log?);
    let (claimed, shown) = (remote(b), remote(l));
    (claimed > shown).then(|| Contradiction {
        fact: "remote_executions".into(),
        claim_source: source_name(b.source).into(),
        claimed: claimed.to_string(),
        other_source: source_name(l.source).into(),
        shown: shown.to_string(),
        detail: format!(
            "{} claims {claimed} remote executions but {} in the same artifact shows {shown}",
            source_name(b.source),
            source_name(l.source)
        ),
    })
}

/// The build sent its actions elsewhere than the executor asked.
fn endpoint_mismatch(
    att: &ExecutorAttestation,
    executor: &crate::Executor,
) -> Option<Contradiction> {
    let client = executor
        .remote_executor
        .as_deref()
        .filter(|u| !u.trim().is_empty())?;
    let asked: Vec<&str> = std::iter::once(att.executor.as_str())
        .chain(att.endpoint_aliases.iter().map(String::as_str))
        .collect();
    let want = normalise_endpoint(client);
    if asked.iter().any(|e| normalise_endpoint(e) == want) {
        return None;
    }
    Some(Contradiction {
        fact: "executor_endpoint".into(),
        claim_source: "the command line's --remote_executor".into(),
        claimed: client.to_string(),
        other_source: "the server's --executor".into(),
        shown: asked.join(", "),
        detail: format!(
            "the build sent its actions to --remote_executor {client} but the server asked the executor {} about them",
            asked.join(" or ")
        ),
    })
}

/// A source claims more remote executions than the executor ran.
fn claimed_over_ran(f: &crate::ProcessFigure, att: &ExecutorAttestation) -> Option<Contradiction> {
    let (claimed, ran) = (remote(f), att.executed);
    (claimed > ran).then(|| Contradiction {
        fact: "remote_executions".into(),
        claim_source: source_name(f.source).into(),
        claimed: claimed.to_string(),
        other_source: format!("the executor {}", att.executor),
        shown: ran.to_string(),
        detail: format!(
            "{} claims {claimed} remote executions but the executor {} ran {ran} for invocation {}",
            source_name(f.source),
            att.executor,
            att.invocation_id
        ),
    })
}

/// The command line asks for one image and the executor ran others.
fn image_mismatch(executor: &crate::Executor, att: &ExecutorAttestation) -> Option<Contradiction> {
    let asked = executor
        .exec_properties
        .get(CONTAINER_IMAGE)
        .filter(|i| !i.is_empty())?;
    let mut ran_images: Vec<String> = att.images.iter().map(|i| i.image.clone()).collect();
    if att.executed_without_image > 0 {
        ran_images.push(format!(
            "no container-image ({} action(s))",
            att.executed_without_image
        ));
    }
    if ran_images.iter().all(|i| i == asked) {
        return None;
    }
    Some(Contradiction {
        fact: "worker_image".into(),
        claim_source: "the command line's container-image".into(),
        claimed: asked.clone(),
        other_source: format!("the executor {}", att.executor),
        shown: ran_images.join(", "),
        detail: format!(
            "the command line asks for container-image {asked} but the executor {} ran actions on {}",
            att.executor,
            ran_images.join(", ")
        ),
    })
}

impl LedgerAccum {
    /// The ListOperations pages as received (for [`crate::binding`]).
    pub(crate) fn pages(&self) -> &[proof_proto::ledger::OperationsPage] {
        &self.pages
    }

    /// The invocation the header names.
    pub(crate) fn invocation_id(&self) -> &str {
        self.header
            .as_ref()
            .map_or("", |h| h.invocation_id.as_str())
    }

    pub(crate) fn attested(&self) -> &[proof_proto::ledger::AttestedResult] {
        &self.attested
    }

    /// The instance names the header says were asked.
    pub(crate) fn instance_names(&self) -> &[String] {
        self.header
            .as_ref()
            .map_or(&[][..], |h| h.instance_names.as_slice())
    }
}
