//! proof-evidence: derives rbe-proof's evidence — the signed predicate —
//! from a Bazel Build Event Protocol stream and, optionally, the execution
//! log written by the same command.
//!
//! Pure and streaming: bytes in, [`Evidence`] out; no file or network I/O;
//! events are decoded one at a time and only aggregates are kept. The result
//! is deterministic (sorted maps and lists, integers only, timestamps only
//! from the stream) so that a verifier re-deriving it from the same bytes
//! gets an equal value.
//!
//! ```no_run
//! # fn main() -> Result<(), proof_evidence::EvidenceError> {
//! let bep = std::io::empty();
//! let evidence = proof_evidence::derive_from_delimited(bep, None::<std::io::Empty>)?;
//! println!("{}", serde_json::to_string_pretty(&evidence).unwrap());
//! # Ok(()) }
//! ```

mod assemble;
pub mod attestation;
pub mod binding;
pub mod bounded;
pub mod crosscheck;
mod error;
pub mod execlog;
mod forced;
pub mod options;
pub mod posture;
pub mod runners;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use proof_proto::bep::{build_event, build_event_id, BuildEvent, TestStatus};
use proof_stream::delimited::DelimitedReader;
use prost::Message;
use serde::{Deserialize, Serialize};

pub use attestation::{
    normalise_endpoint, AttestedAction, AttestedImage, Contradiction, ExecutorAttestation,
};
pub use binding::{BindingStatus, OutputBinding, TargetBinding, UnboundFile};
pub use error::EvidenceError;
pub use execlog::{ActionDigest, ExecLogFormat};
pub use options::OptionSource;
pub use posture::{
    sample_digests, CacheWrites, CorroboratedAction, Corroboration, DigestSource, ExternalInputs,
    FetchRecord, GrpcLogSummary, OutputDigest, DEFAULT_SAMPLE_SIZE,
};
pub use runners::RunnerClass;

use options::{Opt, Options};
use summary::{ProcessSummary, ProgressScanner};

/// Version of the [`Evidence`] schema; bump on any change of its JSON shape
/// or of how a field is derived.
pub const PREDICATE_VERSION: &str = "v1";

/// Everything rbe-proof asserts about one Bazel invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Always [`PREDICATE_VERSION`].
    pub predicate_version: String,
    /// BuildStarted.uuid.
    pub invocation_id: String,
    /// BuildStarted.build_tool_version; `None` when empty (e.g. Debian's 4.2.3).
    pub bazel_version: Option<String>,
    /// build, test, run, …
    pub command: String,
    /// The target patterns, from the pattern event id.
    pub patterns: Vec<String>,
    /// RFC 3339, from BuildStarted.start_time or start_time_millis.
    pub started_at: Option<String>,
    /// RFC 3339, from BuildFinished.finish_time or finish_time_millis.
    pub finished_at: Option<String>,
    /// BuildFinished.exit_code; `None` when no BuildFinished was seen.
    pub exit_code: Option<ExitCode>,
    /// BuildFinished seen with exit code 0.
    pub success: bool,
    /// BuildFinished and the `last_message` event were both seen.
    pub complete: bool,
    /// Number of BEP events read.
    pub event_count: u64,
    /// Top-level targets by label.
    pub targets: BTreeMap<String, TargetOutcome>,
    /// Tests by label.
    pub tests: BTreeMap<String, TestOutcome>,
    /// BuildMetadata (`--build_metadata=K=V`).
    pub build_metadata: BTreeMap<String, String>,
    /// WorkspaceStatus items (commit, CI run URL, … from
    /// `--workspace_status_command`).
    pub workspace_status: BTreeMap<String, String>,
    /// How remote execution was configured.
    pub executor: Executor,
    /// How many processes ran where.
    pub processes: Processes,
    /// Worker container images, one entry per distinct image (never merged).
    pub worker_images: Vec<WorkerImage>,
    /// True when at least one image is known for remote executions and all
    /// of them are pinned by digest; `None` when no such image is known.
    pub all_remote_images_pinned: Option<bool>,
    /// Summary of the execution log, when one was supplied.
    pub exec_log: Option<ExecLogSummary>,
    /// Raw-ish metrics for KPIs.
    pub build_metrics: BuildMetricsFacts,
    // The posture fields below are omitted from the JSON while empty, so
    // artifacts recorded before they existed (and without posture inputs)
    // still re-derive to their signed predicate.
    /// Where external inputs (repository downloads) came from.
    #[serde(default, skip_serializing_if = "ExternalInputs::is_empty")]
    pub external_inputs: ExternalInputs,
    /// Facts about remote action-cache writes by this lane.
    #[serde(default, skip_serializing_if = "CacheWrites::is_empty")]
    pub cache_writes: CacheWrites,
    /// Summary of the `--experimental_remote_grpc_log`, when one was supplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_grpc_log: Option<GrpcLogSummary>,
    /// The executor's ActionCache answers for a sample of remote actions,
    /// when the proof was recorded with `--corroborate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corroboration: Option<Corroboration>,
    // The fields below are omitted while empty too (no PREDICATE_VERSION
    // bump): artifacts without an executor ledger or origin re-derive as
    // before.
    /// What the executor recorded for this invocation (`proof serve
    /// --executor`): the attestation, as opposed to the client's claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<ExecutorAttestation>,
    /// Sources of the evidence that disagree (BEP, execution log, executor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contradictions: Vec<Contradiction>,
    /// The stream's target outputs bound to the executor's executed
    /// results inside the stream's window (with an executor ledger only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_binding: Option<OutputBinding>,
    /// Who submitted the stream, as the signer established it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Who submitted the build's stream, as recorded by the signer (the
/// artifact's `origin.json` member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// What signed: `proof serve` or `proof record`.
    pub recorded_by: String,
    /// The tenant whose bearer token opened the stream (`proof serve
    /// --tenants`), or the tenant a trusted offline job named; `None`:
    /// unauthenticated.
    pub tenant: Option<String>,
    /// When the server itself opened this invocation (its first event,
    /// received no later than BuildStarted), Unix milliseconds (`proof
    /// serve` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_ms: Option<i64>,
    /// When the server began signing (after it received the stream's last
    /// event, so no earlier than BuildFinished), Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at_ms: Option<i64>,
}

impl Origin {
    /// The bytes of an `origin.json` member.
    pub fn to_member(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("Origin serializes");
        v.push(b'\n');
        v
    }
}

/// BuildFinished.exit_code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCode {
    pub name: String,
    pub code: i32,
}

/// Outcome of one top-level target (all its configurations and aspects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetOutcome {
    /// e.g. "genrule rule"; `None` when no TargetConfigured was seen.
    pub kind: Option<String>,
    /// `None` when the target never completed (nor was aborted).
    pub success: Option<bool>,
}

/// Outcome of one test target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// TestSummary.overall_status, else the status of the last attempt.
    pub status: String,
    /// The runner of the test spawns when all attempts agree (e.g. "remote").
    pub strategy: Option<String>,
    /// Every distinct non-empty TestResult.execution_info.strategy, sorted.
    pub strategies: Vec<String>,
    /// Every attempt came from the local action cache.
    pub cached_locally: bool,
    /// Every attempt came from the remote cache.
    pub cached_remotely: bool,
    /// Number of TestResult events (runs × shards × attempts).
    pub attempts: u64,
}

/// The effective remote-execution configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    /// Effective `--remote_executor` (last occurrence; empty = unset),
    /// credentials in the URL removed.
    pub remote_executor: Option<String>,
    /// Where the options were read; `None` when the stream had none.
    pub source: Option<OptionSource>,
    pub remote_instance_name: Option<String>,
    pub remote_cache: Option<String>,
    pub bes_backend: Option<String>,
    pub bes_instance_name: Option<String>,
    /// `--remote_default_exec_properties` / `--remote_exec_properties`
    /// (and legacy `--remote_default_platform_properties`), later wins.
    pub exec_properties: BTreeMap<String, String>,
    pub remote_upload_local_results: Option<bool>,
    pub remote_accept_cached: Option<bool>,
    pub remote_local_fallback: Option<bool>,
    /// Header flag → header names (never values).
    pub header_keys: BTreeMap<String, Vec<String>>,
    pub spawn_strategy: Option<String>,
    /// Every `--strategy` value in order.
    pub strategies: Vec<String>,
    /// Every `--strategy_regexp` value in order.
    pub strategy_regexps: Vec<String>,
    /// True when nothing in the configuration lets spawns run elsewhere than
    /// on the remote executor.
    pub forced: bool,
    /// Why `forced` is false (empty when it is true).
    pub not_forced_reasons: Vec<String>,
}

/// Where a process figure was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessSource {
    /// BuildMetrics.action_summary.runner_count (5.x+).
    RunnerCount,
    /// The "process stats" BuildToolLogs entry.
    ProcessStatsLog,
    /// The `INFO: N processes: …` line in Progress stderr.
    ProgressInfoLine,
    /// Counted from the execution log.
    ExecLog,
}

/// One process figure as found in one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFigure {
    pub source: ProcessSource,
    /// Bazel's total (runner_count "total", the summary's N, or the number
    /// of logged spawns). Not required to equal the sum of `runners`.
    pub total: Option<u64>,
    /// Runner name → count.
    pub runners: BTreeMap<String, u64>,
    /// Runner name → exec_kind (runner_count of 7.0+ only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exec_kinds: BTreeMap<String, String>,
    /// Counts summed per [`RunnerClass`].
    pub by_class: BTreeMap<RunnerClass, u64>,
}

/// Process counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processes {
    /// Spawns executed by the remote executor (runner exactly "remote") per
    /// the best source; cache hits are not executions. `None`: no source.
    pub remote_executions: Option<u64>,
    /// Remote cache hits per the same source.
    pub remote_cache_hits: Option<u64>,
    /// The source of the two figures above.
    pub source: Option<ProcessSource>,
    /// Every figure found, in precedence order.
    pub sources: Vec<ProcessFigure>,
}

/// Where a worker image was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// Per-spawn platform properties in the execution log.
    ExecLog,
    /// The effective `--remote_default_exec_properties`.
    DefaultExecProperties,
    /// The Action/Command the executor ran, read from its CAS (wins over
    /// what the client asked for).
    Executor,
}

/// One worker container image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerImage {
    /// The `container-image` platform property value.
    pub image: String,
    /// Ends in `@sha256:` followed by exactly 64 lower-case hex digits.
    pub pinned: bool,
    pub source: ImageSource,
    /// Remote-executed spawns with this image (`None` when not known).
    pub remote_spawns: Option<u64>,
    /// Remote/disk cache-hit spawns with this image (`None` when not known).
    pub cache_hit_spawns: Option<u64>,
}

/// Millisecond sums of spawn metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSums {
    /// Spawns that carried metrics.
    pub spawns: u64,
    pub total_ms: u64,
    pub queue_ms: u64,
    pub fetch_ms: u64,
    pub upload_ms: u64,
    pub execution_wall_ms: u64,
    pub setup_ms: u64,
    pub network_ms: u64,
}

/// Summary of the execution log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLogSummary {
    pub format: ExecLogFormat,
    /// Invocation id from the compact log's Invocation entry (newest Bazel).
    pub invocation_id: Option<String>,
    /// Digest function from the compact log's Invocation entry.
    pub hash_function: Option<String>,
    pub spawns: u64,
    /// Runner name → spawns.
    pub runners: BTreeMap<String, u64>,
    /// Spawns with a non-zero exit code or a status.
    pub failed_spawns: u64,
    /// Action digests of remote-executed spawns, sorted, distinct (absent
    /// from 4.x logs).
    pub remote_action_digests: Vec<ActionDigest>,
    /// Metric sums over remote-executed spawns.
    pub remote_metrics: MetricsSums,
}

/// Metrics and tool logs useful for KPIs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildMetricsFacts {
    /// `false` when no BuildMetrics event was seen (all numbers then `None`).
    pub present: bool,
    pub actions_created: Option<i64>,
    pub actions_executed: Option<i64>,
    /// Local action cache, when action_cache_statistics is present (6.x+).
    pub action_cache_hits: Option<i64>,
    pub action_cache_misses: Option<i64>,
    pub cpu_time_ms: Option<i64>,
    pub wall_time_ms: Option<i64>,
    pub analysis_phase_time_ms: Option<i64>,
    pub execution_phase_time_ms: Option<i64>,
    pub critical_path_ms: Option<u64>,
    pub targets_configured: Option<i64>,
    pub packages_loaded: Option<i64>,
    /// The "elapsed time" tool log (seconds as text).
    pub elapsed_time_log: Option<String>,
    /// First line of the "critical path" tool log.
    pub critical_path_log: Option<String>,
}

#[derive(Debug, Default)]
struct TestAccum {
    summary_status: Option<i32>,
    last_status: i32,
    strategies: BTreeSet<String>,
    all_cached_locally: bool,
    all_cached_remotely: bool,
    attempts: u64,
}

#[derive(Debug)]
struct Started {
    uuid: String,
    version: String,
    command: String,
    started_at: Option<String>,
    options_description: String,
}

#[derive(Debug, Default)]
struct ExecAccum {
    format: Option<ExecLogFormat>,
    invocation_id: Option<String>,
    hash_function: Option<String>,
    spawns: u64,
    runners: BTreeMap<String, u64>,
    failed: u64,
    digests: BTreeSet<ActionDigest>,
    sums: MetricsSums,
    /// image → (remote spawns, cache-hit spawns)
    images: BTreeMap<String, (u64, u64)>,
    /// Local spawns that were allowed to run remotely (fallback suspects).
    local_remotable: u64,
    /// Remote-executed spawn digest → exit code (last one wins).
    exit_by_digest: BTreeMap<ActionDigest, i32>,
}

/// Incrementally derives [`Evidence`]: feed every BEP event in stream order
/// with [`push_event`](Self::push_event), optionally the execution log with
/// [`push_exec_log`](Self::push_exec_log), then call
/// [`finish`](Self::finish).
#[derive(Debug, Default)]
pub struct EvidenceBuilder {
    events: u64,
    started: Option<Started>,
    patterns: Vec<String>,
    finished: Option<(ExitCode, Option<String>)>,
    last_message: bool,
    targets: BTreeMap<String, TargetOutcome>,
    tests: BTreeMap<String, TestAccum>,
    build_metadata: BTreeMap<String, String>,
    workspace_status: BTreeMap<String, String>,
    canonical: Option<Vec<Opt>>,
    options_parsed: Option<Vec<Opt>>,
    runner_count: Option<ProcessFigure>,
    process_stats: Option<ProcessSummary>,
    progress: ProgressScanner,
    metrics: BuildMetricsFacts,
    exec: Option<ExecAccum>,
    /// Fetch events: URL → any success.
    fetches: BTreeMap<String, bool>,
    grpc: Option<posture::GrpcAccum>,
    corroboration: Option<posture::CorroborationAccum>,
    ledger: Option<attestation::LedgerAccum>,
    origin: Option<Origin>,
    binding: binding::BindingAccum,
}

pub(crate) fn rfc3339_nanos(nanos: i128) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn timestamp(ts: Option<&prost_types::Timestamp>, millis: i64) -> Option<String> {
    match ts {
        Some(ts) => rfc3339_nanos(i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)),
        None if millis != 0 => rfc3339_nanos(i128::from(millis) * 1_000_000),
        None => None,
    }
}

fn test_status_name(v: i32) -> String {
    TestStatus::try_from(v).map_or_else(|_| format!("UNKNOWN_{v}"), |s| s.as_str_name().to_string())
}

fn add(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    let slot = map.entry(key.to_string()).or_insert(0);
    *slot = slot.saturating_add(n);
}

fn by_class(runners: &BTreeMap<String, u64>) -> BTreeMap<RunnerClass, u64> {
    let mut out = BTreeMap::new();
    for (name, count) in runners {
        let slot = out.entry(runners::classify(name)).or_insert(0u64);
        *slot = slot.saturating_add(*count);
    }
    out
}

fn figure(
    source: ProcessSource,
    total: Option<u64>,
    runners: BTreeMap<String, u64>,
) -> ProcessFigure {
    ProcessFigure {
        source,
        total,
        by_class: by_class(&runners),
        runners,
        exec_kinds: BTreeMap::new(),
    }
}

/// Ends in `@sha256:` + exactly 64 lower-case hex digits.
pub fn is_pinned_image(image: &str) -> bool {
    image.rfind("@sha256:").is_some_and(|at| {
        let hex = &image[at + "@sha256:".len()..];
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The platform property naming the worker image.
pub const CONTAINER_IMAGE: &str = "container-image";

impl EvidenceBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// One serialized `build_event_stream.BuildEvent` (the bytes of one
    /// bep.bin record, or the value of a BES `bazel_event` Any).
    pub fn push_event(&mut self, event: &[u8]) -> Result<(), EvidenceError> {
        // Read as the server's checks and the tenant gate read it, or not at all.
        proof_stream::probe::shape(event).map_err(|source| EvidenceError::BadShape {
            index: self.events,
            source,
        })?;
        let ev = BuildEvent::decode(event).map_err(|source| EvidenceError::BadEvent {
            index: self.events,
            source,
        })?;
        self.events = self.events.saturating_add(1);
        if ev.last_message {
            self.last_message = true;
        }
        let id = ev.id.and_then(|id| id.id);
        if let Some(build_event_id::Id::Pattern(p)) = &id {
            for pat in &p.pattern {
                if !self.patterns.contains(pat) {
                    self.patterns.push(pat.clone());
                }
            }
        }
        let Some(payload) = ev.payload else {
            return Ok(());
        };
        self.binding.push(id.as_ref(), &payload);
        use build_event::Payload as P;
        match payload {
            P::Started(s) => self.on_started(s)?,
            P::StructuredCommandLine(cl) if cl.command_line_label == "canonical" => {
                if let Some(opts) = options::canonical_options(&cl) {
                    self.canonical = Some(opts);
                }
            }
            P::OptionsParsed(o) => {
                self.options_parsed = Some(
                    o.cmd_line
                        .iter()
                        .filter_map(|a| options::parse_flag(a))
                        .collect(),
                );
            }
            P::Progress(p) => self.progress.push(&p.stderr),
            P::WorkspaceStatus(ws) => {
                for item in ws.item {
                    self.workspace_status.insert(item.key, item.value);
                }
            }
            P::BuildMetadata(m) => self.build_metadata.extend(m.metadata),
            P::Configured(c) => self.on_configured(id.as_ref(), c),
            P::Completed(c) => self.on_completed(id.as_ref(), c),
            P::Aborted(_) => self.on_aborted(id.as_ref()),
            P::TestResult(r) => self.on_test_result(id.as_ref(), r),
            P::TestSummary(s) => self.on_test_summary(id.as_ref(), &s),
            P::Finished(f) => self.on_finished(f),
            P::BuildToolLogs(logs) => self.on_build_tool_logs(logs),
            P::BuildMetrics(m) => self.push_metrics(m),
            P::Fetch(f) => {
                if let Some(build_event_id::Id::Fetch(fid)) = &id {
                    let slot = self.fetches.entry(fid.url.clone()).or_insert(false);
                    *slot |= f.success;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// BuildStarted: the invocation's identity; a second one is refused.
    fn on_started(&mut self, s: proof_proto::bep::BuildStarted) -> Result<(), EvidenceError> {
        if let Some(first) = &self.started {
            return Err(EvidenceError::SecondBuildStarted {
                first: first.uuid.clone(),
                second: s.uuid,
            });
        }
        self.started = Some(Started {
            started_at: timestamp(s.start_time.as_ref(), s.start_time_millis),
            uuid: s.uuid,
            version: s.build_tool_version,
            command: s.command,
            options_description: s.options_description,
        });
        Ok(())
    }

    /// TargetConfigured (not of an aspect): the target and its kind.
    fn on_configured(
        &mut self,
        id: Option<&build_event_id::Id>,
        c: proof_proto::bep::TargetConfigured,
    ) {
        if let Some(build_event_id::Id::TargetConfigured(t)) = id {
            if t.aspect.is_empty() {
                let entry = self.targets.entry(t.label.clone()).or_default();
                if !c.target_kind.is_empty() {
                    entry.kind = Some(c.target_kind);
                }
            }
        }
    }

    /// TargetComplete: success (every completion of the label must succeed).
    fn on_completed(
        &mut self,
        id: Option<&build_event_id::Id>,
        c: proof_proto::bep::TargetComplete,
    ) {
        if let Some(build_event_id::Id::TargetCompleted(t)) = id {
            let entry = self.targets.entry(t.label.clone()).or_default();
            entry.success = Some(entry.success.unwrap_or(true) && c.success);
            if entry.kind.is_none() && !c.target_kind.is_empty() {
                entry.kind = Some(c.target_kind);
            }
        }
    }

    /// Aborted in place of a target's completion or configuration: failed.
    fn on_aborted(&mut self, id: Option<&build_event_id::Id>) {
        match id {
            Some(build_event_id::Id::TargetCompleted(t)) => {
                self.targets.entry(t.label.clone()).or_default().success = Some(false);
            }
            Some(build_event_id::Id::TargetConfigured(t)) if t.aspect.is_empty() => {
                self.targets.entry(t.label.clone()).or_default().success = Some(false);
            }
            _ => {}
        }
    }

    /// TestResult: one attempt, where it ran and whether it was cached.
    fn on_test_result(&mut self, id: Option<&build_event_id::Id>, r: proof_proto::bep::TestResult) {
        let Some(build_event_id::Id::TestResult(t)) = id else {
            return;
        };
        let acc = self
            .tests
            .entry(t.label.clone())
            .or_insert_with(|| TestAccum {
                all_cached_locally: true,
                all_cached_remotely: true,
                ..TestAccum::default()
            });
        acc.attempts = acc.attempts.saturating_add(1);
        acc.last_status = r.status;
        acc.all_cached_locally &= r.cached_locally;
        let info = r.execution_info.unwrap_or_default();
        acc.all_cached_remotely &= info.cached_remotely;
        if !info.strategy.is_empty() {
            acc.strategies.insert(info.strategy);
        }
    }

    /// TestSummary: the test's overall status.
    fn on_test_summary(
        &mut self,
        id: Option<&build_event_id::Id>,
        s: &proof_proto::bep::TestSummary,
    ) {
        let Some(build_event_id::Id::TestSummary(t)) = id else {
            return;
        };
        let acc = self
            .tests
            .entry(t.label.clone())
            .or_insert_with(|| TestAccum {
                all_cached_locally: false,
                all_cached_remotely: false,
                ..TestAccum::default()
            });
        acc.summary_status = Some(s.overall_status);
    }

    /// BuildFinished: the exit code and the finish time.
    fn on_finished(&mut self, f: proof_proto::bep::BuildFinished) {
        let code = f.exit_code.unwrap_or_default();
        let name = if code.name.is_empty() && code.code == 0 {
            "SUCCESS".to_string()
        } else {
            code.name
        };
        self.finished = Some((
            ExitCode {
                name,
                code: code.code,
            },
            timestamp(f.finish_time.as_ref(), f.finish_time_millis),
        ));
    }

    /// BuildToolLogs: the inline "process stats", "elapsed time" and
    /// "critical path" logs.
    fn on_build_tool_logs(&mut self, logs: proof_proto::bep::BuildToolLogs) {
        for log in logs.log {
            let Some(proof_proto::bep::file::File::Contents(bytes)) = log.file else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            match log.name.as_str() {
                "process stats" => {
                    if let Some(s) = summary::parse_process_summary(&text) {
                        self.process_stats = Some(s);
                    }
                }
                "elapsed time" => {
                    self.metrics.elapsed_time_log = Some(text.trim().to_string());
                }
                "critical path" => {
                    self.metrics.critical_path_log =
                        text.lines().next().map(|l| l.trim().to_string());
                }
                _ => {}
            }
        }
    }

    fn push_metrics(&mut self, m: proof_proto::bep::BuildMetrics) {
        let f = &mut self.metrics;
        f.present = true;
        let summary = m.action_summary.unwrap_or_default();
        f.actions_created = Some(summary.actions_created);
        f.actions_executed = Some(summary.actions_executed);
        if let Some(ac) = summary.action_cache_statistics {
            f.action_cache_hits = Some(i64::from(ac.hits));
            f.action_cache_misses = Some(i64::from(ac.misses));
        }
        let timing = m.timing_metrics.unwrap_or_default();
        f.cpu_time_ms = Some(timing.cpu_time_in_ms);
        f.wall_time_ms = Some(timing.wall_time_in_ms);
        f.analysis_phase_time_ms = Some(timing.analysis_phase_time_in_ms);
        f.execution_phase_time_ms = Some(timing.execution_phase_time_in_ms);
        f.critical_path_ms = timing.critical_path_time.map(|d| {
            let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
            u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
        });
        let targets = m.target_metrics.unwrap_or_default();
        f.targets_configured = Some(targets.targets_configured);
        f.packages_loaded = Some(m.package_metrics.unwrap_or_default().packages_loaded);
        if !summary.runner_count.is_empty() {
            let mut total = None;
            let mut runners = BTreeMap::new();
            let mut kinds = BTreeMap::new();
            for rc in summary.runner_count {
                let count = u64::try_from(rc.count.max(0)).unwrap_or(0);
                if rc.name == runners::TOTAL {
                    total = Some(count);
                    continue;
                }
                add(&mut runners, &rc.name, count);
                if !rc.exec_kind.is_empty() {
                    kinds.insert(rc.name, rc.exec_kind);
                }
            }
            let mut fig = figure(ProcessSource::RunnerCount, total, runners);
            fig.exec_kinds = kinds;
            self.runner_count = Some(fig);
        }
    }

    /// Reads a whole execution log (binary SpawnExec stream or compact zstd
    /// ExecLogEntry stream; detected from the zstd magic). May be called more
    /// than once; the spawns add up.
    pub fn push_exec_log(&mut self, log: impl Read) -> Result<(), EvidenceError> {
        let mut reader = execlog::ExecLogReader::open(log)?;
        let acc = self.exec.get_or_insert_with(ExecAccum::default);
        acc.format.get_or_insert(reader.format());
        self.binding.exec_log_seen();
        for spawn in reader.by_ref() {
            let spawn = spawn?;
            self.binding.push_spawn(&spawn);
            acc.spawns = acc.spawns.saturating_add(1);
            add(&mut acc.runners, &spawn.runner, 1);
            if spawn.exit_code != 0 || !spawn.status.is_empty() {
                acc.failed = acc.failed.saturating_add(1);
            }
            let class = runners::classify(&spawn.runner);
            let image = spawn.platform_property(CONTAINER_IMAGE).map(str::to_string);
            match class {
                RunnerClass::RemoteExecution => {
                    if let Some(d) = &spawn.digest {
                        acc.digests.insert(d.clone());
                        acc.exit_by_digest.insert(d.clone(), spawn.exit_code);
                    }
                    if let Some(t) = spawn.metrics {
                        let s = &mut acc.sums;
                        s.spawns = s.spawns.saturating_add(1);
                        s.total_ms = s.total_ms.saturating_add(t.total_ms);
                        s.queue_ms = s.queue_ms.saturating_add(t.queue_ms);
                        s.fetch_ms = s.fetch_ms.saturating_add(t.fetch_ms);
                        s.upload_ms = s.upload_ms.saturating_add(t.upload_ms);
                        s.execution_wall_ms =
                            s.execution_wall_ms.saturating_add(t.execution_wall_ms);
                        s.setup_ms = s.setup_ms.saturating_add(t.setup_ms);
                        s.network_ms = s.network_ms.saturating_add(t.network_ms);
                    }
                    if let Some(image) = image {
                        let e = acc.images.entry(image).or_default();
                        e.0 = e.0.saturating_add(1);
                    }
                }
                RunnerClass::RemoteCacheHit | RunnerClass::DiskCacheHit => {
                    if let Some(image) = image {
                        let e = acc.images.entry(image).or_default();
                        e.1 = e.1.saturating_add(1);
                    }
                }
                RunnerClass::Local | RunnerClass::Worker => {
                    if spawn.remotable {
                        acc.local_remotable = acc.local_remotable.saturating_add(1);
                    }
                }
                RunnerClass::Internal | RunnerClass::Unknown => {}
            }
        }
        if let Some(inv) = reader.invocation() {
            if !inv.id.is_empty() {
                acc.invocation_id = Some(inv.id.clone());
            }
            if !inv.hash_function_name.is_empty() {
                acc.hash_function = Some(inv.hash_function_name.clone());
            }
        }
        Ok(())
    }

    /// Builds the evidence. Fails when no BuildStarted event was seen or the
    /// execution log names another invocation. The steps are in
    /// `assemble.rs` (and the not-forced rules in `forced.rs`); the order
    /// matters, as most steps take what they read.
    pub fn finish(mut self) -> Result<Evidence, EvidenceError> {
        self.progress.finish();
        let started = self.checked_start()?;
        let processes = self.processes();
        let description = assemble::description_options(&started);
        let external_inputs = self.external_inputs(description.as_deref());
        let disk_cache = self
            .chosen_options(description.as_deref())
            .and_then(|(_, o)| Options { opts: o }.last_nonempty("disk_cache"));
        let executor = self.executor(description, &processes);
        let (corroboration, remote_grpc_log) = self.corroboration_and_grpc_log();
        let cache_writes = CacheWrites {
            update_action_result_calls: remote_grpc_log
                .as_ref()
                .map(|g| g.update_action_result_calls),
            disk_cache,
        };
        let output_binding = self
            .ledger
            .as_ref()
            .map(|l| binding::derive(&self.binding, l, self.origin.as_ref(), &started.uuid));
        let attestation = self.ledger.take().map(attestation::LedgerAccum::finish);
        let mut contradictions =
            attestation::contradictions(&processes, &executor, attestation.as_ref());
        contradictions.extend(crosscheck::ledger_contradictions(
            attestation.as_ref(),
            output_binding.as_ref(),
        ));
        let worker_images = self.attested_or_claimed_images(attestation.as_ref(), &executor);
        let all_remote_images_pinned =
            assemble::all_remote_images_pinned(attestation.as_ref(), &worker_images);
        let exec_log = self.exec_log_summary();
        let tests = self.test_outcomes();
        let (exit_code, finished_at) = match self.finished.take() {
            Some((code, at)) => (Some(code), at),
            None => (None, None),
        };
        Ok(Evidence {
            predicate_version: PREDICATE_VERSION.to_string(),
            invocation_id: started.uuid,
            bazel_version: Some(started.version).filter(|v| !v.is_empty()),
            command: started.command,
            patterns: std::mem::take(&mut self.patterns),
            started_at: started.started_at,
            finished_at,
            success: exit_code.as_ref().is_some_and(|c| c.code == 0),
            complete: exit_code.is_some() && self.last_message,
            exit_code,
            event_count: self.events,
            targets: std::mem::take(&mut self.targets),
            tests,
            build_metadata: std::mem::take(&mut self.build_metadata),
            workspace_status: std::mem::take(&mut self.workspace_status),
            executor,
            processes,
            worker_images,
            all_remote_images_pinned,
            exec_log,
            build_metrics: std::mem::take(&mut self.metrics),
            external_inputs,
            cache_writes,
            remote_grpc_log,
            corroboration,
            attestation,
            contradictions,
            output_binding,
            origin: self.origin.take(),
        })
    }

    fn processes(&mut self) -> Processes {
        let mut sources = Vec::new();
        if let Some(rc) = self.runner_count.take() {
            sources.push(rc);
        }
        if let Some(s) = self.process_stats.take() {
            sources.push(figure(
                ProcessSource::ProcessStatsLog,
                Some(s.total),
                s.runners,
            ));
        }
        if let Some(s) = self.progress.last.take() {
            sources.push(figure(
                ProcessSource::ProgressInfoLine,
                Some(s.total),
                s.runners,
            ));
        }
        if let Some(e) = &self.exec {
            sources.push(figure(
                ProcessSource::ExecLog,
                Some(e.spawns),
                e.runners.clone(),
            ));
        }
        let best = sources.first();
        Processes {
            remote_executions: best.map(|f| f.runners.get(runners::REMOTE).copied().unwrap_or(0)),
            remote_cache_hits: best
                .map(|f| f.runners.get("remote cache hit").copied().unwrap_or(0)),
            source: best.map(|f| f.source),
            sources,
        }
    }

    /// The best options source: canonical, else OptionsParsed, else the
    /// options description.
    fn chosen_options<'a>(
        &'a self,
        description: Option<&'a [Opt]>,
    ) -> Option<(OptionSource, &'a [Opt])> {
        self.canonical
            .as_deref()
            .map(|o| (OptionSource::CanonicalCommandLine, o))
            .or_else(|| {
                self.options_parsed
                    .as_deref()
                    .map(|o| (OptionSource::OptionsParsed, o))
            })
            .or_else(|| description.map(|o| (OptionSource::OptionsDescription, o)))
    }

    fn external_inputs(&self, description: Option<&[Opt]>) -> ExternalInputs {
        let opts = self
            .chosen_options(description)
            .map(|(_, o)| o)
            .unwrap_or_default();
        let o = Options { opts };
        let distdirs: Vec<String> = o
            .opts
            .iter()
            .filter(|(n, _)| n == "distdir" || n == "experimental_distdir")
            .filter_map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .collect();
        let registries: Vec<String> = o
            .all("registry")
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        let lockfile_mode = o.last_nonempty("lockfile_mode");
        let pinned_by_lockfile = lockfile_mode.as_deref() == Some("error");
        let fetches: Vec<FetchRecord> = self
            .fetches
            .iter()
            .map(|(url, ok)| FetchRecord {
                url: url.clone(),
                success: *ok,
            })
            .collect();
        let (mut lockfile_pinned, mut network) = (Vec::new(), Vec::new());
        for f in fetches.iter().filter(|f| f.success) {
            if pinned_by_lockfile && posture::under_registry(&f.url, &registries) {
                lockfile_pinned.push(f.url.clone());
            } else {
                network.push(f.url.clone());
            }
        }
        ExternalInputs {
            fetches,
            distdirs,
            repository_cache: o
                .last("repository_cache")
                .map(|v| v.unwrap_or("").to_string()),
            lockfile_mode,
            registries,
            repository_disable_download: o
                .last("repository_disable_download")
                .and_then(options::parse_bool),
            lockfile_pinned_fetches: lockfile_pinned,
            network_fetches: network,
        }
    }

    /// Reads a whole `--experimental_remote_grpc_log` (varint-delimited
    /// `remote_logging.LogEntry`). May be called more than once.
    pub fn push_remote_grpc_log(&mut self, log: impl Read) -> Result<(), EvidenceError> {
        self.grpc
            .get_or_insert_with(posture::GrpcAccum::default)
            .push(log)
    }

    /// Reads an artifact's `corroboration.bin` (a header, then one raw
    /// ActionCache answer per sampled digest). Call at most once.
    pub fn push_corroboration(&mut self, records: impl Read) -> Result<(), EvidenceError> {
        self.corroboration = Some(posture::CorroborationAccum::read(records)?);
        Ok(())
    }

    /// Reads an artifact's `executor.bin` (a header, then the executor's raw
    /// answers about the invocation). Call at most once.
    pub fn push_executor_ledger(&mut self, records: impl Read) -> Result<(), EvidenceError> {
        self.ledger = Some(attestation::LedgerAccum::read(records)?);
        Ok(())
    }

    /// Reads an artifact's `origin.json`. Call at most once.
    pub fn push_origin(&mut self, mut member: impl Read) -> Result<(), EvidenceError> {
        let mut bytes = Vec::new();
        member
            .read_to_end(&mut bytes)
            .map_err(|e| EvidenceError::BadOrigin(e.to_string()))?;
        let origin: Origin =
            serde_json::from_slice(&bytes).map_err(|e| EvidenceError::BadOrigin(e.to_string()))?;
        if origin.to_member() != bytes {
            return Err(EvidenceError::BadOrigin(
                "not in canonical form (compact JSON and a newline)".into(),
            ));
        }
        self.origin = Some(origin);
        Ok(())
    }

    /// The remote action digests a corroboration would sample from, and
    /// their source: the execution log's when it has any (Bazel 6+), else
    /// the gRPC log's Execute calls. Needs only the logs, no BEP events.
    pub fn corroboration_candidates(&self) -> (Option<DigestSource>, Vec<ActionDigest>) {
        candidates(self.exec.as_ref(), self.grpc.as_ref())
    }

    /// How remote execution was configured, from the best options source,
    /// and whether it is forced (the rules are in `forced.rs`).
    fn executor(&self, description: Option<Vec<Opt>>, processes: &Processes) -> Executor {
        let chosen = self.chosen_options(description.as_deref());
        let Some((source, opts)) = chosen else {
            return Executor {
                not_forced_reasons: vec![
                    "the stream has no command options (no canonical command line, OptionsParsed or options_description), so --remote_executor cannot be established".to_string(),
                ],
                ..Executor::default()
            };
        };
        let o = Options { opts };
        let url = |name: &str| o.last_nonempty(name).map(|v| options::strip_userinfo(&v));
        let mut ex = Executor {
            remote_executor: url("remote_executor"),
            source: Some(source),
            remote_instance_name: o.last_nonempty("remote_instance_name"),
            remote_cache: url("remote_cache"),
            bes_backend: url("bes_backend"),
            bes_instance_name: o
                .last_nonempty("bes_instance_name")
                .or_else(|| o.last_nonempty("project_id")),
            exec_properties: o.exec_properties(),
            remote_upload_local_results: o
                .last("remote_upload_local_results")
                .and_then(options::parse_bool),
            remote_accept_cached: o.last("remote_accept_cached").and_then(options::parse_bool),
            remote_local_fallback: o
                .last("remote_local_fallback")
                .and_then(options::parse_bool),
            header_keys: o.header_keys(),
            spawn_strategy: o.last_nonempty("spawn_strategy"),
            strategies: o.all("strategy").map(str::to_string).collect(),
            strategy_regexps: o.all("strategy_regexp").map(str::to_string).collect(),
            forced: false,
            not_forced_reasons: Vec::new(),
        };

        let reasons = forced::not_forced_reasons(
            &o,
            &ex,
            self.exec.as_ref().map(|e| e.local_remotable),
            processes,
        );
        ex.forced = reasons.is_empty();
        ex.not_forced_reasons = reasons;
        ex
    }

    fn worker_images(&self, executor: &Executor) -> Vec<WorkerImage> {
        if let Some(e) = &self.exec {
            if !e.images.is_empty() {
                return e
                    .images
                    .iter()
                    .map(|(image, (remote, hits))| WorkerImage {
                        pinned: is_pinned_image(image),
                        image: image.clone(),
                        source: ImageSource::ExecLog,
                        remote_spawns: Some(*remote),
                        cache_hit_spawns: Some(*hits),
                    })
                    .collect();
            }
        }
        executor
            .exec_properties
            .get(CONTAINER_IMAGE)
            .filter(|i| !i.is_empty())
            .map(|image| WorkerImage {
                pinned: is_pinned_image(image),
                image: image.clone(),
                source: ImageSource::DefaultExecProperties,
                remote_spawns: None,
                cache_hit_spawns: None,
            })
            .into_iter()
            .collect()
    }
}

fn candidates(
    exec: Option<&ExecAccum>,
    grpc: Option<&posture::GrpcAccum>,
) -> (Option<DigestSource>, Vec<ActionDigest>) {
    if let Some(e) = exec.filter(|e| !e.digests.is_empty()) {
        return (
            Some(DigestSource::ExecLog),
            e.digests.iter().cloned().collect(),
        );
    }
    if let Some(g) = grpc.filter(|g| !g.digests.is_empty()) {
        return (
            Some(DigestSource::RemoteGrpcLog),
            g.digests.iter().cloned().collect(),
        );
    }
    (None, Vec::new())
}

/// Convenience: derives evidence from a delimited BEP file
/// (`--build_event_binary_file`) and optionally an execution log.
pub fn derive_from_delimited(
    bep: impl Read,
    exec_log: Option<impl Read>,
) -> Result<Evidence, EvidenceError> {
    let mut builder = EvidenceBuilder::new();
    for record in DelimitedReader::new(bep) {
        builder.push_event(&record.map_err(EvidenceError::BepFraming)?)?;
    }
    if let Some(log) = exec_log {
        builder.push_exec_log(log)?;
    }
    builder.finish()
}
