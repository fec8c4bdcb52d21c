//! The `outputs_bound` policy check: every target the stream reports as
//! built has output files the executor produced for this invocation, inside
//! the stream's window (`proof_evidence::binding`). Required whenever the
//! artifact carries an executor ledger.

use proof_evidence::{BindingStatus, Evidence, OutputBinding};

/// Most targets named in a detail.
const NAMED: usize = 10;

fn outside(b: &OutputBinding) -> String {
    if b.operations_outside == 0 {
        return String::new();
    }
    let mut by_why: Vec<(String, Vec<&str>)> = Vec::new();
    for o in &b.outside {
        match by_why.iter_mut().find(|(w, _)| *w == o.why) {
            Some((_, ops)) => ops.push(&o.operation),
            None => by_why.push((o.why.clone(), vec![&o.operation])),
        }
    }
    let named: Vec<String> = by_why
        .iter()
        .map(|(why, ops)| {
            let shown: Vec<&str> = ops.iter().take(3).copied().collect();
            let more = if ops.len() > 3 {
                format!(" and {} more", ops.len() - 3)
            } else {
                String::new()
            };
            format!("{} {why} ({}{more})", ops.len(), shown.join(", "))
        })
        .collect();
    format!(
        "; {} executor operation(s) outside the stream's window do not count: {}",
        b.operations_outside,
        named.join("; ")
    )
}

fn window(b: &OutputBinding) -> String {
    match &b.window {
        Some(w) => format!(
            "inside the stream's window {} to {} ({} s slack each side; {})",
            w.from, w.to, w.slack_seconds, w.times
        ),
        None => "with no window (the stream states no start or finish time)".into(),
    }
}

fn not_applicable(b: &OutputBinding) -> String {
    let na: Vec<String> = b
        .targets
        .iter()
        .filter(|(_, t)| t.status == BindingStatus::NotApplicable)
        .map(|(l, t)| format!("{l} ({})", t.note.as_deref().unwrap_or("nothing to bind")))
        .collect();
    if na.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = na.iter().take(NAMED).cloned().collect();
    let more = if na.len() > NAMED {
        format!(" and {} more", na.len() - NAMED)
    } else {
        String::new()
    };
    format!(
        "; {} target(s) not applicable, not proven: {}{more}",
        na.len(),
        shown.join(", ")
    )
}

fn cached_attested(b: &OutputBinding) -> String {
    if b.files_cached_attested == 0 {
        return String::new();
    }
    let labels: Vec<&str> = b
        .targets
        .iter()
        .filter(|(_, t)| t.status == BindingStatus::CachedAttested)
        .map(|(l, _)| l.as_str())
        .collect();
    let shown: Vec<&str> = labels.iter().take(NAMED).copied().collect();
    let more = if labels.len() > NAMED {
        format!(" and {} more", labels.len() - NAMED)
    } else {
        String::new()
    };
    format!(
        "; {} output file(s) served from the cache, each produced by an earlier execution the server witnessed (cached-attested), so {} target(s) are bound through the cache: {}{more}",
        b.files_cached_attested,
        labels.len(),
        shown.join(", ")
    )
}

/// `t`'s first unbound files, each with its digest (or URI) and why.
fn unbound_files(label: &str, t: &proof_evidence::TargetBinding) -> String {
    let files: Vec<String> = t
        .unbound
        .iter()
        .take(3)
        .map(|f| {
            format!(
                "{} ({}): {}",
                if f.file.is_empty() { "-" } else { &f.file },
                f.digest.as_deref().unwrap_or(if f.uri.is_empty() {
                    "no digest"
                } else {
                    &f.uri
                }),
                f.why
            )
        })
        .collect();
    let more = if t.files_unbound > 3 {
        format!(" and {} more", t.files_unbound - 3)
    } else {
        String::new()
    };
    format!("{label}: {}{more}", files.join(", "))
}

/// Problems that stop any binding: an unreachable executor, file sets over
/// a bound.
fn preconditions(ev: &Evidence, b: &OutputBinding, who: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(a) = ev.attestation.as_ref().filter(|a| !a.reachable) {
        problems.push(format!(
            "{who} could not be asked about invocation {}: no output can be bound",
            a.invocation_id
        ));
    }
    problems.extend(b.incomplete.clone());
    problems
}

/// The unbound targets (the first [`NAMED`]), or that nothing is bound.
fn unbound_problem(ev: &Evidence, b: &OutputBinding, who: &str) -> Option<String> {
    let unbound: Vec<String> = b
        .targets
        .iter()
        .filter(|(_, t)| t.status == BindingStatus::Unbound)
        .map(|(label, t)| unbound_files(label, t))
        .collect();
    if unbound.is_empty() {
        return (b.targets_bound == 0 && b.targets_cached_attested == 0).then(|| {
            format!(
                "no built target has an output produced by an execution {who} ran for invocation {} {}",
                ev.invocation_id,
                window(b)
            )
        });
    }
    let shown: Vec<String> = unbound.iter().take(NAMED).cloned().collect();
    let more = if unbound.len() > NAMED {
        format!("; and {} more target(s)", unbound.len() - NAMED)
    } else {
        String::new()
    };
    Some(format!(
        "{} built target(s) unbound, their outputs were not produced by an execution {who} ran for invocation {} {}: {}{more}",
        unbound.len(),
        ev.invocation_id,
        window(b),
        shown.join("; ")
    ))
}

/// Whether `ev` passes `outputs_bound`, and why (not).
pub(crate) fn outputs_bound(ev: &Evidence) -> (bool, String) {
    let Some(b) = &ev.output_binding else {
        return (
            false,
            "the artifact holds no executor ledger, so no output can be bound to an execution; record it with `proof serve --executor grpc://HOST:PORT`".into(),
        );
    };
    let who = match &ev.attestation {
        Some(a) => format!("the executor {}", a.executor),
        None => "the executor".into(),
    };
    let tree_problems = (b.output_directories_unread > 0).then(|| {
        format!(
            "{} output director(ies) whose Tree blob could not be read, so no file inside them binds: {}",
            b.output_directories_unread,
            b.tree_problems.join("; ")
        )
    });
    let mut problems = preconditions(ev, b, &who);
    problems.extend(unbound_problem(ev, b, &who));
    if !problems.is_empty() {
        problems.extend(tree_problems);
        return (
            false,
            format!("{}{}{}", problems.join("; "), not_applicable(b), outside(b)),
        );
    }
    let dirs = tree_problems.map(|t| format!("; {t}")).unwrap_or_default();
    (
        true,
        format!(
            "{} built target(s) bound: {} output file(s) produced by {} successful execution(s) {who} ran for invocation {} {}{}{}{}{dirs}",
            b.targets_bound + b.targets_cached_attested,
            b.files_bound,
            b.operations_in_window,
            ev.invocation_id,
            window(b),
            cached_attested(b),
            not_applicable(b),
            outside(b)
        ),
    )
}

/// An artifact signed before `output_binding` existed (its predicate has no
/// such key) still re-derives: the binding is left out of the comparison,
/// not out of the evidence. The policy reads only the re-derived binding,
/// never a signed one, so a predicate without it gains nothing.
pub(crate) fn signed_before_binding(derived: &mut serde_json::Value, signed: &serde_json::Value) {
    const KEY: &str = "output_binding";
    if signed.get(KEY).is_none() {
        if let Some(o) = derived.as_object_mut() {
            o.remove(KEY);
        }
    }
    // Likewise its execution-log cross-check (issue 27 item 4): what it
    // finds wrong is a contradiction, which is compared as before.
    const CHECK: &str = "exec_log_check";
    if signed.get(KEY).is_some_and(|b| b.get(CHECK).is_none()) {
        if let Some(o) = derived.get_mut(KEY).and_then(|b| b.as_object_mut()) {
            o.remove(CHECK);
        }
    }
}

/// For `executor_attested`: the executor's executions count only inside the
/// stream's window. A problem when operations outside it would be needed to
/// cover what the client claims (issue 27: a decoy's operations under the
/// same invocation id, queued before the stream started).
pub(crate) fn window_problem(ev: &Evidence) -> Option<String> {
    let b = ev.output_binding.as_ref()?;
    let a = ev.attestation.as_ref().filter(|a| a.reachable)?;
    if b.operations_outside == 0 {
        return None;
    }
    let inside = b.executed_in_window;
    let claimed = ev.processes.remote_executions.unwrap_or(0);
    if inside > 0 && inside >= claimed {
        return None;
    }
    Some(format!(
        "only {inside} of the executor's {} executed action(s) for invocation {} lie {}, and the client claims {claimed}{}",
        a.executed,
        a.invocation_id,
        window(b),
        outside(b)
    ))
}
