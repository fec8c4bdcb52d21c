//! The audit run: which AC entries to ask about (one per instance and
//! action digest, over every proof that attested it), the report of the
//! answers, its exit code, and its text / Markdown / JSON forms. The JSON
//! `suspects` array is the operator's nuke-key hand-off (docs/ac-authority.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ledger::AttestedLedger;
use crate::outputs::TargetOutputs;
use crate::verdict::{judge, Current, ResultView, Verdict};

/// One verified, executor-attested proof to audit.
#[derive(Debug, Clone)]
pub struct ProofInput {
    /// The artifact's file name.
    pub proof: String,
    pub invocation_id: String,
    /// The manifest classes this proof stands behind (empty without
    /// `--manifest`).
    pub classes: Vec<String>,
    /// The tenant that submitted the build (the proof's origin).
    pub tenant: Option<String>,
    pub ledger: AttestedLedger,
    pub outputs: TargetOutputs,
}

/// A proof that relied on an entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reliance {
    pub proof: String,
    pub invocation_id: String,
    pub classes: Vec<String>,
    /// The proof's targets with an output of this action.
    pub targets: Vec<String>,
    /// The tenant whose build the proof is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// One AC entry to ask about.
#[derive(Debug, Clone)]
pub struct PlanItem {
    pub instance_name: String,
    /// `HASH/SIZE`.
    pub action_digest: String,
    pub attested: Vec<ResultView>,
    /// The attested ActionResults as encoded (in `attested` order): what a
    /// restore writes back.
    pub attested_encoded: Vec<Vec<u8>>,
    pub relied_on_by: Vec<Reliance>,
}

/// Every entry behind the proofs, and every worker their ledgers show.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub known_workers: BTreeSet<String>,
    pub proofs: Vec<String>,
}

/// The entries to ask about, sorted by (instance, digest).
pub fn plan(proofs: &[ProofInput]) -> Plan {
    let mut items: BTreeMap<(String, String), PlanItem> = BTreeMap::new();
    let mut known_workers = BTreeSet::new();
    for p in proofs {
        known_workers.extend(p.ledger.workers.iter().cloned());
        for e in &p.ledger.entries {
            let item = items
                .entry((e.instance_name.clone(), e.action_digest.clone()))
                .or_insert_with(|| PlanItem {
                    instance_name: e.instance_name.clone(),
                    action_digest: e.action_digest.clone(),
                    attested: Vec::new(),
                    attested_encoded: Vec::new(),
                    relied_on_by: Vec::new(),
                });
            let mut targets = BTreeSet::new();
            for r in &e.results {
                let v = ResultView::of(r);
                if !item.attested.contains(&v) {
                    item.attested.push(v);
                    item.attested_encoded.push(prost::Message::encode_to_vec(r));
                }
                targets.extend(p.outputs.targets_of(r));
            }
            item.relied_on_by.push(Reliance {
                proof: p.proof.clone(),
                invocation_id: p.invocation_id.clone(),
                classes: p.classes.clone(),
                targets: targets.into_iter().collect(),
                tenant: p.tenant.clone(),
            });
        }
    }
    Plan {
        items: items.into_values().collect(),
        known_workers,
        proofs: proofs.iter().map(|p| p.proof.clone()).collect(),
    }
}

impl Suspect {
    /// This suspect as `tenant` may see it: only the proofs of `tenant`'s
    /// builds that relied on it (`None` when none did).
    pub fn for_tenant(&self, tenant: &str) -> Option<Suspect> {
        let rel: Vec<Reliance> = self
            .relied_on_by
            .iter()
            .filter(|r| r.tenant.as_deref() == Some(tenant))
            .cloned()
            .collect();
        if rel.is_empty() {
            return None;
        }
        Some(Suspect {
            classes: union(&rel, |r| r.classes.clone()),
            targets: union(&rel, |r| r.targets.clone()),
            proofs: union(&rel, |r| vec![r.proof.clone()]),
            relied_on_by: rel,
            ..self.clone()
        })
    }
}

/// One audited entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub verdict: Verdict,
    pub instance_name: String,
    /// `HASH/SIZE`.
    pub action_digest: String,
    /// Union over the proofs that relied on it.
    pub classes: Vec<String>,
    pub targets: Vec<String>,
    pub proofs: Vec<String>,
    pub relied_on_by: Vec<Reliance>,
    /// What the proofs attested (one per distinct result).
    pub attested: Vec<ResultView>,
    /// What the cache serves now (`None` when missing or not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<ResultView>,
    /// Why the entry could not be audited (unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A poison suspect: everything an operator's runbook needs to quarantine
/// exactly this entry (docs/ac-authority.md, "Nuke-key hand-off").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    pub verdict: Verdict,
    pub instance_name: String,
    pub action_digest: String,
    /// `SHA256/SIZE` of the ActionResult(s) the proofs attested.
    pub attested_result_digests: Vec<String>,
    /// The attested ActionResult(s), protobuf-encoded, base64 (standard):
    /// what restoring the entry writes back with UpdateActionResult.
    pub attested_results_base64: Vec<String>,
    /// `SHA256/SIZE` of the ActionResult served now.
    pub current_result_digest: String,
    /// `execution_metadata.worker` of the result served now.
    pub writer: String,
    /// When an audit first saw this entry differ (RFC 3339).
    pub first_seen: String,
    pub classes: Vec<String>,
    pub targets: Vec<String>,
    pub proofs: Vec<String>,
    pub relied_on_by: Vec<Reliance>,
}

/// A proof in the directory that was not audited, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub proof: String,
    pub why: String,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub executor: String,
    /// RFC 3339.
    pub audited_at: String,
    /// What was audited, e.g. "the promoted classes of MANIFEST" (set by
    /// the caller).
    #[serde(default)]
    pub scope: String,
    pub proofs_audited: Vec<String>,
    pub proofs_skipped: Vec<Skipped>,
    pub entries_audited: u64,
    /// Entries per verdict (every verdict named, zeros included).
    pub counts: BTreeMap<String, u64>,
    /// Poison suspects (changed or unattested-writer).
    pub suspects: Vec<Suspect>,
    /// Every entry, sorted by (instance, digest).
    pub entries: Vec<AuditEntry>,
    /// 0 clean, 1 a suspect, 2 not usable (nothing audited, or an entry
    /// unreachable).
    pub exit_code: u8,
    /// One sentence.
    pub summary: String,
}

fn union(rel: &[Reliance], f: impl Fn(&Reliance) -> Vec<String>) -> Vec<String> {
    rel.iter()
        .flat_map(f)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The report of `plan` given the executor's `answers` (one per plan item,
/// in order). `first_seen(instance, digest)` is when an earlier run first
/// flagged the entry (the continuous audit keeps it); `None` means now.
pub fn finish(
    plan: &Plan,
    answers: &[Current],
    executor: &str,
    audited_at: &str,
    skipped: Vec<Skipped>,
    first_seen: &dyn Fn(&str, &str) -> Option<String>,
) -> AuditReport {
    assert_eq!(plan.items.len(), answers.len(), "one answer per entry");
    let mut counts: BTreeMap<String, u64> = Verdict::ALL
        .iter()
        .map(|v| (v.as_str().to_string(), 0))
        .collect();
    let mut entries = Vec::with_capacity(plan.items.len());
    let mut suspects = Vec::new();
    for (item, answer) in plan.items.iter().zip(answers) {
        let verdict = judge(&item.attested, answer, &plan.known_workers);
        *counts.entry(verdict.as_str().to_string()).or_default() += 1;
        let current = match answer {
            Current::Found(r) => Some(ResultView::of(r.as_ref())),
            _ => None,
        };
        let entry = AuditEntry {
            verdict,
            instance_name: item.instance_name.clone(),
            action_digest: item.action_digest.clone(),
            classes: union(&item.relied_on_by, |r| r.classes.clone()),
            targets: union(&item.relied_on_by, |r| r.targets.clone()),
            proofs: union(&item.relied_on_by, |r| vec![r.proof.clone()]),
            relied_on_by: item.relied_on_by.clone(),
            attested: item.attested.clone(),
            current,
            detail: match answer {
                Current::Unusable(why) => Some(why.clone()),
                _ => None,
            },
        };
        if verdict.is_suspect() {
            let cur = entry.current.as_ref();
            suspects.push(Suspect {
                verdict,
                instance_name: entry.instance_name.clone(),
                action_digest: entry.action_digest.clone(),
                attested_result_digests: entry
                    .attested
                    .iter()
                    .map(|a| a.result_digest.clone())
                    .collect(),
                attested_results_base64: item
                    .attested_encoded
                    .iter()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                    .collect(),
                current_result_digest: cur.map(|c| c.result_digest.clone()).unwrap_or_default(),
                writer: cur.map(|c| c.worker.clone()).unwrap_or_default(),
                first_seen: first_seen(&entry.instance_name, &entry.action_digest)
                    .unwrap_or_else(|| audited_at.to_string()),
                classes: entry.classes.clone(),
                targets: entry.targets.clone(),
                proofs: entry.proofs.clone(),
                relied_on_by: entry.relied_on_by.clone(),
            });
        }
        entries.push(entry);
    }
    let unreachable = counts.get("unreachable").copied().unwrap_or(0);
    let exit_code = if !suspects.is_empty() {
        1
    } else if plan.proofs.is_empty() || unreachable > 0 {
        2
    } else {
        0
    };
    let summary = format!(
        "{} AC entr{} behind {} proof{} audited at {audited_at}: {}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        plan.proofs.len(),
        if plan.proofs.len() == 1 { "" } else { "s" },
        Verdict::ALL
            .iter()
            .map(|v| format!("{} {}", counts[v.as_str()], v.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    AuditReport {
        executor: executor.to_string(),
        audited_at: audited_at.to_string(),
        scope: String::new(),
        proofs_audited: plan.proofs.clone(),
        proofs_skipped: skipped,
        entries_audited: entries.len() as u64,
        counts,
        suspects,
        entries,
        exit_code,
        summary,
    }
}

fn or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(", ")
    }
}

/// Lines comparing an attested and a current result.
fn differences(att: &ResultView, cur: &ResultView) -> Vec<String> {
    let mut out = Vec::new();
    let a: BTreeMap<&str, &crate::verdict::OutputView> = att
        .output_files
        .iter()
        .map(|o| (o.path.as_str(), o))
        .collect();
    let c: BTreeMap<&str, &crate::verdict::OutputView> = cur
        .output_files
        .iter()
        .map(|o| (o.path.as_str(), o))
        .collect();
    let paths: BTreeSet<&str> = a.keys().chain(c.keys()).copied().collect();
    for p in paths {
        let (x, y) = (a.get(p), c.get(p));
        if x != y {
            let show = |o: Option<&&crate::verdict::OutputView>| match o {
                Some(o) => format!("{}{}", o.digest, if o.executable { " (x)" } else { "" }),
                None => "(absent)".to_string(),
            };
            out.push(format!(
                "output {p}: attested {} -> current {}",
                show(x),
                show(y)
            ));
        }
    }
    if att.output_directories != cur.output_directories {
        out.push(format!(
            "output directories: attested [{}] -> current [{}]",
            att.output_directories.join(", "),
            cur.output_directories.join(", ")
        ));
    }
    if att.output_symlinks != cur.output_symlinks {
        out.push(format!(
            "output symlinks: attested [{}] -> current [{}]",
            att.output_symlinks.join(", "),
            cur.output_symlinks.join(", ")
        ));
    }
    if att.stdout_digest != cur.stdout_digest
        || att.stderr_digest != cur.stderr_digest
        || att.stdout_raw != cur.stdout_raw
        || att.stderr_raw != cur.stderr_raw
    {
        out.push(format!(
            "stdout/stderr (digest, inline): attested {} {} [{}] [{}] -> current {} {} [{}] [{}]",
            att.stdout_digest,
            att.stderr_digest,
            att.stdout_raw,
            att.stderr_raw,
            cur.stdout_digest,
            cur.stderr_digest,
            cur.stdout_raw,
            cur.stderr_raw
        ));
    }
    out.push(format!(
        "exit code: attested {} -> current {}; worker: attested {:?} -> current {:?}",
        att.exit_code, cur.exit_code, att.worker, cur.worker
    ));
    out
}

/// Plain text: the summary, then every entry that is not `same`.
pub fn render_text(r: &AuditReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "AC audit of {}: {}", r.executor, r.summary);
    for e in r.entries.iter().filter(|e| e.verdict != Verdict::Same) {
        let _ = writeln!(
            s,
            "{:<17} instance {:?} action {}  target {}  class {}  proof {}",
            e.verdict.as_str().to_uppercase(),
            e.instance_name,
            e.action_digest,
            or_dash(&e.targets),
            or_dash(&e.classes),
            or_dash(&e.proofs)
        );
        if let (Some(cur), Some(att)) = (&e.current, e.attested.first()) {
            for line in differences(att, cur) {
                let _ = writeln!(s, "    {line}");
            }
        }
        if let Some(d) = &e.detail {
            let _ = writeln!(s, "    {d}");
        }
    }
    for k in &r.proofs_skipped {
        let _ = writeln!(s, "skipped {}: {}", k.proof, k.why);
    }
    let _ = writeln!(
        s,
        "{}",
        match r.exit_code {
            0 => "clean: every audited entry is the one its proof attested, or evicted",
            1 => "POISON SUSPECTS: see docs/ac-authority.md for the quarantine runbook (`--format json` gives the hand-off)",
            _ => "NOT USABLE: the audit is incomplete (see above)",
        }
    );
    s
}

/// Markdown: a summary line and a table of the entries that are not `same`.
pub fn render_md(r: &AuditReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## AC audit of `{}`\n\n{}\n", r.executor, r.summary);
    let rows: Vec<&AuditEntry> = r
        .entries
        .iter()
        .filter(|e| e.verdict != Verdict::Same)
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "| verdict | instance | action | target | class | proof | attested → current |\n|---|---|---|---|---|---|---|"
        );
        for e in rows {
            let diff = match (&e.current, e.attested.first()) {
                (Some(cur), Some(att)) => differences(att, cur).join("<br>"),
                _ => e.detail.clone().unwrap_or_default(),
            };
            let _ = writeln!(
                s,
                "| {} | `{}` | `{}` | {} | {} | {} | {} |",
                e.verdict.as_str(),
                e.instance_name,
                e.action_digest,
                or_dash(&e.targets),
                or_dash(&e.classes),
                or_dash(&e.proofs),
                diff.replace('|', "\\|")
            );
        }
    }
    for k in &r.proofs_skipped {
        let _ = writeln!(s, "\n- skipped `{}`: {}", k.proof, k.why);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::read_ledger;
    use crate::ledger::tests::{ledger, op, result};

    fn input(name: &str, ops: Vec<proof_proto::longrunning::Operation>) -> ProofInput {
        ProofInput {
            proof: name.into(),
            invocation_id: format!("inv-{name}"),
            classes: vec!["spoke-build".into()],
            tenant: None,
            ledger: read_ledger(&ledger("", ops)).unwrap(),
            outputs: TargetOutputs::default(),
        }
    }

    #[test]
    fn entries_are_merged_over_proofs_and_exit_codes_follow_verdicts() {
        let a = input(
            "a.proof.tar",
            vec![
                op("o1", "aa", result("bot-1", "hello.txt", "11"), false),
                op("o2", "bb", result("bot-1", "upper.txt", "22"), false),
            ],
        );
        let b = input(
            "b.proof.tar",
            vec![op("o3", "aa", result("bot-1", "hello.txt", "11"), false)],
        );
        let p = plan(&[a, b]);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].relied_on_by.len(), 2);
        let none = |_: &str, _: &str| None;
        let clean = finish(
            &p,
            &[
                Current::Found(Box::new(result("bot-1", "hello.txt", "11"))),
                Current::NotFound,
            ],
            "grpc://x",
            "2026-01-01T00:00:00Z",
            vec![],
            &none,
        );
        assert_eq!(clean.exit_code, 0, "{}", render_text(&clean));
        assert_eq!(clean.counts["same"], 1);
        assert_eq!(clean.counts["missing"], 1);
        let poisoned = finish(
            &p,
            &[
                Current::Found(Box::new(result("bot-1", "hello.txt", "22"))),
                Current::Found(Box::new(result("bot-1", "upper.txt", "22"))),
            ],
            "grpc://x",
            "2026-01-01T00:00:00Z",
            vec![],
            &|_, _| Some("2025-12-31T00:00:00Z".into()),
        );
        assert_eq!(poisoned.exit_code, 1);
        assert_eq!(poisoned.suspects.len(), 1);
        let s = &poisoned.suspects[0];
        assert_eq!(s.action_digest, "aa/140");
        assert_eq!(s.writer, "bot-1");
        assert_eq!(s.first_seen, "2025-12-31T00:00:00Z");
        assert_eq!(s.proofs, ["a.proof.tar", "b.proof.tar"]);
        assert_eq!(s.classes, ["spoke-build"]);
        assert_ne!(s.current_result_digest, s.attested_result_digests[0]);
        // A tenant sees only its own proofs' reliance; another tenant nothing.
        let mut s2 = s.clone();
        s2.relied_on_by[0].tenant = Some("t1".into());
        s2.relied_on_by[1].tenant = Some("t2".into());
        let mine = s2.for_tenant("t1").unwrap();
        assert_eq!(mine.proofs, ["a.proof.tar"]);
        assert_eq!(mine.relied_on_by.len(), 1);
        assert!(s2.for_tenant("t3").is_none());
        let text = render_text(&poisoned);
        assert!(text.contains("CHANGED"), "{text}");
        assert!(
            text.contains("output hello.txt: attested 11/6 -> current 22/6"),
            "{text}"
        );
        assert!(render_md(&poisoned).contains("| changed | `` | `aa/140` |"));
        let down = finish(
            &p,
            &[Current::Unusable("down".into()), Current::NotFound],
            "grpc://x",
            "t",
            vec![],
            &none,
        );
        assert_eq!(down.exit_code, 2);
        let nothing = finish(&plan(&[]), &[], "grpc://x", "t", vec![], &none);
        assert_eq!(nothing.exit_code, 2);
    }
}
