//! Validation: JSON syntax, the JSON Schema (`docs/rbe-target-eligibility.schema.json`,
//! embedded), then the rules a schema cannot express (cross references).

use std::sync::OnceLock;

use serde_json::Value;
use thiserror::Error;

use crate::model::{GateStatus, Manifest, PLATFORM_GATES};

/// The JSON Schema of the manifest, version 1.
pub const SCHEMA: &str = include_str!("../../../docs/rbe-target-eligibility.schema.json");

/// The manifest text is unusable.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("the manifest is not JSON: {0}; fix the syntax (line and column given)")]
    Syntax(serde_json::Error),
    #[error(
        "the manifest violates docs/rbe-target-eligibility.schema.json:\n  - {}\nfix these fields (docs/manifest.md describes each)",
        .0.join("\n  - ")
    )]
    Schema(Vec<String>),
    #[error("the manifest is inconsistent:\n  - {}\nfix these references", .0.join("\n  - "))]
    Semantic(Vec<String>),
}

impl ManifestError {
    /// The individual problems, one line each.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ManifestError::Syntax(e) => vec![format!("not JSON: {e}")],
            ManifestError::Schema(v) | ManifestError::Semantic(v) => v.clone(),
        }
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(SCHEMA).expect("the embedded schema is valid JSON (tested)");
        jsonschema::validator_for(&schema).expect("the embedded schema compiles (tested)")
    })
}

/// Schema violations of `value`, each as `"/json/pointer: message"`, sorted.
pub fn schema_violations(value: &Value) -> Vec<String> {
    let mut v: Vec<String> = validator()
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path.to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Rules beyond the schema: every class names a known repo; a closed gate
/// has no open item; proof digests are unique within a class.
pub fn semantic_problems(m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for (id, c) in &m.classes {
        if !m.repos.contains_key(&c.repo) {
            out.push(format!(
                "/classes/{id}/repo: {:?} is not in /repos; add the repo or fix the name",
                c.repo
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &c.proofs {
            if !seen.insert(&p.artifact_sha256) {
                out.push(format!(
                    "/classes/{id}/proofs: artifact {} is recorded twice",
                    p.artifact_sha256
                ));
            }
        }
    }
    let all_gates = m
        .gates
        .iter()
        .map(|(id, g)| (format!("/gates/{id}"), g))
        .chain(m.classes.iter().flat_map(|(cid, c)| {
            c.gates
                .iter()
                .map(move |(id, g)| (format!("/classes/{cid}/gates/{id}"), g))
        }));
    for (path, g) in all_gates {
        if g.status == GateStatus::Closed {
            for (item, i) in &g.items {
                if i.status != GateStatus::Closed {
                    out.push(format!(
                        "{path}: closed, but its item {item:?} is {}; close the item or reopen the gate",
                        i.status.as_str()
                    ));
                }
            }
        }
    }
    for (rid, r) in &m.repos {
        for g in &r.cache_first.requires {
            if !PLATFORM_GATES.contains(&g.as_str()) {
                out.push(format!(
                    "/repos/{rid}/cache_first/requires: unknown gate {g:?}"
                ));
            }
        }
    }
    out
}

/// Parses and fully validates manifest text.
pub fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let value: Value = serde_json::from_str(text).map_err(ManifestError::Syntax)?;
    let violations = schema_violations(&value);
    if !violations.is_empty() {
        return Err(ManifestError::Schema(violations));
    }
    let m: Manifest = serde_json::from_value(value)
        .map_err(|e| ManifestError::Schema(vec![format!("/: {e}")]))?;
    let problems = semantic_problems(&m);
    if !problems.is_empty() {
        return Err(ManifestError::Semantic(problems));
    }
    Ok(m)
}
