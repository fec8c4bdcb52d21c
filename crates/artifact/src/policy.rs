//! Policy: what the evidence must show for a build to count as proven
//! remote. A [`Policy`] is an ordered list of [`PolicyCheck`]s; add a variant
//! (and its `name`/`evaluate` arms) to introduce a new requirement.

use proof_evidence::{is_pinned_image, Evidence};

use crate::verify::Check;

/// One requirement on the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyCheck {
    /// `--remote_executor` is set and nothing lets spawns run elsewhere.
    ExecutorForced,
    /// At least one spawn was executed by the remote executor.
    RemoteExecutions,
    /// At least one worker image is known and every image used by remote
    /// spawns is pinned by `@sha256:` digest.
    ImagePinned,
    /// BuildFinished with exit code 0.
    BuildSucceeded,
}

impl PolicyCheck {
    /// The check's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyCheck::ExecutorForced => "executor_forced",
            PolicyCheck::RemoteExecutions => "remote_executions",
            PolicyCheck::ImagePinned => "image_pinned",
            PolicyCheck::BuildSucceeded => "build_succeeded",
        }
    }

    /// Whether `evidence` satisfies this check, and why (not).
    pub fn evaluate(&self, ev: &Evidence) -> (bool, String) {
        match self {
            PolicyCheck::ExecutorForced => {
                let exec = &ev.executor;
                match (&exec.remote_executor, exec.forced) {
                    (None, _) => (false, "no --remote_executor was set: the build could not have run remotely".into()),
                    (Some(url), true) => (true, format!("every spawn was forced onto the remote executor {url}")),
                    (Some(url), false) => {
                        let reasons = if exec.not_forced_reasons.is_empty() {
                            "no reason recorded".to_string()
                        } else {
                            exec.not_forced_reasons.join("; ")
                        };
                        (false, format!("remote executor {url} is set but spawns could run elsewhere: {reasons}"))
                    }
                }
            }
            PolicyCheck::RemoteExecutions => match ev.processes.remote_executions {
                Some(n) if n > 0 => (true, format!("{n} spawns executed remotely{}", source(ev))),
                Some(_) => (
                    false,
                    format!(
                        "0 spawns executed remotely{} ({} remote cache hits): nothing was proven to run on the executor",
                        source(ev),
                        ev.processes.remote_cache_hits.unwrap_or(0)
                    ),
                ),
                None => (false, "the stream has no process counts, so remote execution cannot be shown".into()),
            },
            PolicyCheck::ImagePinned => {
                let used: Vec<&str> = ev
                    .worker_images
                    .iter()
                    .filter(|w| w.remote_spawns != Some(0))
                    .map(|w| w.image.as_str())
                    .collect();
                if used.is_empty() {
                    return (
                        false,
                        "no worker image is known for remote spawns; set container-image in --remote_default_exec_properties or the platform".into(),
                    );
                }
                let unpinned: Vec<&str> = used.iter().copied().filter(|i| !is_pinned_image(i)).collect();
                if unpinned.is_empty() {
                    (true, format!("all {} worker image(s) pinned by digest: {}", used.len(), used.join(", ")))
                } else {
                    (
                        false,
                        format!("worker image(s) not pinned by @sha256: digest: {}", unpinned.join(", ")),
                    )
                }
            }
            PolicyCheck::BuildSucceeded => match &ev.exit_code {
                Some(c) if c.code == 0 => (true, format!("exit code {} ({})", c.code, c.name)),
                Some(c) => (false, format!("the build failed: exit code {} ({})", c.code, c.name)),
                None => (false, "no BuildFinished event: the stream ended before the build finished".into()),
            },
        }
    }
}

fn source(ev: &Evidence) -> String {
    match &ev.processes.source {
        Some(s) => format!(
            " (per {})",
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        None => String::new(),
    }
}

/// An ordered set of [`PolicyCheck`]s. `Policy::default()` is the full
/// rbe-proof policy; `Policy::none().check(..)` builds a custom one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    checks: Vec<PolicyCheck>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::none()
            .check(PolicyCheck::ExecutorForced)
            .check(PolicyCheck::RemoteExecutions)
            .check(PolicyCheck::ImagePinned)
            .check(PolicyCheck::BuildSucceeded)
    }
}

impl Policy {
    /// A policy with no checks.
    pub fn none() -> Self {
        Policy { checks: Vec::new() }
    }

    /// Adds `check` at the end (a check already present is not added twice).
    pub fn check(mut self, check: PolicyCheck) -> Self {
        if !self.checks.contains(&check) {
            self.checks.push(check);
        }
        self
    }

    pub fn checks(&self) -> &[PolicyCheck] {
        &self.checks
    }

    /// Evaluates every check, in order.
    pub fn evaluate(&self, ev: &Evidence) -> Vec<Check> {
        self.checks
            .iter()
            .map(|c| {
                let (ok, detail) = c.evaluate(ev);
                Check::new(c.name(), ok, detail)
            })
            .collect()
    }
}
