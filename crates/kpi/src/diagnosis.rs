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

/// Evaluates every rule in precedence order.
pub fn explain_with(kpis: &Kpis, ev: &Evidence, t: &Thresholds) -> Diagnosis {
    let mut findings = Vec::new();
    let mut missing = Vec::new();
    let s = &kpis.signals;

    // quota
    if !s.resource_exhausted.is_empty() {
        findings.push(Finding {
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
        });
    }

    // backend_health
    if !s.remote_failures.is_empty() {
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
        findings.push(Finding {
            cause: Cause::BackendHealth,
            summary: format!(
                "the remote backend failed: {}",
                s.remote_failures.first().map(String::as_str).unwrap_or("")
            ),
            evidence,
        });
    }

    // eligibility
    let mix = kpis.process_mix.as_ref();
    let local = mix.map_or(0, |m| m.local + m.worker);
    let ex = &ev.executor;
    if !ex.forced && (ex.remote_executor.is_none() || local > 0) {
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
        findings.push(Finding {
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
        });
    }

    // external_input
    if !s.failed_fetches.is_empty() {
        findings.push(Finding {
            cause: Cause::ExternalInput,
            summary: format!(
                "{} external fetch(es) failed, e.g. {}",
                s.failed_fetches.len(),
                s.failed_fetches[0]
            ),
            evidence: vec![fact(
                "signals.failed_fetches",
                json!(s.failed_fetches),
                "BEP Fetch events with success = false",
            )],
        });
    }

    // worker_image
    let used: Vec<&proof_evidence::WorkerImage> = ev
        .worker_images
        .iter()
        .filter(|w| w.remote_spawns != Some(0))
        .collect();
    let unpinned: Vec<&str> = used
        .iter()
        .filter(|w| !w.pinned)
        .map(|w| w.image.as_str())
        .collect();
    if !unpinned.is_empty() || used.len() > 1 {
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
        findings.push(Finding {
            cause: Cause::WorkerImage,
            summary,
            evidence: vec![fact(
                "evidence.worker_images",
                serde_json::to_value(&used).unwrap_or(Value::Null),
                "exec-log platform container-image or --remote_default_exec_properties",
            )],
        });
    }

    // queueing
    let queue = if let Some(share) = kpis.remote_time.as_ref().and_then(|r| r.queue_share) {
        let r = kpis.remote_time.as_ref().map_or(Value::Null, |r| json!(r));
        Some((
            share,
            fact(
                "remote_time",
                r,
                "execution log SpawnMetrics of remote spawns",
            ),
            "of remote spawn time",
        ))
    } else {
        missing.push("remote spawn time split: the execution log is absent or has no SpawnMetrics (Bazel 4.x); the critical-path log is used instead".to_string());
        kpis.critical_path
            .as_ref()
            .filter(|c| c.remote_pct.unwrap_or(0.0) >= 50.0)
            .and_then(|c| c.breakdown_pct.get("queue").map(|q| (q / 100.0, c)))
            .map(|(share, c)| {
                (
                    share,
                    fact(
                        "critical_path.breakdown_pct.queue",
                        json!(c.breakdown_pct.get("queue")),
                        "\"critical path\" BuildToolLogs entry",
                    ),
                    "of the (remote) critical path",
                )
            })
    };
    if let Some((share, f, of_what)) = queue {
        if share >= t.queue_dominant_share {
            findings.push(Finding {
                cause: Cause::Queueing,
                summary: format!(
                    "remote actions spent {} {of_what} waiting in the executor's queue: the executor lacked free workers",
                    pct(share)
                ),
                evidence: vec![f],
            });
        }
    }

    // cache_miss
    if let Some(m) = mix {
        let lookups = m.lookups();
        let hits = m.remote_cache_hit + m.disk_cache_hit;
        if lookups > 0 && m.remote_execution >= t.cache_miss_min_remote_executions {
            let rate = hits as f64 / lookups as f64;
            if rate < t.cache_miss_max_hit_rate {
                findings.push(Finding {
                    cause: Cause::CacheMiss,
                    summary: format!(
                        "only {hits} of {lookups} spawns were cache hits ({}); {} had to execute remotely",
                        pct(rate),
                        m.remote_execution
                    ),
                    evidence: vec![
                        fact("cache.remote_hit_rate", json!(kpis.cache.remote_hit_rate), count_source(m.source)),
                        fact("cache.disk_hit_rate", json!(kpis.cache.disk_hit_rate), count_source(m.source)),
                        fact("process_mix.remote_execution", json!(m.remote_execution), count_source(m.source)),
                    ],
                });
            }
        }
    } else {
        missing.push(
            "process counts: the stream has no runner_count, process stats or execution log"
                .to_string(),
        );
    }
    if !kpis.exec_log {
        missing.push(
            "execution log: per-spawn start times, failures and CAS traffic are unknown"
                .to_string(),
        );
    }

    let (dominant_cause, summary, evidence) = match findings.first() {
        Some(f) => (f.cause, f.summary.clone(), f.evidence.clone()),
        None => {
            let summary = match (&ev.exit_code, kpis.process_mix.as_ref()) {
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
            };
            (Cause::None, summary, Vec::new())
        }
    };
    Diagnosis {
        diagnosis_version: super::diagnosis::DIAGNOSIS_VERSION.to_string(),
        invocation_id: kpis.invocation_id.clone(),
        dominant_cause,
        summary,
        evidence,
        findings,
        missing,
        thresholds: t.clone(),
    }
}
