//! The PR check: `proof verify --manifest FILE --proofs DIR`.

use serde::Serialize;
use time::OffsetDateTime;

use crate::io::ProofDir;
use crate::model::{Class, Manifest, Mode, ProofRecord};
use crate::schema::parse_manifest;

/// Options of the check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The newest proof of a class at executor-backed or default must be at
    /// most this many days old.
    pub max_age_days: Option<u64>,
    /// "Now", for the age check.
    pub now: OffsetDateTime,
    /// The tenants file of the server that signed the proofs: who owns
    /// which repo (`proof verify --manifest --tenants`).
    pub owners: Option<proof_tenancy::Tenants>,
    /// `allow_unauthenticated_proofs` of the manifest at the PR's base revision
    /// (`proof verify --manifest --base-manifest`). `Some`: it is the value that
    /// counts, and a manifest that changes it fails the check (a PR cannot
    /// lower the bar its own proofs are judged by). `None`: the manifest's own.
    pub base_allow_unauthenticated: Option<bool>,
}

/// The outcome of the check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    /// Problems of the manifest itself (syntax, schema, references).
    pub manifest_problems: Vec<String>,
    /// Every class, in id order.
    pub classes: Vec<ClassCheck>,
}

impl CheckReport {
    pub fn failing(&self) -> impl Iterator<Item = &ClassCheck> {
        self.classes.iter().filter(|c| !c.ok)
    }
}

/// The outcome for one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCheck {
    pub class: String,
    pub repo: String,
    pub mode: Mode,
    pub ok: bool,
    /// Why the class fails (empty when ok).
    pub reasons: Vec<String>,
    /// Proof records checked against an artifact.
    pub proofs_verified: usize,
}

/// Checks the manifest `text` against the artifacts of `proofs`.
pub fn check_manifest(text: &str, proofs: &ProofDir, opts: &CheckOptions) -> CheckReport {
    let manifest = match parse_manifest(text) {
        Ok(m) => m,
        Err(e) => {
            return CheckReport {
                ok: false,
                manifest_problems: e.problems(),
                classes: Vec::new(),
            }
        }
    };
    let mut manifest = manifest;
    let mut manifest_problems = Vec::new();
    if let Some(base) = opts.base_allow_unauthenticated {
        if manifest.allow_unauthenticated_proofs != base {
            manifest_problems.push(format!(
                "allow_unauthenticated_proofs is {} here and {base} at the base revision: a \
                 PR cannot change the bar its own proofs are judged by; change it in a PR of \
                 its own that records no proof, reviewed by the platform's owners",
                manifest.allow_unauthenticated_proofs
            ));
        }
        manifest.allow_unauthenticated_proofs = base;
    }
    let classes: Vec<ClassCheck> = manifest
        .classes
        .iter()
        .map(|(id, c)| check_class(&manifest, id, c, proofs, opts))
        .collect();
    CheckReport {
        ok: manifest_problems.is_empty() && classes.iter().all(|c| c.ok),
        manifest_problems,
        classes,
    }
}

pub(crate) fn check_class(
    m: &Manifest,
    id: &str,
    c: &Class,
    proofs: &ProofDir,
    opts: &CheckOptions,
) -> ClassCheck {
    let mut reasons = Vec::new();
    // Each verified proof with the date its age is taken from.
    let mut good: Vec<(&ProofRecord, String)> = Vec::new();
    for r in &c.proofs {
        match check_record(r, c, proofs, m, opts) {
            Ok(date) => good.push((r, date)),
            Err(why) => reasons.push(format!(
                "proof {} ({}): {why}",
                short(&r.artifact_sha256),
                r.location
            )),
        }
    }
    if c.mode >= Mode::ExecutorBacked {
        if c.proofs.is_empty() {
            reasons.push(format!(
                "mode {} but no proof artifact is recorded; run `proof promote`",
                c.mode.as_str()
            ));
        }
        if let (Some(max), Some(newest)) =
            (opts.max_age_days, good.iter().map(|(_, date)| date).max())
        {
            match age_days(newest, opts.now) {
                Some(age) if age > max as i64 => reasons.push(format!(
                    "the newest verified proof ({newest}) is {age} days old, more than --max-age {max}; record a fresh proof"
                )),
                None => reasons.push(format!("proof date {newest:?} is not RFC 3339")),
                _ => {}
            }
        }
    }
    let closed_claims: Vec<&str> = c
        .gates
        .iter()
        .filter(|(_, g)| g.is_closed())
        .map(|(id, _)| id.as_str())
        .collect();
    if !closed_claims.is_empty() && c.proofs.is_empty() {
        reasons.push(format!(
            "class gates [{}] are closed but no proof artifact backs them",
            closed_claims.join(", ")
        ));
    }
    if c.mode == Mode::Default {
        for (gid, g) in m.open_platform_gates() {
            reasons.push(format!(
                "mode default while platform gate {gid} is {} (owner {})",
                g.status.as_str(),
                g.owner
            ));
        }
        for (gid, g) in c.open_gates() {
            reasons.push(format!(
                "mode default while class gate {gid} is {} (owner {})",
                g.status.as_str(),
                g.owner
            ));
        }
    }
    ClassCheck {
        class: id.to_string(),
        repo: c.repo.clone(),
        mode: c.mode,
        ok: reasons.is_empty(),
        reasons,
        proofs_verified: good.len(),
    }
}

fn check_record(
    r: &ProofRecord,
    c: &Class,
    proofs: &ProofDir,
    m: &Manifest,
    opts: &CheckOptions,
) -> Result<String, String> {
    let Some(found) = proofs.by_sha256(&r.artifact_sha256) else {
        let base = r.location.rsplit('/').next().unwrap_or(&r.location);
        let by_name = proofs
            .by_file_name(base)
            .or_else(|| proofs.by_file_name(&format!("{}.proof.tar", r.invocation_id)));
        return Err(match by_name {
            Some(a) => match &a.facts {
                Ok(f) => format!(
                    "digest mismatch: the manifest records sha256 {} but {} has sha256 {}",
                    r.artifact_sha256, a.file_name, f.artifact_sha256
                ),
                Err(e) => format!("{} is unreadable: {e}", a.file_name),
            },
            None => format!(
                "no artifact with sha256 {} in the proofs directory",
                r.artifact_sha256
            ),
        });
    };
    let facts = found.facts.as_ref().map_err(Clone::clone)?;
    if !facts.verified_per_class() {
        return Err(format!(
            "{} fails verification: {}",
            found.file_name,
            facts.failures().join("; ")
        ));
    }
    let actual = facts
        .record(&r.location)
        .ok_or_else(|| format!("{} has no evidence", found.file_name))?;
    let diffs = record_differences(r, &actual);
    if !diffs.is_empty() {
        return Err(format!(
            "the manifest's record does not match {}: {}",
            found.file_name,
            diffs.join("; ")
        ));
    }
    let mut problems = facts.coverage_problems(c);
    problems.extend(facts.binding_problems(c));
    problems.extend(facts.trust_problems(
        c,
        c.mode,
        m.allow_unauthenticated_proofs,
        opts.owners.as_ref(),
    ));
    if !problems.is_empty() {
        return Err(format!(
            "{} does not cover the class: {}",
            found.file_name,
            problems.join("; ")
        ));
    }
    // The age of a proof is not the client's to say: with an executor
    // ledger, the executor's last completion; else the stream's own date,
    // which, under --max-age, may not lie in the future.
    let (date, source) = match facts
        .evidence
        .as_ref()
        .and_then(|e| e.attestation.as_ref())
        .and_then(|a| a.last_completed_at.clone())
    {
        Some(d) => (d, "the executor's last completed action"),
        None => (r.date.clone(), "the build's own finish time"),
    };
    if let Ok(t) = OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc3339) {
        if opts.max_age_days.is_some() && t > opts.now + FUTURE_SKEW {
            return Err(format!(
                "{} is dated {date} ({source}), after this check ran ({}): a proof cannot come from the future; record a fresh proof",
                found.file_name, opts.now
            ));
        }
    }
    Ok(date)
}

/// Clock skew tolerated between the machines that dated a proof and the
/// one checking it.
const FUTURE_SKEW: time::Duration = time::Duration::minutes(10);

/// Fields of the manifest's record that differ from the artifact's.
pub fn record_differences(manifest: &ProofRecord, artifact: &ProofRecord) -> Vec<String> {
    let a = serde_json::to_value(manifest).unwrap_or_default();
    let b = serde_json::to_value(artifact).unwrap_or_default();
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["records are not objects".into()];
    };
    a.iter()
        .filter(|(k, v)| k.as_str() != "location" && b.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: manifest {v}, artifact {}",
                b.get(k).cloned().unwrap_or(serde_json::Value::Null)
            )
        })
        .collect()
}

fn age_days(date: &str, now: OffsetDateTime) -> Option<i64> {
    let t = OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).ok()?;
    Some((now - t).whole_days())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
