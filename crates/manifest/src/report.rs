//! `proof report`: the six platform questions, answered from the manifest
//! (and, with a proofs directory, from the verified artifacts).

use serde::Serialize;

use crate::check::{check_class, CheckOptions};
use crate::io::ProofDir;
use crate::model::{Gate, GateStatus, Manifest, Mode, PilotStatus, PLATFORM_GATES};

/// The six questions, in order.
pub const QUESTIONS: [&str; 6] = [
    "What is proved today, and which proof artifacts show remote execution?",
    "Why is broad/default RBE still blocked?",
    "Which gate owns the next blocker?",
    "Which repos can pilot cache-first mode now?",
    "Which target classes may use executor-backed mode explicitly?",
    "What evidence would make a target or spoke eligible for default use?",
];

/// What an artifact must show for its class to count as proven (the
/// verify policy plus the manifest's coverage rules).
pub const ARTIFACT_REQUIREMENTS: [&str; 6] = [
    "a signature by a trusted key, over digests that match every member, and evidence that re-derives from the included BEP stream",
    "forced executor: --remote_executor set, --spawn_strategy=remote, no local fallback (class gate forced-executor)",
    "at least one spawn executed by the remote executor, not only cache hits (class gate remote-processes)",
    "every worker image used by remote spawns pinned by @sha256: digest (class gate worker-image-digest)",
    "a successful build (and passed tests for test/smoke classes) whose patterns cover the class's patterns, from the class's repo (--build_metadata=REPO=owner/name)",
    "the artifact recorded in the manifest with `proof promote` and kept where `proof verify --manifest --proofs` finds it (class gate proof-artifacts)",
];

#[derive(Debug, Clone, Serialize)]
pub struct PlatformReport {
    pub counts: Counts,
    /// Whether the artifacts were verified (`--proofs` given).
    pub proofs_checked: bool,
    pub q1_proved: Proved,
    pub q2_default_blocked: Blocked,
    pub q3_next_blocker: Option<NextBlocker>,
    pub q4_cache_first_pilots: Vec<RepoPilot>,
    pub q5_executor_backed: Vec<ClassLine>,
    pub q6_default_evidence: DefaultEvidence,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub repos: usize,
    pub classes: usize,
    pub cache_first: usize,
    pub executor_backed: usize,
    pub default: usize,
    pub gates_open: usize,
    pub gates_total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Proved {
    /// Classes at executor-backed or default.
    pub classes: Vec<ClassLine>,
    /// Distinct artifacts with remote executions > 0.
    pub remote_artifacts: Vec<ArtifactLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassLine {
    pub class: String,
    pub repo: String,
    pub owner: String,
    pub work_kind: String,
    pub mode: Mode,
    pub patterns: Vec<String>,
    pub proofs: usize,
    pub latest_proof: Option<String>,
    pub latest_date: Option<String>,
    /// `None` without `--proofs`.
    pub verified: Option<bool>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactLine {
    pub location: String,
    pub artifact_sha256: String,
    pub invocation_id: String,
    pub command: String,
    pub date: String,
    pub executor: String,
    pub instance_name: Option<String>,
    pub remote_executions: u64,
    pub worker_images: Vec<String>,
    pub classes: Vec<String>,
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateLine {
    pub gate: String,
    pub title: String,
    pub status: GateStatus,
    pub owner: String,
    pub blocker: Option<String>,
    pub due: Option<String>,
    pub evidence: Vec<String>,
    /// Items not closed, as `name: blocker`.
    pub open_items: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Blocked {
    pub blocked: bool,
    pub open_gates: Vec<GateLine>,
    pub closed_gates: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NextBlocker {
    pub gate: GateLine,
    /// Why this gate is next.
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepoPilot {
    pub repo: String,
    pub owner: String,
    pub status: String,
    pub can_pilot_now: bool,
    /// `gate (owner): blocker` lines, and the repo's own blocker.
    pub blockers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefaultEvidence {
    pub artifact_requirements: Vec<String>,
    /// Platform gates to close (ids; details in q2).
    pub platform_gates: Vec<String>,
    pub classes: Vec<ClassNeeds>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassNeeds {
    pub class: String,
    pub repo: String,
    pub mode: Mode,
    /// Missing class-level evidence, `gate[, gate...] (owner): blocker`.
    pub missing: Vec<String>,
}

/// Open gates as `id[, id...] (owner O): blocker`, gates with the same owner
/// and blocker in one line, in gate order.
fn group_gates(gates: Vec<(&str, &Gate)>) -> Vec<String> {
    let mut groups: Vec<(Vec<&str>, &str, &str)> = Vec::new();
    for (id, g) in gates {
        let blocker = g.blocker.as_deref().unwrap_or("open");
        match groups
            .iter_mut()
            .find(|(_, o, b)| *o == g.owner && *b == blocker)
        {
            Some(group) => group.0.push(id),
            None => groups.push((vec![id], &g.owner, blocker)),
        }
    }
    groups
        .into_iter()
        .map(|(ids, owner, blocker)| format!("{} (owner {owner}): {blocker}", ids.join(", ")))
        .collect()
}

fn gate_line(id: &str, g: &Gate) -> GateLine {
    GateLine {
        gate: id.to_string(),
        title: g.title.clone().unwrap_or_else(|| id.to_string()),
        status: g.status,
        owner: g.owner.clone(),
        blocker: g.blocker.clone(),
        due: g.due.clone(),
        evidence: g.evidence.clone(),
        open_items: g
            .items
            .iter()
            .filter(|(_, i)| i.status != GateStatus::Closed)
            .map(|(n, i)| format!("{n}: {}", i.blocker.as_deref().unwrap_or("open")))
            .collect(),
    }
}

/// Builds the report. With `proofs`, every recorded proof is verified
/// against the directory (as the PR check does, without an age limit).
pub fn build_report(m: &Manifest, proofs: Option<&ProofDir>) -> PlatformReport {
    let class_lines = class_lines(m, proofs);
    let promoted: Vec<ClassLine> = class_lines
        .iter()
        .filter(|c| c.mode >= Mode::ExecutorBacked)
        .cloned()
        .collect();
    let open: Vec<GateLine> = m
        .open_platform_gates()
        .into_iter()
        .map(|(id, g)| gate_line(id, g))
        .collect();
    let closed_gates: Vec<String> = PLATFORM_GATES
        .iter()
        .filter(|id| m.gates.get(**id).is_some_and(Gate::is_closed))
        .map(|s| s.to_string())
        .collect();
    let executor_backed: Vec<ClassLine> = promoted
        .iter()
        .filter(|c| c.verified != Some(false))
        .cloned()
        .collect();
    let class_needs: Vec<ClassNeeds> = m
        .classes
        .iter()
        .filter(|(_, c)| c.mode != Mode::Default)
        .map(|(id, c)| ClassNeeds {
            class: id.clone(),
            repo: c.repo.clone(),
            mode: c.mode,
            missing: group_gates(c.open_gates()),
        })
        .collect();
    let modes = |mode: Mode| m.classes.values().filter(|c| c.mode == mode).count();
    PlatformReport {
        counts: Counts {
            repos: m.repos.len(),
            classes: m.classes.len(),
            cache_first: modes(Mode::CacheFirst),
            executor_backed: modes(Mode::ExecutorBacked),
            default: modes(Mode::Default),
            gates_open: open.len(),
            gates_total: m.gates.len(),
        },
        proofs_checked: proofs.is_some(),
        q1_proved: Proved {
            classes: promoted,
            remote_artifacts: remote_artifacts(m, proofs),
        },
        q2_default_blocked: Blocked {
            blocked: !open.is_empty(),
            open_gates: open.clone(),
            closed_gates,
        },
        q3_next_blocker: next_blocker(&open),
        q4_cache_first_pilots: pilots(m),
        q5_executor_backed: executor_backed,
        q6_default_evidence: DefaultEvidence {
            artifact_requirements: ARTIFACT_REQUIREMENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            platform_gates: open.iter().map(|g| g.gate.clone()).collect(),
            classes: class_needs,
        },
    }
}

/// One line per class; with `proofs`, each class checked as the PR check
/// does (without an age limit).
fn class_lines(m: &Manifest, proofs: Option<&ProofDir>) -> Vec<ClassLine> {
    let opts = CheckOptions {
        max_age_days: None,
        now: time::OffsetDateTime::UNIX_EPOCH,
        owners: None,
        base_allow_unauthenticated: None,
    };
    m.classes
        .iter()
        .map(|(id, c)| {
            let (verified, problems) = match proofs {
                Some(dir) => {
                    let cc = check_class(m, id, c, dir, &opts);
                    (Some(cc.ok), cc.reasons)
                }
                None => (None, Vec::new()),
            };
            let latest = c.latest_proof();
            ClassLine {
                class: id.clone(),
                repo: c.repo.clone(),
                owner: c.owner.clone(),
                work_kind: c.work_kind.as_str().to_string(),
                mode: c.mode,
                patterns: c.patterns.clone(),
                proofs: c.proofs.len(),
                latest_proof: latest.map(|p| p.location.clone()),
                latest_date: latest.map(|p| p.date.clone()),
                verified,
                problems,
            }
        })
        .collect()
}

/// The recorded proofs that show remote executions, one line per artifact
/// (with every class that records it), by location.
fn remote_artifacts(m: &Manifest, proofs: Option<&ProofDir>) -> Vec<ArtifactLine> {
    let mut artifacts: Vec<ArtifactLine> = Vec::new();
    for (id, c) in &m.classes {
        for p in &c.proofs {
            if p.remote_executions == 0 {
                continue;
            }
            if let Some(a) = artifacts
                .iter_mut()
                .find(|a| a.artifact_sha256 == p.artifact_sha256)
            {
                a.classes.push(id.clone());
                continue;
            }
            let verified = proofs.map(|d| {
                d.by_sha256(&p.artifact_sha256)
                    .and_then(|a| a.facts.as_ref().ok())
                    .is_some_and(|f| {
                        f.verified()
                            && f.record(&p.location)
                                .is_some_and(|r| crate::check::record_differences(p, &r).is_empty())
                    })
            });
            artifacts.push(ArtifactLine {
                location: p.location.clone(),
                artifact_sha256: p.artifact_sha256.clone(),
                invocation_id: p.invocation_id.clone(),
                command: p.command.clone(),
                date: p.date.clone(),
                executor: p.executor.clone(),
                instance_name: p.instance_name.clone(),
                remote_executions: p.remote_executions,
                worker_images: p.worker_images.clone(),
                classes: vec![id.clone()],
                verified,
            });
        }
    }
    artifacts.sort_by(|a, b| a.location.cmp(&b.location));
    artifacts
}

/// The open gate with the earliest due date, else the first open gate.
fn next_blocker(open: &[GateLine]) -> Option<NextBlocker> {
    let with_due = open
        .iter()
        .filter(|g| g.due.is_some())
        .min_by(|a, b| a.due.cmp(&b.due));
    match with_due {
        Some(g) => Some(NextBlocker {
            gate: g.clone(),
            why: format!(
                "the open gate with the earliest due date ({})",
                g.due.as_deref().unwrap_or_default()
            ),
        }),
        None => open.first().map(|g| NextBlocker {
            gate: g.clone(),
            why: "the first open gate in the gate order (no gate has a due date)".into(),
        }),
    }
}

/// Per repo: whether it can pilot cache-first now, and what blocks it.
fn pilots(m: &Manifest) -> Vec<RepoPilot> {
    m.repos
        .iter()
        .map(|(rid, r)| {
            let mut blockers: Vec<String> = r
                .cache_first
                .requires
                .iter()
                .filter_map(|gid| {
                    let g = m.gates.get(gid)?;
                    (!g.is_closed()).then(|| {
                        format!(
                            "{gid} (owner {}): {}",
                            g.owner,
                            g.blocker.as_deref().unwrap_or("open")
                        )
                    })
                })
                .collect();
            let status_ok = matches!(
                r.cache_first.status,
                PilotStatus::Ready | PilotStatus::Piloting
            );
            if !status_ok {
                blockers.push(format!(
                    "repo status {} (owner {}): {}",
                    r.cache_first.status.as_str(),
                    r.owner,
                    r.cache_first
                        .blocker
                        .as_deref()
                        .unwrap_or("the repo has not asked to pilot")
                ));
            }
            RepoPilot {
                repo: rid.clone(),
                owner: r.owner.clone(),
                status: r.cache_first.status.as_str().to_string(),
                can_pilot_now: blockers.is_empty(),
                blockers,
            }
        })
        .collect()
}
