//! Text and Markdown renderers for the PR check and the report (JSON is
//! the serde form of [`CheckReport`] / [`PlatformReport`]).

use std::fmt::Write;

use crate::check::CheckReport;
use crate::model::Mode;
use crate::report::{PlatformReport, QUESTIONS};

/// An untrusted string (from a manifest under review or a proof's claims) as
/// Markdown text: no links, images, HTML, emphasis or table breaks.
fn cell(s: &str) -> String {
    proof_artifact::summary::md_text(s)
}

fn t(s: impl std::fmt::Display) -> String {
    cell(&s.to_string())
}

/// An untrusted string as a Markdown code span.
fn code(s: impl std::fmt::Display) -> String {
    proof_artifact::summary::md_code(&s.to_string())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn verified(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "**NO**",
        None => "not checked",
    }
}

/// Plain text for a terminal.
pub fn check_text(r: &CheckReport, manifest: &str) -> String {
    let mut s = String::new();
    if !r.manifest_problems.is_empty() {
        let _ = writeln!(s, "{manifest}: FAIL (invalid manifest)");
        for p in &r.manifest_problems {
            let _ = writeln!(s, "  {p}");
        }
        return s;
    }
    let failing = r.failing().count();
    let _ = writeln!(
        s,
        "{manifest}: {} ({} classes, {} failing)",
        if r.ok { "PASS" } else { "FAIL" },
        r.classes.len(),
        failing
    );
    for c in &r.classes {
        let _ = writeln!(
            s,
            "  {} {:<36} {:<16} {} verified proof(s)",
            if c.ok { "pass" } else { "FAIL" },
            c.class,
            c.mode.as_str(),
            c.proofs_verified
        );
        for why in &c.reasons {
            let _ = writeln!(s, "       {why}");
        }
    }
    s
}

/// Markdown for a GitHub step summary or PR comment.
pub fn check_md(r: &CheckReport, manifest: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### RBE target eligibility: {}\n",
        if r.ok { "✅ pass" } else { "❌ fail" }
    );
    if !r.manifest_problems.is_empty() {
        let _ = writeln!(s, "`{manifest}` is not a valid manifest:\n");
        for p in &r.manifest_problems {
            let _ = writeln!(s, "- {}", t(p));
        }
        return s;
    }
    let count = |m: Mode| r.classes.iter().filter(|c| c.mode == m).count();
    let _ = writeln!(
        s,
        "`{manifest}`: {} classes ({} default, {} executor-backed, {} cache-first), {} failing.\n",
        r.classes.len(),
        count(Mode::Default),
        count(Mode::ExecutorBacked),
        count(Mode::CacheFirst),
        r.failing().count()
    );
    if r.failing().next().is_some() {
        let _ = writeln!(s, "| class | repo | mode | reason |\n|---|---|---|---|");
        for c in r.failing() {
            for why in &c.reasons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    code(&c.class),
                    t(&c.repo),
                    c.mode.as_str(),
                    cell(why)
                );
            }
        }
        s.push('\n');
    }
    let proven: Vec<_> = r
        .classes
        .iter()
        .filter(|c| c.ok && c.mode >= Mode::ExecutorBacked)
        .collect();
    if !proven.is_empty() {
        let _ = writeln!(
            s,
            "<details><summary>{} classes with verified proofs</summary>\n",
            proven.len()
        );
        let _ = writeln!(
            s,
            "| class | repo | mode | verified proofs |\n|---|---|---|---|"
        );
        for c in proven {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                code(&c.class),
                t(&c.repo),
                c.mode.as_str(),
                t(c.proofs_verified)
            );
        }
        let _ = writeln!(s, "\n</details>");
    }
    s
}

/// The report as Markdown, one section per question.
pub fn report_md(r: &PlatformReport) -> String {
    let mut s = String::new();
    let c = &r.counts;
    let _ = writeln!(s, "# RBE target eligibility report\n");
    let _ = writeln!(
        s, "{} target classes in {} repos: {} default, {} executor-backed, {} cache-first. {} of {} default-RBE gates open. Proof artifacts: {}.\n", t(c.classes), t(c.repos), t(c.default), t(c.executor_backed), t(c.cache_first), t(c.gates_open), t(c.gates_total), if r.proofs_checked { "verified against the proofs directory" } else { "not verified (no --proofs)" });
    section_q1_proved(&mut s, r);
    section_q2_default_blocked(&mut s, r);
    section_q3_next_blocker(&mut s, r);
    section_q4_cache_first_pilots(&mut s, r);
    section_q5_executor_backed(&mut s, r);
    section_q6_default_evidence(&mut s, r);
    s
}

/// Section 1: the answer to `QUESTIONS[0]`.
fn section_q1_proved(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 1. {}\n", QUESTIONS[0]);
    let p = &r.q1_proved;
    if p.classes.is_empty() {
        let _ = writeln!(s, "Nothing: no class is at executor-backed or default.\n");
    } else {
        let _ = writeln!(
            s,
            "{} classes are proven to run on the remote executor:\n",
            p.classes.len()
        );
        let _ = writeln!(s, "| class | repo | kind | mode | patterns | latest proof | verified |\n|---|---|---|---|---|---|---|");
        for l in &p.classes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                code(&l.class),
                t(&l.repo),
                t(&l.work_kind),
                l.mode.as_str(),
                code(cell(&l.patterns.join(" "))),
                t(l.latest_proof.as_deref().unwrap_or("-")),
                verified(l.verified)
            );
        }
        s.push('\n');
    }
    if !p.remote_artifacts.is_empty() {
        let _ = writeln!(s, "Proof artifacts that show remote execution:\n");
        let _ = writeln!(s, "| artifact | sha256 | command | remote executions | executor (instance) | worker image | classes | verified |\n|---|---|---|---|---|---|---|---|");
        for a in &p.remote_artifacts {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
                t(&a.location),
                code(short(&a.artifact_sha256).to_string()),
                t(&a.command),
                t(a.remote_executions),
                t(&a.executor),
                t(a.instance_name.as_deref().unwrap_or("default")),
                cell(&a.worker_images.join(", ")),
                a.classes
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                verified(a.verified)
            );
        }
        s.push('\n');
    }
    let problems: Vec<_> = p
        .classes
        .iter()
        .filter(|l| !l.problems.is_empty())
        .collect();
    for l in problems {
        let _ = writeln!(
            s,
            "- {} does not verify: {}",
            code(&l.class),
            cell(&l.problems.join("; "))
        );
    }
}

/// Section 2: the answer to `QUESTIONS[1]`.
fn section_q2_default_blocked(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 2. {}\n", QUESTIONS[1]);
    let b = &r.q2_default_blocked;
    if !b.blocked {
        let _ = writeln!(s, "It is not: every default-RBE gate is closed.\n");
    } else {
        let _ = writeln!(
            s,
            "{} of the default-RBE gates are not closed (closed: {}):\n",
            b.open_gates.len(),
            if b.closed_gates.is_empty() {
                "none".to_string()
            } else {
                b.closed_gates.join(", ")
            }
        );
        let _ = writeln!(s, "| gate | status | owner | blocker | open items | due | evidence |\n|---|---|---|---|---|---|---|");
        for g in &b.open_gates {
            let _ = writeln!(
                s,
                "| **{}** ({}) | {} | {} | {} | {} | {} | {} |",
                t(&g.gate),
                cell(&g.title),
                g.status.as_str(),
                t(&g.owner),
                cell(g.blocker.as_deref().unwrap_or("-")),
                cell(&if g.open_items.is_empty() {
                    "-".to_string()
                } else {
                    g.open_items.join("; ")
                }),
                t(g.due.as_deref().unwrap_or("-")),
                cell(&if g.evidence.is_empty() {
                    "-".to_string()
                } else {
                    g.evidence.join(", ")
                })
            );
        }
        s.push('\n');
    }
}

/// Section 3: the answer to `QUESTIONS[2]`.
fn section_q3_next_blocker(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 3. {}\n", QUESTIONS[2]);
    match &r.q3_next_blocker {
        None => {
            let _ = writeln!(s, "None: no gate is open.\n");
        }
        Some(n) => {
            let _ = writeln!(
                s,
                "**{}** ({}), owned by **{}**, {} — {}.\n",
                t(&n.gate.gate),
                t(&n.gate.title),
                t(&n.gate.owner),
                n.gate.status.as_str(),
                t(&n.why)
            );
            let _ = writeln!(
                s,
                "Blocker: {}\n",
                t(n.gate.blocker.as_deref().unwrap_or("-"))
            );
            for i in &n.gate.open_items {
                let _ = writeln!(s, "- {}", t(i));
            }
            if !n.gate.open_items.is_empty() {
                s.push('\n');
            }
        }
    }
}

/// Section 4: the answer to `QUESTIONS[3]`.
fn section_q4_cache_first_pilots(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 4. {}\n", QUESTIONS[3]);
    let can: Vec<_> = r
        .q4_cache_first_pilots
        .iter()
        .filter(|p| p.can_pilot_now)
        .collect();
    let _ = writeln!(
        s,
        "Can pilot now: {}.\n",
        if can.is_empty() {
            "none".to_string()
        } else {
            can.iter()
                .map(|p| format!("**{}** ({}, owner {})", p.repo, p.status, p.owner))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let cannot: Vec<_> = r
        .q4_cache_first_pilots
        .iter()
        .filter(|p| !p.can_pilot_now)
        .collect();
    if !cannot.is_empty() {
        let _ = writeln!(s, "| repo | status | blocked by |\n|---|---|---|");
        for p in cannot {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                t(&p.repo),
                t(&p.status),
                cell(&p.blockers.join("; "))
            );
        }
        s.push('\n');
    }
}

/// Section 5: the answer to `QUESTIONS[4]`.
fn section_q5_executor_backed(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 5. {}\n", QUESTIONS[4]);
    if r.q5_executor_backed.is_empty() {
        let _ = writeln!(s, "None.\n");
    } else {
        let _ = writeln!(s, "| class | repo | kind | patterns | mode | proofs | latest proof date |\n|---|---|---|---|---|---|---|");
        for l in &r.q5_executor_backed {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                code(&l.class),
                t(&l.repo),
                t(&l.work_kind),
                code(cell(&l.patterns.join(" "))),
                l.mode.as_str(),
                t(l.proofs),
                t(l.latest_date.as_deref().unwrap_or("-"))
            );
        }
        s.push('\n');
    }
}

/// Section 6: the answer to `QUESTIONS[5]`.
fn section_q6_default_evidence(s: &mut String, r: &PlatformReport) {
    let _ = writeln!(s, "## 6. {}\n", QUESTIONS[5]);
    let e = &r.q6_default_evidence;
    let _ = writeln!(
        s,
        "For each target class, a signed proof artifact (`proof record`) showing:\n"
    );
    for req in &e.artifact_requirements {
        let _ = writeln!(s, "- {req}");
    }
    let _ = writeln!(
        s,
        "\nFor every spoke, the default-RBE gates closed: {}.\n",
        if e.platform_gates.is_empty() {
            "all are closed".to_string()
        } else {
            e.platform_gates.join(", ")
        }
    );
    let missing: Vec<_> = e.classes.iter().filter(|c| !c.missing.is_empty()).collect();
    let ready: Vec<_> = e.classes.iter().filter(|c| c.missing.is_empty()).collect();
    if !ready.is_empty() {
        let _ = writeln!(
            s,
            "Class evidence complete (waiting only on the platform gates): {}.\n",
            ready
                .iter()
                .map(|c| format!("`{}`", c.class))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "| class | repo | mode | missing evidence |\n|---|---|---|---|"
        );
        for c in missing {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                code(&c.class),
                t(&c.repo),
                c.mode.as_str(),
                cell(&c.missing.join("; "))
            );
        }
    }
}
