//! Policy: what the evidence must show for a build to count as proven
//! remote. A [`Policy`] is an ordered list of [`PolicyCheck`]s; add a variant
//! (and its `name`/`evaluate` arms) to introduce a new requirement.

use proof_evidence::{is_pinned_image, Evidence};
use serde::Serialize;

/// One named check of a verification report (`crate::verify::Report`): the
/// integrity checks and the policy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

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
    /// The lane could not write the remote action cache:
    /// `--remote_upload_local_results` explicitly false and no
    /// `UpdateActionResult` call in the remote gRPC log (when one is present).
    ReadOnly,
    /// The effective `--remote_instance_name` equals this name (`""`: the
    /// option unset or empty).
    Instance(String),
    /// No external input was fetched from the network: every BEP Fetch
    /// that succeeded is a registry file pinned by `--lockfile_mode=error`.
    PinnedInputs,
    /// The executor's ActionCache knows at least one sampled action digest
    /// of the stream, every found result's exit code agrees with the stream,
    /// the sample is the deterministic one, and the endpoint and instance
    /// asked are the build's own.
    Corroborated,
    /// The executor's own ledger (`proof serve --executor`) shows that it
    /// executed at least one action for this invocation, at least as many
    /// as the client claims, with digest-checked Actions. Added
    /// automatically for every artifact that carries a ledger.
    ExecutorAttested,
    /// No source of the evidence contradicts another (BEP process figures,
    /// the execution log, the executor's ledger, the worker image).
    SourcesAgree,
    /// Every target the stream reports as built has outputs the executor
    /// produced for this invocation (executed, successful ActionResults
    /// inside the stream's window); at least one target is bound. Added
    /// automatically for every artifact that carries a ledger.
    OutputsBound,
}

impl PolicyCheck {
    /// The check's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyCheck::ExecutorForced => "executor_forced",
            PolicyCheck::RemoteExecutions => "remote_executions",
            PolicyCheck::ImagePinned => "image_pinned",
            PolicyCheck::BuildSucceeded => "build_succeeded",
            PolicyCheck::ReadOnly => "read_only",
            PolicyCheck::Instance(_) => "instance",
            PolicyCheck::PinnedInputs => "pinned_inputs",
            PolicyCheck::Corroborated => "corroborated",
            PolicyCheck::ExecutorAttested => "executor_attested",
            PolicyCheck::SourcesAgree => "sources_agree",
            PolicyCheck::OutputsBound => "outputs_bound",
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
            PolicyCheck::ImagePinned if ev.attestation.is_some() => image_pinned_attested(ev),
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
            PolicyCheck::ReadOnly => read_only(ev),
            PolicyCheck::Instance(want) => {
                let got = ev.executor.remote_instance_name.as_deref().unwrap_or("");
                // The Execute requests Bazel really sent, when logged.
                let sent: Vec<&str> = ev
                    .remote_grpc_log
                    .iter()
                    .flat_map(|g| g.execute_instance_names.iter().map(String::as_str))
                    .collect();
                let other: Vec<&str> = sent.iter().copied().filter(|s| s != want).collect();
                if got == want && other.is_empty() {
                    let logged = if sent.is_empty() {
                        String::new()
                    } else {
                        "; every Execute call in the remote gRPC log used it".to_string()
                    };
                    (true, format!("--remote_instance_name is {got:?}{logged}"))
                } else if got == want {
                    (
                        false,
                        format!("--remote_instance_name is {got:?} but the remote gRPC log shows Execute calls under {other:?}"),
                    )
                } else {
                    (
                        false,
                        format!("--remote_instance_name is {got:?} but the policy requires {want:?}; build with --remote_instance_name={want}"),
                    )
                }
            }
            PolicyCheck::PinnedInputs => pinned_inputs(ev),
            PolicyCheck::Corroborated => corroborated(ev),
            PolicyCheck::ExecutorAttested => executor_attested(ev),
            PolicyCheck::SourcesAgree => sources_agree(ev),
            PolicyCheck::OutputsBound => crate::outputs_bound::outputs_bound(ev),
        }
    }
}

fn read_only(ev: &Evidence) -> (bool, String) {
    let mut problems = Vec::new();
    match ev.executor.remote_upload_local_results {
        Some(false) => {}
        Some(true) => problems.push(
            "--remote_upload_local_results is true: results of local spawns are written to the remote action cache; build with --noremote_upload_local_results".to_string(),
        ),
        None => problems.push(
            "--remote_upload_local_results is not set to false (Bazel's default is true, which uploads local results to the remote action cache); build with --noremote_upload_local_results".to_string(),
        ),
    }
    if let Some(n) = ev
        .cache_writes
        .update_action_result_calls
        .filter(|n| *n > 0)
    {
        problems.push(format!(
            "the remote gRPC log shows {n} ActionCache.UpdateActionResult call(s): this lane wrote to the action cache"
        ));
    }
    if !problems.is_empty() {
        return (false, problems.join("; "));
    }
    let calls = match ev.cache_writes.update_action_result_calls {
        Some(_) => "the remote gRPC log shows no UpdateActionResult call",
        None => {
            "no remote gRPC log was recorded to confirm the absence of UpdateActionResult calls"
        }
    };
    let disk = match &ev.cache_writes.disk_cache {
        Some(d) => format!("; --disk_cache={d} is local and not counted"),
        None => String::new(),
    };
    (
        true,
        format!("--noremote_upload_local_results: local results are never uploaded; {calls}{disk}"),
    )
}

fn pinned_inputs(ev: &Evidence) -> (bool, String) {
    let x = &ev.external_inputs;
    if !x.network_fetches.is_empty() {
        return (
            false,
            format!(
                "{} external input(s) were fetched from the network: {}; put them in a --distdir (with sha256 set) or the repository cache",
                x.network_fetches.len(),
                x.network_fetches.join(", ")
            ),
        );
    }
    let mut detail = format!(
        "no external input was fetched from the network ({} Fetch event(s)",
        x.fetches.len()
    );
    if !x.lockfile_pinned_fetches.is_empty() {
        detail.push_str(&format!(
            ", {} registry file(s) pinned by --lockfile_mode=error",
            x.lockfile_pinned_fetches.len()
        ));
    }
    let failed = x.fetches.iter().filter(|f| !f.success).count();
    if failed > 0 {
        detail.push_str(&format!(", {failed} failed attempt(s)"));
    }
    detail.push(')');
    if !x.distdirs.is_empty() {
        detail.push_str(&format!("; --distdir {}", x.distdirs.join(", ")));
    }
    (true, detail)
}

fn corroborated(ev: &Evidence) -> (bool, String) {
    let Some(c) = &ev.corroboration else {
        return (
            false,
            "the proof was recorded without executor corroboration; record it with `proof record --corroborate grpc://HOST:PORT` (and --remote-grpc-log FILE for Bazel 4.x)".into(),
        );
    };
    let mut problems = Vec::new();
    if let Some(url) = &ev.executor.remote_executor {
        if *url != c.executor {
            problems.push(format!(
                "the executor asked ({}) is not the build's --remote_executor ({url})",
                c.executor
            ));
        }
    }
    let instance = ev.executor.remote_instance_name.as_deref().unwrap_or("");
    if c.instance_name != instance {
        problems.push(format!(
            "the instance asked ({:?}) is not the build's --remote_instance_name ({instance:?})",
            c.instance_name
        ));
    }
    if !c.sample_matches {
        problems.push(format!(
            "the {} answered digest(s) are not the deterministic sample of {} of the {} candidate digest(s)",
            c.sampled, c.sample_size, c.candidates
        ));
    }
    if c.sampled == 0 {
        problems.push(
            "no remote action digest is known from the stream (Bazel 4.x: record with --remote-grpc-log)".into(),
        );
    } else if c.found == 0 {
        problems.push(format!(
            "none of the {} sampled action digest(s) is in the executor's action cache ({} not found, {} error(s)): the executor never saw these actions",
            c.sampled, c.not_found, c.errors
        ));
    }
    if c.exit_code_mismatches > 0 {
        let bad: Vec<String> = c
            .results
            .iter()
            .filter(|r| {
                r.found && r.stream_exit_code.is_some() && r.stream_exit_code != r.exit_code
            })
            .map(|r| {
                format!(
                    "{}/{} (stream {}, executor {})",
                    r.action_digest.hash,
                    r.action_digest.size_bytes,
                    r.stream_exit_code.unwrap_or_default(),
                    r.exit_code.unwrap_or_default()
                )
            })
            .collect();
        problems.push(format!(
            "exit codes disagree with the stream: {}",
            bad.join(", ")
        ));
    }
    if !problems.is_empty() {
        return (false, problems.join("; "));
    }
    let workers: std::collections::BTreeSet<&str> = c
        .results
        .iter()
        .filter_map(|r| r.worker.as_deref())
        .collect();
    (
        true,
        format!(
            "{} of {} sampled action digest(s) (of {}) found in the action cache of {}; exit codes agree; worker(s): {}",
            c.found,
            c.sampled,
            c.candidates,
            c.executor,
            if workers.is_empty() {
                "not reported".to_string()
            } else {
                workers.into_iter().collect::<Vec<_>>().join(", ")
            }
        ),
    )
}

/// `image_pinned` for an artifact with an executor ledger: every action the
/// executor executed ran on an image pinned by digest, as its own Action or
/// Command names it (the client's claim is not read).
fn image_pinned_attested(ev: &Evidence) -> (bool, String) {
    let Some(a) = &ev.attestation else {
        return (false, "the artifact holds no executor ledger".into());
    };
    if a.executed == 0 {
        return (
            false,
            format!(
                "the executor {} executed no action for invocation {}, so no worker image is attested",
                a.executor, a.invocation_id
            ),
        );
    }
    let mut problems = Vec::new();
    if a.executed_without_image > 0 {
        problems.push(format!(
            "the executor {} ran {} of its {} executed action(s) with no container-image in their Action or Command: they ran on whatever the worker had; set container-image (pinned by @sha256:) in --remote_default_exec_properties",
            a.executor, a.executed_without_image, a.executed
        ));
    }
    let unpinned: Vec<String> = a
        .images
        .iter()
        .filter(|i| !i.pinned)
        .map(|i| format!("{} ({} action(s))", i.image, i.executed_actions))
        .collect();
    if !unpinned.is_empty() {
        problems.push(format!(
            "worker image(s) not pinned by @sha256: digest, in the Actions the executor ran: {}",
            unpinned.join(", ")
        ));
    }
    let named: u64 = a.images.iter().map(|i| i.executed_actions).sum();
    let unknown = a.executed.saturating_sub(named + a.executed_without_image);
    if unknown > 0 {
        problems.push(format!(
            "the image of {unknown} executed action(s) could not be read from the executor's CAS"
        ));
    }
    if !problems.is_empty() {
        return (false, problems.join("; "));
    }
    let images: Vec<&str> = a.images.iter().map(|i| i.image.as_str()).collect();
    (
        true,
        format!(
            "all {} action(s) the executor executed ran on image(s) pinned by digest: {}",
            a.executed,
            images.join(", ")
        ),
    )
}

fn executor_attested(ev: &Evidence) -> (bool, String) {
    let Some(a) = &ev.attestation else {
        return (
            false,
            "the artifact holds no executor ledger: nothing but the client's own stream says what ran; record it with `proof serve --executor grpc://HOST:PORT`".into(),
        );
    };
    if let Some(why) = &a.unreachable {
        return (
            false,
            format!(
                "the executor {} could not be asked about invocation {} when it finished: {why}; the build's claims are unattested (build again once the executor is reachable)",
                a.executor, a.invocation_id
            ),
        );
    }
    let mut problems = Vec::new();
    if let Some(why) = &a.truncated {
        problems.push(format!(
            "the server stopped asking the executor {} before its answers were complete: {why}",
            a.executor
        ));
    }
    if a.invocation_id != ev.invocation_id {
        problems.push(format!(
            "the executor was asked about invocation {} but the stream is invocation {}",
            a.invocation_id, ev.invocation_id
        ));
    }
    problems.extend(a.errors.iter().cloned());
    if a.executed == 0 {
        problems.push(format!(
            "the executor {} executed 0 actions for invocation {} ({} operation(s), {} served from its cache, {} failed, {} unfinished)",
            a.executor, a.invocation_id, a.operations, a.cached, a.failed, a.unfinished
        ));
    }
    if let Some(claimed) = ev.processes.remote_executions.filter(|n| *n > a.executed) {
        problems.push(format!(
            "the client claims {claimed} remote executions but the executor {} executed {} for invocation {}",
            a.executor, a.executed, a.invocation_id
        ));
    }
    problems.extend(crate::outputs_bound::window_problem(ev));
    if !a.blob_problems.is_empty() {
        problems.push(format!(
            "{} Action/Command blob(s) could not be checked: {}",
            a.blob_problems.len(),
            a.blob_problems.join("; ")
        ));
    }
    if !problems.is_empty() {
        return (false, problems.join("; "));
    }
    let images: Vec<String> = a
        .images
        .iter()
        .map(|i| format!("{} ({} action(s))", i.image, i.executed_actions))
        .collect();
    (
        true,
        format!(
            "the executor {} ({}) executed {} action(s) for invocation {} ({} served from its cache) on worker(s) {} between {} and {}; image(s) from the executed Actions: {}",
            a.executor,
            a.adapter,
            a.executed,
            a.invocation_id,
            a.cached,
            if a.workers.is_empty() { "not reported".to_string() } else { a.workers.join(", ") },
            a.first_queued_at.as_deref().unwrap_or("?"),
            a.last_completed_at.as_deref().unwrap_or("?"),
            if images.is_empty() { "none named".to_string() } else { images.join(", ") }
        ),
    )
}

fn sources_agree(ev: &Evidence) -> (bool, String) {
    if ev.contradictions.is_empty() {
        let mut sources = vec!["the BEP"];
        if ev.exec_log.is_some() {
            sources.push("the execution log");
        }
        if ev.attestation.as_ref().is_some_and(|a| a.reachable) {
            sources.push("the executor's ledger");
        }
        return (
            true,
            format!("no contradiction between {}", sources.join(", ")),
        );
    }
    (
        false,
        ev.contradictions
            .iter()
            .map(|c| c.detail.clone())
            .collect::<Vec<_>>()
            .join("; "),
    )
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
            .check(PolicyCheck::SourcesAgree)
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

    /// The checks applied to `ev`: this policy's, plus
    /// [`PolicyCheck::ExecutorAttested`] and [`PolicyCheck::OutputsBound`]
    /// when the artifact carries an executor ledger (it was signed by `proof serve --executor`).
    pub fn checks_for(&self, ev: Option<&Evidence>) -> Vec<PolicyCheck> {
        let mut checks = self.checks.clone();
        if ev.is_some_and(|e| e.attestation.is_some())
            && !checks.contains(&PolicyCheck::ExecutorAttested)
        {
            checks.push(PolicyCheck::ExecutorAttested);
        }
        if ev.is_some_and(|e| e.attestation.is_some())
            && !checks.contains(&PolicyCheck::OutputsBound)
        {
            checks.push(PolicyCheck::OutputsBound);
        }
        checks
    }

    /// Evaluates every check of [`checks_for`](Self::checks_for), in order.
    pub fn evaluate(&self, ev: &Evidence) -> Vec<Check> {
        self.checks_for(Some(ev))
            .iter()
            .map(|c| {
                let (ok, detail) = c.evaluate(ev);
                Check::new(c.name(), ok, detail)
            })
            .collect()
    }
}
