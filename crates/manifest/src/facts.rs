//! What a verified proof artifact says: its verification outcome, the
//! record the manifest keeps about it, the repo it names, and whether it
//! covers a target class.

use proof_artifact::{Check, Report, VerifyingKey};
use proof_evidence::{BindingStatus, Evidence, TargetBinding};

/// The check judged per class when it fails only for some targets.
const OUTPUTS_BOUND: &str = "outputs_bound";

use crate::model::{Class, ProofRecord, WorkKind};
use crate::pattern::Pattern;

/// Build metadata key naming the spoke repo (`--build_metadata=REPO=owner/name`).
pub const REPO_METADATA_KEY: &str = "REPO";
/// Workspace status key naming the spoke repo (a `--workspace_status_command`
/// printing `STABLE_REPO owner/name`), used when the metadata key is absent.
pub const REPO_WORKSPACE_STATUS_KEY: &str = "STABLE_REPO";

/// The outcome of `proof verify` for one artifact, reduced to what the
/// manifest needs.
#[derive(Debug, Clone)]
pub struct ArtifactFacts {
    /// The artifact's path or name, for messages.
    pub name: String,
    /// Lowercase hex SHA-256 of the file.
    pub artifact_sha256: String,
    /// Every check of `proof verify`.
    pub checks: Vec<Check>,
    /// The re-derived evidence (when the integrity checks passed).
    pub evidence: Option<Evidence>,
    /// keyid of the trusted key that verified the signature.
    pub signer_keyid: Option<String>,
}

impl ArtifactFacts {
    /// From the report of [`proof_artifact::verify_path`] with `trusted`.
    pub fn from_report(name: impl Into<String>, report: &Report, trusted: &[VerifyingKey]) -> Self {
        let signer_keyid = report.check("signature").filter(|c| c.ok).and_then(|c| {
            trusted
                .iter()
                .map(proof_artifact::keyid)
                .find(|id| c.detail.contains(id.as_str()))
        });
        ArtifactFacts {
            name: name.into(),
            artifact_sha256: report.artifact_sha256.clone(),
            checks: report.checks.clone(),
            evidence: report.evidence.clone(),
            signer_keyid,
        }
    }

    /// Every check passed (as `proof verify` exit code 0).
    pub fn verified(&self) -> bool {
        self.checks.iter().all(|c| c.ok) && self.evidence.is_some() && self.signer_keyid.is_some()
    }

    /// Every check passed, except perhaps `outputs_bound` failing only
    /// because some targets are unbound: such a build is judged per class
    /// ([`Self::binding_problems`]). An `outputs_bound` that fails for the
    /// whole build (no ledger, an unreachable executor, file sets not read)
    /// does not qualify.
    pub fn verified_per_class(&self) -> bool {
        if self.verified() {
            return true;
        }
        let Some(ev) = &self.evidence else {
            return false;
        };
        let others_ok = self.checks.iter().all(|c| c.ok || c.name == OUTPUTS_BOUND);
        let per_target = ev.output_binding.as_ref().is_some_and(|b| {
            b.incomplete.is_none()
                && b.targets_unbound > 0
                && ev.attestation.as_ref().is_some_and(|a| a.reachable)
        });
        others_ok && per_target && self.signer_keyid.is_some()
    }

    /// Why the build's outputs do not prove `class` (empty when they do):
    /// when `outputs_bound` failed, every built target matching the class's
    /// patterns must be bound (executed or cached-attested), and at least
    /// one must be.
    pub fn binding_problems(&self, class: &Class) -> Vec<String> {
        if self.checks.iter().any(|c| c.name == OUTPUTS_BOUND && c.ok) {
            return Vec::new();
        }
        let Some(b) = self
            .evidence
            .as_ref()
            .and_then(|e| e.output_binding.as_ref())
        else {
            return vec![
                "the artifact holds no executor ledger, so no output is bound to an execution (outputs_bound)".into(),
            ];
        };
        let pats: Vec<Pattern> = class
            .patterns
            .iter()
            .filter_map(|p| Pattern::parse(p))
            .collect();
        let mine: Vec<(&String, &TargetBinding)> = b
            .targets
            .iter()
            .filter(|(l, _)| pats.iter().any(|p| p.matches_label(l)))
            .collect();
        let mut out = Vec::new();
        let unbound: Vec<String> = mine
            .iter()
            .filter(|(_, t)| t.status == BindingStatus::Unbound)
            .map(|(l, t)| match t.unbound.first() {
                Some(f) => format!(
                    "{l} ({}: {})",
                    if f.file.is_empty() { "-" } else { &f.file },
                    f.why
                ),
                None => l.to_string(),
            })
            .collect();
        if !unbound.is_empty() {
            out.push(format!(
                "outputs_bound: {} target(s) of the class are unbound, their outputs were not produced by an execution the executor ran for this build: {}",
                unbound.len(),
                unbound.join("; ")
            ));
        } else if !mine.iter().any(|(_, t)| {
            matches!(
                t.status,
                BindingStatus::Bound | BindingStatus::CachedAttested
            )
        }) {
            out.push(
                "outputs_bound: no target of the class has an output produced by an execution the executor ran".into(),
            );
        }
        out
    }

    /// The failed checks as `name: detail`.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }

    /// The record the manifest keeps for this artifact, when it verified.
    pub fn record(&self, location: &str) -> Option<ProofRecord> {
        let ev = self.evidence.as_ref()?;
        if !self.verified_per_class() {
            return None;
        }
        let mut worker_images: Vec<String> = ev
            .worker_images
            .iter()
            .filter(|w| w.remote_spawns != Some(0))
            .map(|w| w.image.clone())
            .collect();
        worker_images.sort();
        Some(ProofRecord {
            artifact_sha256: self.artifact_sha256.clone(),
            location: location.to_string(),
            invocation_id: ev.invocation_id.clone(),
            date: ev
                .finished_at
                .clone()
                .or_else(|| ev.started_at.clone())
                .unwrap_or_default(),
            command: ev.command.clone(),
            bazel_version: ev.bazel_version.clone(),
            executor: ev.executor.remote_executor.clone().unwrap_or_default(),
            instance_name: ev.executor.remote_instance_name.clone(),
            remote_executions: ev.processes.remote_executions.unwrap_or(0),
            worker_images,
            signer_keyid: self.signer_keyid.clone().unwrap_or_default(),
        })
    }

    /// Why this artifact may not back `class` at `mode` (empty when it
    /// may): executor-backed and default need the executor's attestation
    /// (the artifact carries an executor ledger, so `executor_attested` was
    /// part of its verification); the tenant that submitted the build must
    /// own the class's repo in `owners` (the tenants file), and a proof with
    /// no authenticated tenant counts only when the manifest says
    /// `allow_unauthenticated_proofs`.
    pub fn trust_problems(
        &self,
        class: &Class,
        mode: crate::model::Mode,
        allow_unauthenticated: bool,
        owners: Option<&proof_tenancy::Tenants>,
    ) -> Vec<String> {
        let Some(ev) = &self.evidence else {
            return vec!["the artifact has no verified evidence".into()];
        };
        let mut out = Vec::new();
        if mode >= crate::model::Mode::ExecutorBacked {
            let attested = self
                .checks
                .iter()
                .any(|c| c.name == "executor_attested" && c.ok);
            if ev.attestation.is_none() || !attested {
                out.push(format!(
                    "a {} promotion needs the executor's attestation (executor_attested): this proof carries no executor ledger; record it with `proof serve --executor grpc://HOST:PORT`",
                    mode.as_str()
                ));
            }
        }
        match ev.origin.as_ref().and_then(|o| o.tenant.as_deref()) {
            Some(tenant) => match owners {
                Some(t) => {
                    if let Err(e) = t.check_owner(tenant, &class.repo) {
                        out.push(e);
                    }
                }
                None => out.push(format!(
                    "the proof was submitted by tenant {tenant:?}; pass --tenants FILE (the server's tenants file) to check that it owns repo {}",
                    class.repo
                )),
            },
            None if allow_unauthenticated => {}
            None => out.push(format!(
                "the proof records no authenticated tenant ({}): anyone could have sent this build; record it with `proof serve --tenants`, or set \"allow_unauthenticated_proofs\": true in the manifest",
                ev.origin
                    .as_ref()
                    .map_or("no origin".to_string(), |o| format!("signed by {}", o.recorded_by))
            )),
        }
        out
    }

    /// Why this artifact does not cover `class` (empty when it does):
    /// same repo ([`repo_problem`]), the right command for the work kind
    /// ([`command_problem`]), and every class pattern requested by the build
    /// and matched by successful targets, and passed tests for test/smoke
    /// classes ([`class_pattern_problems`]).
    pub fn coverage_problems(&self, class: &Class) -> Vec<String> {
        let Some(ev) = &self.evidence else {
            return vec!["the artifact has no verified evidence".into()];
        };
        let mut out = Vec::new();
        out.extend(repo_problem(ev, class));
        out.extend(command_problem(ev, class.work_kind));
        let requested: Vec<Pattern> = ev
            .patterns
            .iter()
            .filter_map(|p| Pattern::parse(p))
            .collect();
        let excluded: Vec<Pattern> = ev
            .patterns
            .iter()
            .filter_map(|p| p.strip_prefix('-').and_then(Pattern::parse))
            .collect();
        for text in &class.patterns {
            out.extend(class_pattern_problems(
                ev,
                class.work_kind,
                text,
                &requested,
                &excluded,
            ));
        }
        out
    }
}

/// The artifact's repo is the class's.
fn repo_problem(ev: &Evidence, class: &Class) -> Option<String> {
    match repo_of(ev) {
        Ok(r) if r == class.repo => None,
        Ok(r) => Some(format!(
            "the artifact is from repo {r}, the class belongs to {}",
            class.repo
        )),
        Err(e) => Some(e),
    }
}

/// `bazel test` for test/smoke classes; build or test for the others.
fn command_problem(ev: &Evidence, kind: WorkKind) -> Option<String> {
    if kind.needs_test_command() && ev.command != "test" {
        Some(format!(
            "a {} class needs a `bazel test` proof, the artifact is `bazel {}`",
            kind.as_str(),
            ev.command
        ))
    } else if !matches!(ev.command.as_str(), "build" | "test") {
        Some(format!(
            "the artifact is `bazel {}`; only build and test prove a class",
            ev.command
        ))
    } else {
        None
    }
}

/// One class pattern: a //package pattern, requested by the build and not
/// partly excluded, matched by targets that all built
/// ([`failed_targets_problem`]) and, for test/smoke classes, by tests that
/// all passed ([`test_problems`]).
fn class_pattern_problems(
    ev: &Evidence,
    kind: WorkKind,
    text: &str,
    requested: &[Pattern],
    excluded: &[Pattern],
) -> Vec<String> {
    let Some(pat) = Pattern::parse(text) else {
        return vec![format!("class pattern {text} is not a //package pattern")];
    };
    if !requested.iter().any(|q| q.contains(&pat)) {
        return vec![format!(
            "class pattern {text} is not covered by the build's patterns [{}]",
            ev.patterns.join(", ")
        )];
    }
    if let Some(x) = excluded.iter().find(|x| x.overlaps(&pat)) {
        return vec![format!(
            "class pattern {text} is partly excluded by -//{}",
            x.package
        )];
    }
    let targets: Vec<(&String, Option<bool>)> = ev
        .targets
        .iter()
        .filter(|(l, _)| pat.matches_label(l))
        .map(|(l, t)| (l, t.success))
        .collect();
    if targets.is_empty() {
        return vec![format!(
            "no target of the build matches class pattern {text}"
        )];
    }
    let mut out = Vec::new();
    out.extend(failed_targets_problem(&targets, text));
    if kind.needs_test_command() && ev.command == "test" {
        out.extend(test_problems(ev, &pat, text));
    }
    out
}

/// The targets matching a class pattern that did not build.
fn failed_targets_problem(targets: &[(&String, Option<bool>)], text: &str) -> Option<String> {
    let failed: Vec<&str> = targets
        .iter()
        .filter(|(_, ok)| *ok != Some(true))
        .map(|(l, _)| l.as_str())
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "targets matching {text} did not build: {}",
            failed.join(", ")
        )
    })
}

/// No test matches a test/smoke class pattern, or one that does did not
/// pass.
fn test_problems(ev: &Evidence, pat: &Pattern, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let tests: Vec<(&String, &str)> = ev
        .tests
        .iter()
        .filter(|(l, _)| pat.matches_label(l))
        .map(|(l, t)| (l, t.status.as_str()))
        .collect();
    if tests.is_empty() {
        out.push(format!("no test of the build matches class pattern {text}"));
    }
    let not_passed: Vec<String> = tests
        .iter()
        .filter(|(_, s)| *s != "PASSED")
        .map(|(l, s)| format!("{l} ({s})"))
        .collect();
    if !not_passed.is_empty() {
        out.push(format!(
            "tests matching {text} did not pass: {}",
            not_passed.join(", ")
        ));
    }
    out
}

/// The spoke repo an artifact names: build metadata `REPO`, else workspace
/// status `STABLE_REPO`; both present must agree.
pub fn repo_of(ev: &Evidence) -> Result<String, String> {
    let meta = ev
        .build_metadata
        .get(REPO_METADATA_KEY)
        .filter(|s| !s.is_empty());
    let status = ev
        .workspace_status
        .get(REPO_WORKSPACE_STATUS_KEY)
        .filter(|s| !s.is_empty());
    match (meta, status) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "the artifact names two repos: build metadata {REPO_METADATA_KEY}={a} and workspace status {REPO_WORKSPACE_STATUS_KEY}={b}; make them agree"
        )),
        (Some(a), _) => Ok(a.clone()),
        (None, Some(b)) => Ok(b.clone()),
        (None, None) => Err(format!(
            "the artifact names no repo: build with --build_metadata={REPO_METADATA_KEY}=owner/name (or print {REPO_WORKSPACE_STATUS_KEY} from the workspace status command)"
        )),
    }
}
