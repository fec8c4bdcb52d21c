//! proof-kpi: per-invocation KPIs, a rule-based diagnosis ([`explain`]) and
//! fleet views ([`fleet`]) derived from a Bazel BEP stream, its optional
//! execution log and the [`Evidence`] proof-evidence derives from the same
//! bytes.
//!
//! Pure and streaming: events are fed one at a time, the execution log is
//! read record by record; no file or network I/O. Every value that the
//! stream cannot show is `None` (JSON `null`), never 0. `docs/kpis.md`
//! documents every field, its source per Bazel version and the diagnosis
//! rules.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let events: Vec<Vec<u8>> = vec![];
//! let mut ev = proof_evidence::EvidenceBuilder::new();
//! let mut k = proof_kpi::KpiBuilder::new();
//! for e in &events { ev.push_event(e)?; k.push_event(e)?; }
//! let evidence = ev.finish()?;
//! let kpis = k.finish(&evidence);
//! let diagnosis = proof_kpi::explain(&kpis, &evidence);
//! # Ok(()) }
//! ```

mod diagnosis;
pub mod execlog;
pub mod fleet;
pub mod text;

use std::collections::BTreeMap;
use std::io::Read;

use proof_evidence::{Evidence, ProcessSource, RunnerClass};
use proof_proto::bep::{aborted::AbortReason, build_event, build_event_id, BuildEvent, TestStatus};
use prost::Message;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use diagnosis::{explain, Cause, Diagnosis, Fact, Finding, Thresholds, DIAGNOSIS_VERSION};

/// Version of the [`Kpis`] JSON shape; bump on any change of a field or of
/// how one is derived.
pub const KPI_VERSION: &str = "1";

/// Lines kept per signal list.
const MAX_SIGNAL_LINES: usize = 10;

/// Why KPIs could not be computed.
#[derive(Debug, Error)]
pub enum KpiError {
    #[error("BEP event #{index} is not a valid build_event_stream.BuildEvent: {source}; pass the bytes of one record of a --build_event_binary_file (without its length prefix)")]
    BadEvent {
        index: u64,
        #[source]
        source: prost::DecodeError,
    },
    /// The execution log does not read: framing, zstd or decoding (the
    /// readers are `proof_evidence`'s; their messages say what to pass).
    #[error(transparent)]
    ExecLog(#[from] proof_evidence::EvidenceError),
    #[error("reading the execution log failed: {0}")]
    ExecLogIo(#[source] std::io::Error),
}

/// Where a timing KPI came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// `SpawnMetrics.start_time` in the execution log (newest Bazel).
    ExecLogStartTime,
    /// `TestResult.test_attempt_start` of a remotely cached / remotely
    /// executed test attempt (test spawns only: an upper bound).
    BepTestResult,
}

/// A time from the build start, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub ms: Option<u64>,
    pub source: Option<TimingSource>,
}

/// Where process counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountSource {
    /// Every logged spawn (includes failed spawns; no "internal" entries).
    ExecLog,
    RunnerCount,
    ProcessStatsLog,
    ProgressInfoLine,
}

impl From<ProcessSource> for CountSource {
    fn from(s: ProcessSource) -> Self {
        match s {
            ProcessSource::RunnerCount => CountSource::RunnerCount,
            ProcessSource::ProcessStatsLog => CountSource::ProcessStatsLog,
            ProcessSource::ProgressInfoLine => CountSource::ProgressInfoLine,
            ProcessSource::ExecLog => CountSource::ExecLog,
        }
    }
}

/// Remote vs local vs cache-hit process mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMix {
    pub source: CountSource,
    pub remote_execution: u64,
    pub remote_cache_hit: u64,
    pub disk_cache_hit: u64,
    pub local: u64,
    pub worker: u64,
    /// `None` for the execution log, which has no internal entries.
    pub internal: Option<u64>,
    pub unknown: u64,
    /// remote_execution / (remote_execution + cache hits + local + worker);
    /// `None` when that sum is 0.
    pub remote_share: Option<f64>,
}

impl ProcessMix {
    /// Spawns that went to a cache or executed somewhere.
    pub fn lookups(&self) -> u64 {
        self.remote_execution
            + self.remote_cache_hit
            + self.disk_cache_hit
            + self.local
            + self.worker
    }
}

/// The local (in-process) action cache of the Bazel server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalActionCache {
    pub hits: u64,
    pub misses: u64,
    pub hit_rate: Option<f64>,
}

/// Cache hit rates; remote and disk kept apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheKpis {
    /// Denominator of both rates: remote executions + remote cache hits +
    /// disk cache hits + local + worker spawns (see [`ProcessMix`]).
    pub lookups: Option<u64>,
    pub remote_cache_hits: Option<u64>,
    pub disk_cache_hits: Option<u64>,
    pub remote_hit_rate: Option<f64>,
    pub disk_hit_rate: Option<f64>,
    /// BuildMetrics.action_summary.action_cache_statistics (6.x+).
    pub local_action_cache: Option<LocalActionCache>,
}

/// Remote spawn time split, summed over remote-executed spawns that carry
/// `SpawnMetrics` in the execution log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteTime {
    pub spawns: u64,
    pub total_ms: u64,
    pub queue_ms: u64,
    pub fetch_ms: u64,
    pub upload_ms: u64,
    pub execution_wall_ms: u64,
    pub setup_ms: u64,
    pub network_ms: u64,
    /// queue_ms / total_ms; `None` when total_ms is 0.
    pub queue_share: Option<f64>,
}

/// How the CAS input figures were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CasSource {
    /// `SpawnMetrics.input_bytes` / `input_files`.
    SpawnMetrics,
    /// Sum of the input digests listed per spawn (binary log).
    ListedInputs,
}

/// CAS traffic as far as the execution log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CasTraffic {
    pub input_source: Option<CasSource>,
    /// Size of the input roots of remote-executed spawns (what the executor
    /// needed from the CAS; an upper bound of what Bazel uploaded).
    pub remote_input_bytes: Option<u64>,
    pub remote_input_files: Option<u64>,
    /// Sum of output sizes of remote-executed spawns.
    pub remote_output_bytes: Option<u64>,
    /// Sum of output sizes of remote/disk cache hits (what a full download
    /// fetches from the cache).
    pub cache_hit_output_bytes: Option<u64>,
}

/// Analysis-cache reuse (Bazel server's Skyframe state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisCache {
    /// BuildMetrics.package_metrics.packages_loaded (loaded in this build).
    pub packages_loaded: Option<u64>,
    /// BuildMetrics.target_metrics.targets_configured (configured in this
    /// build; cached ones are not counted).
    pub targets_configured: Option<u64>,
    pub targets_loaded: Option<u64>,
    /// True when no package was loaded and no target configured: the
    /// analysis cache was reused entirely. `None` without BuildMetrics.
    pub fully_reused: Option<bool>,
    /// A progress line said "discarding analysis cache".
    pub discarded: bool,
}

/// Where the critical-path figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticalPathSource {
    /// BuildMetrics.timing_metrics.critical_path_time (newest Bazel).
    TimingMetrics,
    /// The "critical path" BuildToolLogs entry.
    CriticalPathLog,
    /// `INFO: Elapsed time: …, Critical Path: …` in progress stderr.
    ProgressLine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalPath {
    pub ms: Option<u64>,
    pub source: CriticalPathSource,
    /// "Remote (x% of the time)" of the critical-path log.
    pub remote_pct: Option<f64>,
    /// The log's phase percentages (parse, queue, network, upload, setup,
    /// process, fetch, retry, processOutputs, other).
    pub breakdown_pct: BTreeMap<String, f64>,
}

/// Facts the diagnosis rules read that are not KPIs themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// URLs of Fetch events with success = false.
    pub failed_fetches: Vec<String>,
    /// Lines (progress, aborts, failure details, spawn status) naming
    /// RESOURCE_EXHAUSTED.
    pub resource_exhausted: Vec<String>,
    /// Remote backend failures: Aborted REMOTE_ENVIRONMENT_FAILURE, test
    /// status REMOTE_FAILURE, exit code REMOTE_ERROR, gRPC
    /// UNAVAILABLE/DEADLINE_EXCEEDED lines, remote spawns with a status.
    pub remote_failures: Vec<String>,
    /// Spawns in the execution log with a non-zero exit code or a status.
    pub failed_spawns: Option<u64>,
    /// …of them, those run by the remote executor.
    pub failed_remote_spawns: Option<u64>,
}

/// One action seen in the execution log, for fleet-wide poison detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// `hash/size` of the action digest.
    pub digest: String,
    pub target_label: String,
    pub mnemonic: String,
    pub cache_hit: bool,
    pub exit_code: i32,
    /// Fingerprint of (path, digest) of every output; `None` when the log
    /// does not give the outputs.
    pub outputs: Option<String>,
}

/// Everything measured about one invocation. See `docs/kpis.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Always [`KPI_VERSION`].
    pub kpi_version: String,
    pub invocation_id: String,
    pub bazel_version: Option<String>,
    /// `--build_metadata=REPO=…`.
    pub repo: Option<String>,
    /// Whether an execution log was read.
    pub exec_log: bool,
    /// BuildFinished − BuildStarted, else BuildMetrics wall time.
    pub wall_time_ms: Option<u64>,
    pub time_to_first_cache_hit: Timing,
    pub time_to_first_remote_execution: Timing,
    pub process_mix: Option<ProcessMix>,
    pub cache: CacheKpis,
    pub remote_time: Option<RemoteTime>,
    pub cas: Option<CasTraffic>,
    pub analysis_cache: AnalysisCache,
    pub critical_path: Option<CriticalPath>,
    pub signals: Signals,
    /// Spawns with an action digest (execution log), for fleet views; not
    /// part of the JSON.
    #[serde(skip)]
    pub actions: Vec<ActionOutcome>,
    /// Logged spawns without an action digest (all of them in 4.x logs).
    pub spawns_without_digest: Option<u64>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| round4(n as f64 / d as f64))
}

/// Rounds to 4 decimals so the JSON is stable.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn ts_ms(ts: Option<&prost_types::Timestamp>, millis: i64) -> Option<i64> {
    match ts {
        Some(t) if t.seconds != 0 || t.nanos != 0 => {
            Some(t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000)
        }
        _ if millis != 0 => Some(millis),
        _ => None,
    }
}

fn push_line(list: &mut Vec<String>, line: &str) {
    let line: String = line.trim().chars().take(300).collect();
    if !line.is_empty() && list.len() < MAX_SIGNAL_LINES && !list.contains(&line) {
        list.push(line);
    }
}

/// Text that marks a remote backend failure in progress output.
const BACKEND_PATTERNS: &[&str] = &[
    "UNAVAILABLE:",
    "DEADLINE_EXCEEDED:",
    "Failed to query remote execution capabilities",
    "Remote Execution Failure",
    "REMOTE_ENVIRONMENT_FAILURE",
    "remote spawn failed",
];

/// Spawn statuses that are the action's own failure, not the backend's.
const ACTION_STATUSES: &[&str] = &["NON_ZERO_EXIT", "TIMEOUT", "OUT_OF_MEMORY"];

/// Bazel's exit code for remote errors.
const EXIT_REMOTE_ERROR: i32 = 34;

#[derive(Debug, Default)]
struct ExecAcc {
    spawns: u64,
    by_class: BTreeMap<RunnerClass, u64>,
    first_hit_ms: Option<i64>,
    first_remote_ms: Option<i64>,
    remote: Option<RemoteTime>,
    metric_input: (u64, u64, u64),
    listed_input: Option<(u64, u64)>,
    remote_out: Option<u64>,
    hit_out: Option<u64>,
    failed: u64,
    failed_remote: u64,
    without_digest: u64,
}

/// Incrementally computes [`Kpis`]: feed every BEP event with
/// [`push_event`](Self::push_event), optionally the execution log with
/// [`push_exec_log`](Self::push_exec_log), then [`finish`](Self::finish)
/// with the [`Evidence`] of the same bytes.
#[derive(Debug, Default)]
pub struct KpiBuilder {
    events: u64,
    start_ms: Option<i64>,
    finish_ms: Option<i64>,
    test_first_hit_ms: Option<i64>,
    test_first_remote_ms: Option<i64>,
    targets_loaded: Option<u64>,
    critical_path_log: Option<text::CriticalPathLine>,
    progress_cp_ms: Option<u64>,
    discarded: bool,
    signals: Signals,
    exec: Option<ExecAcc>,
    actions: Vec<ActionOutcome>,
}

fn min_opt(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl KpiBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// One serialized `build_event_stream.BuildEvent`.
    pub fn push_event(&mut self, event: &[u8]) -> Result<(), KpiError> {
        let ev = BuildEvent::decode(event).map_err(|source| KpiError::BadEvent {
            index: self.events,
            source,
        })?;
        self.events += 1;
        let id = ev.id.and_then(|i| i.id);
        let Some(payload) = ev.payload else {
            return Ok(());
        };
        use build_event::Payload as P;
        match payload {
            P::Started(s) => self.start_ms = ts_ms(s.start_time.as_ref(), s.start_time_millis),
            P::Finished(f) => self.on_finished(f),
            P::Progress(p) => self.on_progress(&p),
            P::Aborted(a) => self.on_aborted(&a),
            P::Fetch(f) if !f.success => {
                let url = match &id {
                    Some(build_event_id::Id::Fetch(fid)) => fid.url.clone(),
                    _ => String::from("(unknown url)"),
                };
                push_line(&mut self.signals.failed_fetches, &url);
            }
            P::TestResult(r) => self.on_test_result(id.as_ref(), r),
            P::BuildToolLogs(logs) => self.on_build_tool_logs(logs),
            P::BuildMetrics(m) => {
                if let Some(t) = m.target_metrics {
                    self.targets_loaded = u64::try_from(t.targets_loaded).ok();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// BuildFinished: the finish time; exit code 34 and RESOURCE_EXHAUSTED
    /// in the failure detail are signals.
    fn on_finished(&mut self, f: proof_proto::bep::BuildFinished) {
        self.finish_ms = ts_ms(f.finish_time.as_ref(), f.finish_time_millis);
        let code = f.exit_code.unwrap_or_default();
        let detail = f.failure_detail.map(|d| d.message).unwrap_or_default();
        if code.code == EXIT_REMOTE_ERROR {
            push_line(
                &mut self.signals.remote_failures,
                &format!(
                    "BuildFinished exit code {} {} {detail}",
                    code.code, code.name
                ),
            );
        }
        if detail.contains("RESOURCE_EXHAUSTED") {
            push_line(&mut self.signals.resource_exhausted, &detail);
        }
    }

    /// Progress: backend error lines, a discarded analysis cache and the
    /// "Elapsed time ... Critical Path" line.
    fn on_progress(&mut self, p: &proof_proto::bep::Progress) {
        for chunk in [&p.stderr, &p.stdout] {
            if chunk.is_empty() {
                continue;
            }
            let clean = text::strip_ansi(chunk);
            for line in clean.lines() {
                if line.contains("RESOURCE_EXHAUSTED") {
                    push_line(&mut self.signals.resource_exhausted, line);
                } else if BACKEND_PATTERNS.iter().any(|p| line.contains(p)) {
                    push_line(&mut self.signals.remote_failures, line);
                }
                if line.contains("discarding analysis cache") {
                    self.discarded = true;
                }
                if let Some((_, Some(cp))) = text::parse_elapsed_line(line) {
                    self.progress_cp_ms = Some(cp);
                }
            }
        }
    }

    fn on_aborted(&mut self, a: &proof_proto::bep::Aborted) {
        if a.description.contains("RESOURCE_EXHAUSTED") {
            push_line(&mut self.signals.resource_exhausted, &a.description);
        } else if a.reason == AbortReason::RemoteEnvironmentFailure as i32 {
            push_line(
                &mut self.signals.remote_failures,
                &format!("Aborted REMOTE_ENVIRONMENT_FAILURE: {}", a.description),
            );
        }
    }

    /// TestResult: REMOTE_FAILURE, and the first remote-cached and first
    /// remotely run test attempt.
    fn on_test_result(&mut self, id: Option<&build_event_id::Id>, r: proof_proto::bep::TestResult) {
        let label = match id {
            Some(build_event_id::Id::TestResult(t)) => t.label.as_str(),
            _ => "",
        };
        if r.status == TestStatus::RemoteFailure as i32 {
            push_line(
                &mut self.signals.remote_failures,
                &format!("test {label}: REMOTE_FAILURE {}", r.status_details),
            );
        }
        let info = r.execution_info.unwrap_or_default();
        if let Some(at) = ts_ms(
            r.test_attempt_start.as_ref(),
            r.test_attempt_start_millis_epoch,
        ) {
            if info.cached_remotely {
                self.test_first_hit_ms = min_opt(self.test_first_hit_ms, at);
            } else if info.strategy == "remote" && !r.cached_locally {
                self.test_first_remote_ms = min_opt(self.test_first_remote_ms, at);
            }
        }
    }

    /// BuildToolLogs: the first line of the inline "critical path" log.
    fn on_build_tool_logs(&mut self, logs: proof_proto::bep::BuildToolLogs) {
        for log in logs.log {
            if log.name != "critical path" {
                continue;
            }
            if let Some(proof_proto::bep::file::File::Contents(bytes)) = log.file {
                let t = String::from_utf8_lossy(&bytes);
                if let Some(first) = t.lines().next() {
                    self.critical_path_log = text::parse_critical_path_line(first);
                }
            }
        }
    }

    /// Reads a whole execution log (binary or compact; detected). May be
    /// called more than once; the spawns add up.
    pub fn push_exec_log(&mut self, log: impl Read) -> Result<(), KpiError> {
        let reader = execlog::SpawnFactsReader::open(log)?;
        let acc = self.exec.get_or_insert_with(ExecAcc::default);
        for spawn in reader {
            let s = spawn?;
            let class = proof_evidence::runners::classify(&s.runner);
            acc.count(&mut self.signals, class, &s);
            match s.action_digest {
                Some(digest) => self.actions.push(ActionOutcome {
                    digest,
                    target_label: s.target_label,
                    mnemonic: s.mnemonic,
                    cache_hit: s.cache_hit,
                    exit_code: s.exit_code,
                    outputs: s.outputs_fingerprint,
                }),
                None => acc.without_digest += 1,
            }
        }
        Ok(())
    }

    /// The KPIs, given the evidence derived from the same stream.
    pub fn finish(mut self, ev: &Evidence) -> Kpis {
        let exec = self.exec.take();
        let time_to_first_cache_hit = self.timing(
            exec.as_ref().and_then(|e| e.first_hit_ms),
            self.test_first_hit_ms,
        );
        let time_to_first_remote_execution = self.timing(
            exec.as_ref().and_then(|e| e.first_remote_ms),
            self.test_first_remote_ms,
        );
        let process_mix = match &exec {
            Some(e) => Some(mix(CountSource::ExecLog, &e.by_class, None)),
            None => ev.processes.sources.first().map(|f| {
                mix(
                    f.source.into(),
                    &f.by_class,
                    Some(f.by_class.get(&RunnerClass::Internal).copied().unwrap_or(0)),
                )
            }),
        };
        let bm = &ev.build_metrics;
        let cache = cache_kpis(bm, process_mix.as_ref());
        let remote_time = exec.as_ref().and_then(|e| e.remote.clone()).map(|mut r| {
            r.queue_share = ratio(r.queue_ms, r.total_ms);
            r
        });
        let cas = exec.as_ref().map(ExecAcc::cas_traffic);
        let analysis_cache = AnalysisCache {
            packages_loaded: bm.packages_loaded.and_then(|v| u64::try_from(v).ok()),
            targets_configured: bm.targets_configured.and_then(|v| u64::try_from(v).ok()),
            targets_loaded: self.targets_loaded.filter(|_| bm.present),
            fully_reused: bm.present.then(|| {
                bm.packages_loaded.unwrap_or(0) == 0 && bm.targets_configured.unwrap_or(0) == 0
            }),
            discarded: self.discarded,
        };
        let critical_path = self.critical_path(bm);
        let wall_time_ms = match (self.start_ms, self.finish_ms) {
            (Some(s), Some(f)) if f >= s => u64::try_from(f - s).ok(),
            _ => bm
                .wall_time_ms
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0),
        };
        let mut signals = std::mem::take(&mut self.signals);
        if let Some(e) = &exec {
            signals.failed_spawns = Some(e.failed);
            signals.failed_remote_spawns = Some(e.failed_remote);
        }
        Kpis {
            kpi_version: KPI_VERSION.to_string(),
            invocation_id: ev.invocation_id.clone(),
            bazel_version: ev.bazel_version.clone(),
            repo: ev.build_metadata.get("REPO").cloned(),
            exec_log: exec.is_some(),
            wall_time_ms,
            time_to_first_cache_hit,
            time_to_first_remote_execution,
            process_mix,
            cache,
            remote_time,
            cas,
            analysis_cache,
            critical_path,
            signals,
            actions: std::mem::take(&mut self.actions),
            spawns_without_digest: exec.as_ref().map(|e| e.without_digest),
        }
    }

    /// Time from BuildStarted to the first such spawn: from the execution
    /// log when it has one, else from the BEP's test attempts.
    fn timing(&self, log: Option<i64>, test: Option<i64>) -> Timing {
        let since_start = |at: Option<i64>| -> Option<u64> {
            let (s, a) = (self.start_ms?, at?);
            Some(u64::try_from(a.saturating_sub(s)).unwrap_or(0))
        };
        match (since_start(log), since_start(test)) {
            (Some(ms), _) => Timing {
                ms: Some(ms),
                source: Some(TimingSource::ExecLogStartTime),
            },
            (None, Some(ms)) => Timing {
                ms: Some(ms),
                source: Some(TimingSource::BepTestResult),
            },
            _ => Timing::default(),
        }
    }

    /// The critical path: BuildMetrics timing first, then the "critical
    /// path" log, then the progress line.
    fn critical_path(&mut self, bm: &proof_evidence::BuildMetricsFacts) -> Option<CriticalPath> {
        if let Some(ms) = bm.critical_path_ms {
            let log = self.critical_path_log.take().unwrap_or_default();
            return Some(CriticalPath {
                ms: Some(ms),
                source: CriticalPathSource::TimingMetrics,
                remote_pct: log.remote_pct,
                breakdown_pct: log.breakdown_pct,
            });
        }
        if let Some(log) = self.critical_path_log.take() {
            return Some(CriticalPath {
                ms: log.ms,
                source: CriticalPathSource::CriticalPathLog,
                remote_pct: log.remote_pct,
                breakdown_pct: log.breakdown_pct,
            });
        }
        self.progress_cp_ms.map(|ms| CriticalPath {
            ms: Some(ms),
            source: CriticalPathSource::ProgressLine,
            remote_pct: None,
            breakdown_pct: BTreeMap::new(),
        })
    }
}

impl ExecAcc {
    /// Counts one spawn of the execution log.
    fn count(&mut self, signals: &mut Signals, class: RunnerClass, s: &execlog::SpawnFacts) {
        self.spawns += 1;
        *self.by_class.entry(class).or_insert(0) += 1;
        let failed = s.exit_code != 0 || !s.status.is_empty();
        if failed {
            self.failed += 1;
        }
        if s.status.contains("RESOURCE_EXHAUSTED") {
            push_line(
                &mut signals.resource_exhausted,
                &format!(
                    "spawn {} {}: status {}",
                    s.mnemonic, s.target_label, s.status
                ),
            );
        }
        match class {
            RunnerClass::RemoteExecution => self.count_remote(signals, s, failed),
            RunnerClass::RemoteCacheHit | RunnerClass::DiskCacheHit => {
                if let Some(at) = s.start_ms {
                    self.first_hit_ms = min_opt(self.first_hit_ms, at);
                }
                if let Some(b) = s.output_bytes {
                    *self.hit_out.get_or_insert(0) += b;
                }
            }
            _ => {}
        }
    }

    /// A remotely executed spawn: backend failures, first start, the time
    /// split and the CAS traffic.
    fn count_remote(&mut self, signals: &mut Signals, s: &execlog::SpawnFacts, failed: bool) {
        if failed {
            self.failed_remote += 1;
        }
        if !s.status.is_empty()
            && !ACTION_STATUSES.contains(&s.status.as_str())
            && !s.status.contains("RESOURCE_EXHAUSTED")
        {
            push_line(
                &mut signals.remote_failures,
                &format!(
                    "remote spawn {} {}: status {} (exit {})",
                    s.mnemonic, s.target_label, s.status, s.exit_code
                ),
            );
        }
        if let Some(at) = s.start_ms {
            self.first_remote_ms = min_opt(self.first_remote_ms, at);
        }
        if s.has_metrics {
            let r = self.remote.get_or_insert(RemoteTime {
                spawns: 0,
                total_ms: 0,
                queue_ms: 0,
                fetch_ms: 0,
                upload_ms: 0,
                execution_wall_ms: 0,
                setup_ms: 0,
                network_ms: 0,
                queue_share: None,
            });
            r.spawns += 1;
            r.total_ms += s.total_ms;
            r.queue_ms += s.queue_ms;
            r.fetch_ms += s.fetch_ms;
            r.upload_ms += s.upload_ms;
            r.execution_wall_ms += s.execution_wall_ms;
            r.setup_ms += s.setup_ms;
            r.network_ms += s.network_ms;
            if s.metric_input_bytes > 0 || s.metric_input_files > 0 {
                self.metric_input.0 += 1;
                self.metric_input.1 += s.metric_input_bytes;
                self.metric_input.2 += s.metric_input_files;
            }
        }
        if let (Some(b), Some(f)) = (s.listed_input_bytes, s.listed_input_files) {
            let l = self.listed_input.get_or_insert((0, 0));
            l.0 += b;
            l.1 += f;
        }
        if let Some(b) = s.output_bytes {
            *self.remote_out.get_or_insert(0) += b;
        }
    }

    /// CAS traffic: SpawnMetrics input figures when any spawn has them,
    /// else the listed inputs.
    fn cas_traffic(&self) -> CasTraffic {
        let (input_source, bytes, files) = if self.metric_input.0 > 0 {
            (
                Some(CasSource::SpawnMetrics),
                Some(self.metric_input.1),
                Some(self.metric_input.2),
            )
        } else if let Some((b, f)) = self.listed_input {
            (Some(CasSource::ListedInputs), Some(b), Some(f))
        } else {
            (None, None, None)
        };
        CasTraffic {
            input_source,
            remote_input_bytes: bytes,
            remote_input_files: files,
            remote_output_bytes: self.remote_out,
            cache_hit_output_bytes: self.hit_out,
        }
    }
}

/// Cache KPIs from the process mix and the local action cache statistics.
fn cache_kpis(bm: &proof_evidence::BuildMetricsFacts, mix: Option<&ProcessMix>) -> CacheKpis {
    let local_action_cache = match (bm.action_cache_hits, bm.action_cache_misses) {
        (Some(h), Some(m)) => {
            let (h, m) = (u64::try_from(h).unwrap_or(0), u64::try_from(m).unwrap_or(0));
            Some(LocalActionCache {
                hits: h,
                misses: m,
                hit_rate: ratio(h, h + m),
            })
        }
        _ => None,
    };
    match mix {
        Some(m) => CacheKpis {
            lookups: Some(m.lookups()),
            remote_cache_hits: Some(m.remote_cache_hit),
            disk_cache_hits: Some(m.disk_cache_hit),
            remote_hit_rate: ratio(m.remote_cache_hit, m.lookups()),
            disk_hit_rate: ratio(m.disk_cache_hit, m.lookups()),
            local_action_cache,
        },
        None => CacheKpis {
            local_action_cache,
            ..CacheKpis::default()
        },
    }
}

fn mix(source: CountSource, by: &BTreeMap<RunnerClass, u64>, internal: Option<u64>) -> ProcessMix {
    let get = |c| by.get(&c).copied().unwrap_or(0);
    let mut m = ProcessMix {
        source,
        remote_execution: get(RunnerClass::RemoteExecution),
        remote_cache_hit: get(RunnerClass::RemoteCacheHit),
        disk_cache_hit: get(RunnerClass::DiskCacheHit),
        local: get(RunnerClass::Local),
        worker: get(RunnerClass::Worker),
        internal,
        unknown: get(RunnerClass::Unknown),
        remote_share: None,
    };
    m.remote_share = ratio(m.remote_execution, m.lookups());
    m
}

/// Everything the web page and `proof explain` show for one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub evidence: Evidence,
    pub kpis: Kpis,
    pub diagnosis: Diagnosis,
}

/// Why an [`Analysis`] could not be made.
#[derive(Debug, Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Kpi(#[from] KpiError),
    #[error(transparent)]
    Evidence(#[from] proof_evidence::EvidenceError),
}

/// Feeds the same events to an [`proof_evidence::EvidenceBuilder`] and a
/// [`KpiBuilder`]; the execution log is given as a closure that opens it
/// (it is read twice, once per builder).
#[derive(Debug, Default)]
pub struct Analyzer {
    evidence: proof_evidence::EvidenceBuilder,
    kpis: KpiBuilder,
}

impl Analyzer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push_event(&mut self, event: &[u8]) -> Result<(), AnalysisError> {
        self.evidence.push_event(event)?;
        self.kpis.push_event(event)?;
        Ok(())
    }

    /// `open` is called twice and must return the same log each time.
    pub fn push_exec_log<R: Read>(
        &mut self,
        mut open: impl FnMut() -> std::io::Result<R>,
    ) -> Result<(), AnalysisError> {
        self.evidence
            .push_exec_log(open().map_err(KpiError::ExecLogIo)?)?;
        self.kpis
            .push_exec_log(open().map_err(KpiError::ExecLogIo)?)?;
        Ok(())
    }

    pub fn finish(self) -> Result<Analysis, AnalysisError> {
        let evidence = self.evidence.finish()?;
        let kpis = self.kpis.finish(&evidence);
        let diagnosis = explain(&kpis, &evidence);
        Ok(Analysis {
            evidence,
            kpis,
            diagnosis,
        })
    }
}
