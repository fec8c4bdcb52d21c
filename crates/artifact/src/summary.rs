//! `summary.md`: a Markdown digest of the evidence for a pull-request comment.

use std::fmt::Write as _;

use proof_evidence::Evidence;

use crate::policy::{Check, Policy};

/// `s` as a Markdown inline code span, safe in a table cell.
pub fn md_code(s: &str) -> String {
    code(s)
}

/// Makes `s` safe inside a Markdown inline code span in a table cell.
fn code(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '`' => '\'',
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("`{clean}`")
}

/// Makes `s` plain text in Markdown: every character that Markdown or GitHub
/// could read as syntax for links, images, emphasis, HTML, headings, table
/// pipes or code is backslash-escaped, and line breaks become spaces.
/// For every untrusted string outside a code span.
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '!' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Renders the summary of `evidence` judged by `policy`, section by
/// section: the verdict, the table (identity, executor, posture rows), the
/// policy's checks, how to verify.
pub fn render(ev: &Evidence, policy: &Policy) -> String {
    let checks = policy.evaluate(ev);
    let passed = checks.iter().all(|c| c.ok);
    let mut s = String::new();
    let verdict = if passed {
        "✅ remote execution proven"
    } else {
        "❌ remote execution NOT proven"
    };
    let _ = writeln!(s, "## rbe-proof: {verdict}\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    identity_rows(&mut s, ev);
    executor_rows(&mut s, ev);
    posture_rows(&mut s, ev);
    policy_section(&mut s, &checks);
    let _ = writeln!(
        s,
        "\nVerify with {}.",
        code(&format!(
            "proof verify {}.proof.tar --key <public key>",
            ev.invocation_id
        ))
    );
    s
}

/// Invocation, command and exit code.
fn identity_rows(s: &mut String, ev: &Evidence) {
    let _ = writeln!(s, "| Invocation | {} |", code(&ev.invocation_id));
    let mut command = format!("bazel {}", ev.command);
    for p in &ev.patterns {
        command.push(' ');
        command.push_str(p);
    }
    let _ = writeln!(s, "| Command | {} |", code(&command));
    let exit = match &ev.exit_code {
        Some(c) => format!("{} ({})", c.code, code(&c.name)),
        None => "none (no BuildFinished)".to_string(),
    };
    let _ = writeln!(s, "| Exit code | {exit} |");
}

/// The remote executor, execution and cache-hit counts, worker images.
fn executor_rows(s: &mut String, ev: &Evidence) {
    let executor = match &ev.executor.remote_executor {
        Some(url) if ev.executor.forced => format!("{} (forced)", code(url)),
        Some(url) => format!("{} (not forced)", code(url)),
        None => "none".to_string(),
    };
    let _ = writeln!(s, "| Remote executor | {executor} |");
    let count = |n: Option<u64>| n.map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let _ = writeln!(
        s,
        "| Remote executions | {} |",
        count(ev.processes.remote_executions)
    );
    let _ = writeln!(
        s,
        "| Remote cache hits | {} |",
        count(ev.processes.remote_cache_hits)
    );
    if ev.worker_images.is_empty() {
        let _ = writeln!(s, "| Worker images | none known |");
    }
    for w in &ev.worker_images {
        let pinned = if w.pinned { "pinned" } else { "**not pinned**" };
        let spawns = w
            .remote_spawns
            .map_or_else(String::new, |n| format!(", {n} remote spawns"));
        let _ = writeln!(
            s,
            "| Worker image | {} ({pinned}{spawns}) |",
            code(&w.image)
        );
    }
}

/// Posture rows, only when the artifact has such evidence: network
/// fetches, action-cache writes, executor corroboration.
fn posture_rows(s: &mut String, ev: &Evidence) {
    if !ev.external_inputs.fetches.is_empty() {
        let urls: Vec<String> = ev
            .external_inputs
            .network_fetches
            .iter()
            .map(|u| code(u))
            .collect();
        let _ = writeln!(
            s,
            "| Network fetches | {} of {} Fetch event(s){} |",
            urls.len(),
            ev.external_inputs.fetches.len(),
            if urls.is_empty() {
                String::new()
            } else {
                format!(": {}", urls.join(", "))
            }
        );
    }
    if let Some(n) = ev.cache_writes.update_action_result_calls {
        let _ = writeln!(s, "| Action-cache writes (UpdateActionResult) | {n} |");
    }
    if let Some(c) = &ev.corroboration {
        let _ = writeln!(
            s,
            "| Executor corroboration | {} of {} sampled action(s) found by {} ({} exit-code mismatch(es)) |",
            c.found,
            c.sampled,
            code(&c.executor),
            c.exit_code_mismatches
        );
    }
}

/// The policy's checks, one line each.
fn policy_section(s: &mut String, checks: &[Check]) {
    let _ = writeln!(s, "\n### Policy\n");
    for c in checks {
        let mark = if c.ok { "✅" } else { "❌" };
        // Details quote the build's own strings (exit-code names, URLs, ...).
        let _ = writeln!(s, "- {mark} {}: {}", code(&c.name), md_text(&c.detail));
    }
}
