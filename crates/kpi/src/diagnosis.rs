//! Rule-based diagnosis: why an invocation did not (fully, or quickly) run
//! on the remote executor. Every rule is a plain function over [`Kpis`] and
//! [`Evidence`]; the rules are tried in a fixed precedence order and every
//! rule that matches becomes a [`Finding`]; the first is the dominant
//! cause. `docs/kpis.md` lists the rules.

use proof_evidence::Evidence;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{CountSource, Kpis};

fn count_source(s: CountSource) -> &'static str {
    match s {
        CountSource::ExecLog => "exec_log",
        CountSource::RunnerCount => "runner_count",
        CountSource::ProcessStatsLog => "process_stats_log",
        CountSource::ProgressInfoLine => "progress_info_line",
    }
}

/// Version of the [`Diagnosis`] JSON shape and of the rule set.
pub const DIAGNOSIS_VERSION: &str = "1";

/// The cause classes, in precedence order (first wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Quota,
    BackendHealth,
    Eligibility,
    ExternalInput,
    WorkerImage,
    Queueing,
    CacheMiss,
    None,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Quota => "quota",
            Cause::BackendHealth => "backend_health",
            Cause::Eligibility => "eligibility",
            Cause::ExternalInput => "external_input",
            Cause::WorkerImage => "worker_image",
            Cause::Queueing => "queueing",
            Cause::CacheMiss => "cache_miss",
            Cause::None => "none",
        }
    }
}

/// One fact a finding rests on: a KPI or evidence path, its value and where
/// it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub fact: String,
    pub value: Value,
    pub source: String,
}

fn fact(name: &str, value: Value, source: &str) -> Fact {
    Fact {
        fact: name.to_string(),
        value,
        source: source.to_string(),
    }
}

/// One matched rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub cause: Cause,
    pub summary: String,
    pub evidence: Vec<Fact>,
}

/// The thresholds of the numeric rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Queue share of remote time (or of the critical path) at or above
    /// which queueing dominates.
    pub queue_dominant_share: f64,
    /// Combined remote + disk hit rate below which misses count.
    pub cache_miss_max_hit_rate: f64,
    /// Remote executions needed before cache_miss can fire.
    pub cache_miss_min_remote_executions: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            queue_dominant_share: 0.5,
            cache_miss_max_hit_rate: 0.5,
            cache_miss_min_remote_executions: 5,
        }
    }
}

/// The diagnosis of one invocation; stable JSON (see `docs/kpis.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Always [`DIAGNOSIS_VERSION`].
    pub diagnosis_version: String,
    pub invocation_id: String,
    pub dominant_cause: Cause,
    pub summary: String,
    /// The facts behind the dominant cause.
    pub evidence: Vec<Fact>,
    /// Every matched rule in precedence order (the first is dominant).
    pub findings: Vec<Finding>,
    /// Inputs that were absent, so some rules could not be evaluated.
    pub missing: Vec<String>,
    pub thresholds: Thresholds,
}

/// [`explain_with`] with the default thresholds.
pub fn explain(kpis: &Kpis, ev: &Evidence) -> Diagnosis {
    explain_with(kpis, ev, &Thresholds::default())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// What every rule reads, and where a rule notes an input it lacked.
struct Inputs<'a> {
    kpis: &'a Kpis,
    ev: &'a Evidence,
    t: &'a Thresholds,
}

/// One rule: a finding when it matches; inputs it could not read go into
/// `missing`.
type Rule = fn(&Inputs, &mut Vec<String>) -> Option<Finding>;

/// The rules in precedence order (the first finding is the dominant cause).
const RULES: [Rule; 7] = [
    quota,
    backend_health,
    eligibility,
    external_input,
    worker_image,
    queueing,
    cache_miss,
];

/// Evaluates every rule in precedence order.
pub fn explain_with(kpis: &Kpis, ev: &Evidence, t: &Thresholds) -> Diagnosis {
    let inputs = Inputs { kpis, ev, t };
    let mut missing = Vec::new();
    let findings: Vec<Finding> = RULES
        .iter()
        .filter_map(|rule| rule(&inputs, &mut missing))
        .collect();
    if !kpis.exec_log {
        missing.push(
            "execution log: per-spawn start times, failures and CAS traffic are unknown"
                .to_string(),
        );
    }
    let (dominant_cause, summary, evidence) = match findings.first() {
        Some(f) => (f.cause, f.summary.clone(), f.evidence.clone()),
        None => (Cause::None, no_problem_summary(kpis, ev), Vec::new()),
    };
    Diagnosis {
        diagnosis_version: DIAGNOSIS_VERSION.to_string(),
        invocation_id: kpis.invocation_id.clone(),
        dominant_cause,
        summary,
        evidence,
        findings,
        missing,
        thresholds: t.clone(),
    }
}

/// The summary when no rule matched.
fn no_problem_summary(kpis: &Kpis, ev: &Evidence) -> String {
    match (&ev.exit_code, kpis.process_mix.as_ref()) {
        (Some(c), _) if c.code != 0 => format!(
            "no remote-execution problem found; the build failed with {} ({}){}",
            c.name,
            c.code,
            kpis.signals
                .failed_spawns
                .filter(|n| *n > 0)
                .map(|n| format!(" and {n} spawn(s) failed in their own commands"))
                .unwrap_or_default()
        ),
        (_, Some(m)) => format!(
            "no problem found: {} remote executions, {} remote cache hits, {} local",
            m.remote_execution,
            m.remote_cache_hit + m.disk_cache_hit,
            m.local + m.worker
        ),
        _ => "no problem found in what the stream shows".to_string(),
    }
}

/// quota: the remote service answered RESOURCE_EXHAUSTED.
fn quota(i: &Inputs, _: &mut Vec<String>) -> Option<Finding> {
    let s = &i.kpis.signals;
    if s.resource_exhausted.is_empty() {
        return None;
    }
    Some(Finding {
        cause: Cause::Quota,
        summary: format!(
            "the remote service refused work with RESOURCE_EXHAUSTED ({} occurrence(s)): a quota or capacity limit was hit",
            s.resource_exhausted.len()
        ),
        evidence: vec![fact(
            "signals.resource_exhausted",
            json!(s.resource_exhausted),
            "BEP progress/aborted/finished text and exec-log spawn status",
        )],
    })
}

/// backend_health: remote failures reported by Bazel.
fn backend_health(i: &Inputs, _: &mut Vec<String>) -> Option<Finding> {
    let s = &i.kpis.signals;
    if s.remote_failures.is_empty() {
        return None;
    }
    let mut evidence = vec![fact(
        "signals.remote_failures",
        json!(s.remote_failures),
        "BEP Aborted REMOTE_ENVIRONMENT_FAILURE, TestResult REMOTE_FAILURE, exit code 34 REMOTE_ERROR, gRPC error lines, exec-log remote spawn status",
    )];
    if let Some(n) = s.failed_remote_spawns {
        evidence.push(fact(
            "signals.failed_remote_spawns",
            json!(n),
            "execution log",
        ));
    }
    Some(Finding {
        cause: Cause::BackendHealth,
        summary: format!(
            "the remote backend failed: {}",
            s.remote_failures.first().map(String::as_str).unwrap_or("")
        ),
        evidence,
    })
}

/// eligibility: spawns were not forced onto the executor, or ran locally.
fn eligibility(i: &Inputs, _: &mut Vec<String>) -> Option<Finding> {
    let mix = i.kpis.process_mix.as_ref();
    let local = mix.map_or(0, |m| m.local + m.worker);
    let ex = &i.ev.executor;
    if ex.forced || (ex.remote_executor.is_some() && local == 0) {
        return None;
    }
    let mut evidence = vec![
        fact(
            "evidence.executor.not_forced_reasons",
            json!(ex.not_forced_reasons),
            "effective command options",
        ),
        fact(
            "evidence.executor.remote_executor",
            json!(ex.remote_executor),
            "effective command options",
        ),
    ];
    if let Some(m) = mix {
        evidence.push(fact(
            "process_mix.local+worker",
            json!(local),
            count_source(m.source),
        ));
    }
    Some(Finding {
        cause: Cause::Eligibility,
        summary: format!(
            "spawns were not forced onto the remote executor{}: {}",
            if local > 0 {
                format!(" and {local} ran on the Bazel host")
            } else {
                String::new()
            },
            ex.not_forced_reasons.join("; ")
        ),
        evidence,
    })
}

/// external_input: external fetches failed.
fn external_input(i: &Inputs, _: &mut Vec<String>) -> Option<Finding> {
    let s = &i.kpis.signals;
    let first = s.failed_fetches.first()?;
    Some(Finding {
        cause: Cause::ExternalInput,
        summary: format!(
            "{} external fetch(es) failed, e.g. {first}",
            s.failed_fetches.len(),
        ),
        evidence: vec![fact(
            "signals.failed_fetches",
            json!(s.failed_fetches),
            "BEP Fetch events with success = false",
        )],
    })
}

/// worker_image: an image not pinned by digest, or several images in one
/// build.
fn worker_image(i: &Inputs, _: &mut Vec<String>) -> Option<Finding> {
    let used: Vec<&proof_evidence::WorkerImage> =
        i.ev.worker_images
            .iter()
            .filter(|w| w.remote_spawns != Some(0))
            .collect();
    let unpinned: Vec<&str> = used
        .iter()
        .filter(|w| !w.pinned)
        .map(|w| w.image.as_str())
        .collect();
    if unpinned.is_empty() && used.len() <= 1 {
        return None;
    }
    let summary = if unpinned.is_empty() {
        format!(
            "{} different worker images ran remote spawns in one build: {}",
            used.len(),
            used.iter()
                .map(|w| w.image.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "worker image(s) not pinned by @sha256 digest: {}; the executor may run a different image than intended and results do not share a cache key across image updates",
            unpinned.join(", ")
        )
    };
    Some(Finding {
        cause: Cause::WorkerImage,
        summary,
        evidence: vec![fact(
            "evidence.worker_images",
            serde_json::to_value(&used).unwrap_or(Value::Null),
            "exec-log platform container-image or --remote_default_exec_properties",
        )],
    })
}

/// queueing: remote actions waited for workers (from the execution log's
/// SpawnMetrics, else from the remote critical path).
fn queueing(i: &Inputs, missing: &mut Vec<String>) -> Option<Finding> {
    let kpis = i.kpis;
    let (share, f, of_what) = if let Some(share) =
        kpis.remote_time.as_ref().and_then(|r| r.queue_share)
    {
        let r = kpis.remote_time.as_ref().map_or(Value::Null, |r| json!(r));
        (
            share,
            fact(
                "remote_time",
                r,
                "execution log SpawnMetrics of remote spawns",
            ),
            "of remote spawn time",
        )
    } else {
        missing.push("remote spawn time split: the execution log is absent or has no SpawnMetrics (Bazel 4.x); the critical-path log is used instead".to_string());
        let c = kpis
            .critical_path
            .as_ref()
            .filter(|c| c.remote_pct.unwrap_or(0.0) >= 50.0)?;
        let q = c.breakdown_pct.get("queue")?;
        (
            q / 100.0,
            fact(
                "critical_path.breakdown_pct.queue",
                json!(c.breakdown_pct.get("queue")),
                "\"critical path\" BuildToolLogs entry",
            ),
            "of the (remote) critical path",
        )
    };
    if share < i.t.queue_dominant_share {
        return None;
    }
    Some(Finding {
        cause: Cause::Queueing,
        summary: format!(
            "remote actions spent {} {of_what} waiting in the executor's queue: the executor lacked free workers",
            pct(share)
        ),
        evidence: vec![f],
    })
}

/// cache_miss: enough remote executions and a low combined hit rate.
fn cache_miss(i: &Inputs, missing: &mut Vec<String>) -> Option<Finding> {
    let kpis = i.kpis;
    let Some(m) = kpis.process_mix.as_ref() else {
        missing.push(
            "process counts: the stream has no runner_count, process stats or execution log"
                .to_string(),
        );
        return None;
    };
    let lookups = m.lookups();
    let hits = m.remote_cache_hit + m.disk_cache_hit;
    if lookups == 0 || m.remote_execution < i.t.cache_miss_min_remote_executions {
        return None;
    }
    let rate = hits as f64 / lookups as f64;
    if rate >= i.t.cache_miss_max_hit_rate {
        return None;
    }
    let src = count_source(m.source);
    Some(Finding {
        cause: Cause::CacheMiss,
        summary: format!(
            "only {hits} of {lookups} spawns were cache hits ({}); {} had to execute remotely",
            pct(rate),
            m.remote_execution
        ),
        evidence: vec![
            fact(
                "cache.remote_hit_rate",
                json!(kpis.cache.remote_hit_rate),
                src,
            ),
            fact("cache.disk_hit_rate", json!(kpis.cache.disk_hit_rate), src),
            fact(
                "process_mix.remote_execution",
                json!(m.remote_execution),
                src,
            ),
        ],
    })
}
