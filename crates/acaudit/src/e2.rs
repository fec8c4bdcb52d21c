//! The E2 ("action-cache authority") section of `proof report`: the write
//! posture of each lane as probed (signed `proof probe-ac` results, never
//! the client's flags) and the last audit's figures.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::probe::{Posture, ProbeOutcome, Readback};
use crate::report::AuditReport;

/// The figures of one audit run, as the report shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFigures {
    pub executor: String,
    pub audited_at: String,
    pub scope: String,
    pub entries_audited: u64,
    pub changed: u64,
    pub unattested_writer: u64,
    pub missing: u64,
    pub unreachable: u64,
    pub exit_code: u8,
}

/// The section's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2Section {
    pub probes: Vec<ProbeOutcome>,
    pub last_audit: Option<AuditFigures>,
    /// Every probed lane read-only, and the last audit clean.
    pub holds: bool,
    /// What is missing or failing, one sentence each.
    pub problems: Vec<String>,
}

pub fn section(probes: Vec<ProbeOutcome>, audit: Option<&AuditReport>) -> E2Section {
    let mut problems = Vec::new();
    if probes.is_empty() {
        problems.push("no lane's write posture was probed (`proof probe-ac`)".to_string());
    }
    for p in &probes {
        if p.posture != Posture::ReadOnly {
            problems.push(format!(
                "instance {:?} on {}: {} ({})",
                p.instance_name,
                p.executor,
                p.posture.as_str(),
                p.detail
            ));
        }
    }
    let last_audit = audit.map(|a| {
        let n = |k: &str| a.counts.get(k).copied().unwrap_or(0);
        AuditFigures {
            executor: a.executor.clone(),
            audited_at: a.audited_at.clone(),
            scope: a.scope.clone(),
            entries_audited: a.entries_audited,
            changed: n("changed"),
            unattested_writer: n("unattested-writer"),
            missing: n("missing"),
            unreachable: n("unreachable"),
            exit_code: a.exit_code,
        }
    });
    match &last_audit {
        None => problems.push("no AC audit was given (`proof audit --format json`)".to_string()),
        Some(f) if f.exit_code != 0 => problems.push(format!(
            "the last AC audit ({}) found {} changed, {} unattested-writer, {} unreachable",
            f.audited_at, f.changed, f.unattested_writer, f.unreachable
        )),
        Some(_) => {}
    }
    E2Section {
        holds: problems.is_empty(),
        probes,
        last_audit,
        problems,
    }
}

fn readback(r: &Readback) -> String {
    match r {
        Readback::Found { worker } => format!("canary served (writer {worker:?})"),
        Readback::NotFound => "not found".to_string(),
        Readback::Error { code, message } => {
            format!("{} ({message})", crate::probe::code::name(*code))
        }
    }
}

/// Markdown.
pub fn render_md(s: &E2Section) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## E2: action-cache authority\n\n{}\n",
        if s.holds {
            "**Holds**: every probed lane is read-only and the last AC audit is clean."
        } else {
            "**Does not hold yet.**"
        }
    );
    if !s.probes.is_empty() {
        let _ = writeln!(
            out,
            "| instance | executor | probed at | write answered | read-back | posture |\n|---|---|---|---|---|---|"
        );
        for p in &s.probes {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} |",
                p.instance_name,
                p.executor,
                p.probed_at,
                p.write_status,
                readback(&p.readback),
                if p.passed {
                    "read-only (pass)".to_string()
                } else {
                    format!("{} (FAIL)", p.posture.as_str())
                }
            );
        }
        out.push('\n');
    }
    if let Some(f) = &s.last_audit {
        let _ = writeln!(
            out,
            "Last AC audit of `{}`: {} AC entries behind {} audited at {}: {} changed, {} unattested-writer, {} missing, {} unreachable.\n",
            f.executor,
            f.entries_audited,
            if f.scope.is_empty() { "the proofs" } else { f.scope.as_str() },
            f.audited_at,
            f.changed,
            f.unattested_writer,
            f.missing,
            f.unreachable
        );
    }
    for p in &s.problems {
        let _ = writeln!(out, "- {p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::classify;

    fn probe(instance: &str, code: i32, rb: Readback) -> ProbeOutcome {
        let (posture, detail) = classify(code, &rb);
        ProbeOutcome {
            executor: "grpc://x".into(),
            instance_name: instance.into(),
            header_names: vec![],
            canary_digest: "ab/1".into(),
            write_code: code,
            write_status: crate::probe::code::name(code).into(),
            write_message: String::new(),
            readback: rb,
            passed: posture == Posture::ReadOnly,
            posture,
            probed_at: "2026-01-01T00:00:00Z".into(),
            detail,
        }
    }

    #[test]
    fn holds_only_with_read_only_lanes_and_a_clean_audit() {
        let ro = probe("readonly", 12, Readback::NotFound);
        let rw = probe("", 0, Readback::NotFound);
        let clean = crate::report::finish(
            &crate::report::plan(&[]),
            &[],
            "grpc://x",
            "t",
            vec![],
            &|_, _| None,
        );
        // No proofs audited is exit 2: not clean.
        assert!(!section(vec![ro.clone()], Some(&clean)).holds);
        assert!(!section(vec![ro.clone()], None).holds);
        let s = section(vec![ro, rw], None);
        assert!(!s.holds);
        let md = render_md(&s);
        assert!(md.contains("| `readonly` | `grpc://x` | 2026-01-01T00:00:00Z | UNIMPLEMENTED | not found | read-only (pass) |"), "{md}");
        assert!(
            md.contains(
                "| `` | `grpc://x` | 2026-01-01T00:00:00Z | OK | not found | writable (FAIL) |"
            ),
            "{md}"
        );
    }
}
