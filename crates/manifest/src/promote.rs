//! The promotion edit: `(old manifest text, artifact facts) -> new text`.
//! Pure; the file replacement is in [`crate::io::promote_file`].

use thiserror::Error;

use crate::facts::ArtifactFacts;
use crate::model::{Class, GateStatus, Manifest, Mode, ProofRecord, CLASS_GATES};
use crate::schema::{parse_manifest, ManifestError};

/// What to promote.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    /// Class id.
    pub class: String,
    /// Target mode; `None` = executor-backed, or the class's mode when it
    /// is already higher.
    pub mode: Option<Mode>,
    /// Where the artifact is kept (recorded as `location`).
    pub location: String,
    /// The tenants file of the server that signed the proof: who owns which
    /// repo (`proof promote --tenants`).
    pub owners: Option<proof_tenancy::Tenants>,
}

/// The result of a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The new manifest text (the old text itself when nothing changed).
    pub text: String,
    /// Whether `text` differs from the old text.
    pub changed: bool,
    /// The mode the class is in afterwards.
    pub mode: Mode,
    /// A commit message for the promotion commit.
    pub commit_message: String,
}

/// Why a promotion was refused.
#[derive(Debug, Error)]
pub enum PromoteError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "{artifact} failed verification, so it proves nothing:\n  - {}\nrecord a new proof from a build that passes `proof verify`",
        .failures.join("\n  - ")
    )]
    Rejected {
        artifact: String,
        failures: Vec<String>,
    },
    #[error("no class {class:?} in the manifest; known classes: {known}")]
    UnknownClass { class: String, known: String },
    #[error(
        "{artifact} does not cover class {class}:\n  - {}\nrecord a proof of this class's repo and patterns",
        .problems.join("\n  - ")
    )]
    NotCovered {
        artifact: String,
        class: String,
        problems: Vec<String>,
    },
    #[error(
        "refusing mode default for {class}: default-RBE gates are still open:\n  - {}\nclose them first (or promote to executor-backed)",
        .gates.join("\n  - ")
    )]
    GatesOpen { class: String, gates: Vec<String> },
    #[error(
        "class {class} is already {current}; promote does not demote (requested {requested}); edit the manifest by hand in a reviewed commit to demote"
    )]
    Demotion {
        class: String,
        current: &'static str,
        requested: &'static str,
    },
    #[error(
        "the promotion would make the manifest invalid (the artifact's facts do not fit the schema):\n  - {}\nrecord the proof from a complete build",
        .0.problems().join("\n  - ")
    )]
    WouldBeInvalid(ManifestError),
    #[error("promote moves a class to executor-backed or default, not cache-first")]
    CacheFirst,
    #[error(
        "{path} changed while it was being promoted (sha256 {expected} when read, {found} now); nothing was written — re-run the promotion on the new content"
    )]
    ChangedUnderneath {
        path: String,
        expected: String,
        found: String,
    },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Promotes `req.class` in the manifest `old` with the artifact `facts`.
/// Each refusal is its own step, in this order: the artifact verified, the
/// class known, the class covered, the mode allowed, the platform gates
/// closed (for `default`); then the edit ([`record_proof`]).
pub fn promote(
    old: &str,
    facts: &ArtifactFacts,
    req: &PromoteRequest,
) -> Result<Promotion, PromoteError> {
    let manifest = parse_manifest(old)?;
    require_verified(facts)?;
    let class = known_class(&manifest, req)?;
    let mode = req.mode.unwrap_or(class.mode.max(Mode::ExecutorBacked));
    require_covered(&manifest, facts, req, class, mode)?;
    require_mode_allowed(req, class, mode)?;
    if mode == Mode::Default {
        require_gates_closed(&manifest, req)?;
    }
    let record = facts
        .record(&req.location)
        .expect("a verified artifact has a record");

    let mut new = manifest.clone();
    let recorded_location = record_proof(&mut new, req, mode, &record);
    let commit_message = commit_message(&new, &req.class, &record, &recorded_location);
    if new == manifest {
        return Ok(Promotion {
            text: old.to_string(),
            changed: false,
            mode,
            commit_message,
        });
    }
    let text = new.to_canonical();
    parse_manifest(&text).map_err(PromoteError::WouldBeInvalid)?;
    Ok(Promotion {
        changed: text != old,
        text,
        mode,
        commit_message,
    })
}

/// The artifact verified as a per-class proof (trusted signature, the
/// policy's checks).
fn require_verified(facts: &ArtifactFacts) -> Result<(), PromoteError> {
    if facts.verified_per_class() {
        return Ok(());
    }
    let mut failures = facts.failures();
    if failures.is_empty() {
        failures.push("signature: no trusted key verified the signature".into());
    }
    Err(PromoteError::Rejected {
        artifact: facts.name.clone(),
        failures,
    })
}

/// The requested class exists in the manifest.
fn known_class<'m>(
    manifest: &'m Manifest,
    req: &PromoteRequest,
) -> Result<&'m Class, PromoteError> {
    manifest
        .classes
        .get(&req.class)
        .ok_or_else(|| PromoteError::UnknownClass {
            class: req.class.clone(),
            known: manifest
                .classes
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The artifact covers the class: its targets, its outputs bound to
/// attested executions, and its trust (signer, owner) for `mode`.
fn require_covered(
    manifest: &Manifest,
    facts: &ArtifactFacts,
    req: &PromoteRequest,
    class: &Class,
    mode: Mode,
) -> Result<(), PromoteError> {
    let mut problems = facts.coverage_problems(class);
    problems.extend(facts.binding_problems(class));
    problems.extend(facts.trust_problems(
        class,
        mode,
        manifest.allow_unauthenticated_proofs,
        req.owners.as_ref(),
    ));
    if problems.is_empty() {
        return Ok(());
    }
    Err(PromoteError::NotCovered {
        artifact: facts.name.clone(),
        class: req.class.clone(),
        problems,
    })
}

/// Promotion never goes to cache-first and never demotes.
fn require_mode_allowed(
    req: &PromoteRequest,
    class: &Class,
    mode: Mode,
) -> Result<(), PromoteError> {
    if mode == Mode::CacheFirst {
        return Err(PromoteError::CacheFirst);
    }
    if mode < class.mode {
        return Err(PromoteError::Demotion {
            class: req.class.clone(),
            current: class.mode.as_str(),
            requested: mode.as_str(),
        });
    }
    Ok(())
}

/// `default` needs every platform gate closed.
fn require_gates_closed(manifest: &Manifest, req: &PromoteRequest) -> Result<(), PromoteError> {
    let open: Vec<String> = manifest
        .open_platform_gates()
        .into_iter()
        .map(|(id, g)| {
            format!(
                "{id} ({}, owner {}): {}",
                g.status.as_str(),
                g.owner,
                g.blocker.as_deref().unwrap_or("no blocker text")
            )
        })
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    Err(PromoteError::GatesOpen {
        class: req.class.clone(),
        gates: open,
    })
}

/// The edit: the class's mode, its proof record (once per artifact sha256,
/// sorted by date), and its class gates closed with the proof as evidence.
/// Returns the location recorded for the artifact (the first one, when it
/// was already recorded).
fn record_proof(
    new: &mut Manifest,
    req: &PromoteRequest,
    mode: Mode,
    record: &ProofRecord,
) -> String {
    let c = new
        .classes
        .get_mut(&req.class)
        .expect("the class exists (looked up above)");
    c.mode = mode;
    if !c
        .proofs
        .iter()
        .any(|p| p.artifact_sha256 == record.artifact_sha256)
    {
        c.proofs.push(record.clone());
        c.proofs
            .sort_by(|a, b| (&a.date, &a.artifact_sha256).cmp(&(&b.date, &b.artifact_sha256)));
    }
    let recorded_location = c
        .proofs
        .iter()
        .find(|p| p.artifact_sha256 == record.artifact_sha256)
        .map(|p| p.location.clone())
        .unwrap_or_else(|| record.location.clone());
    for id in CLASS_GATES {
        if let Some(g) = c.gates.get_mut(id) {
            g.status = GateStatus::Closed;
            g.blocker = None;
            if !g.evidence.contains(&recorded_location) {
                g.evidence.push(recorded_location.clone());
            }
        }
    }
    recorded_location
}

fn commit_message(
    m: &Manifest,
    class_id: &str,
    r: &crate::model::ProofRecord,
    location: &str,
) -> String {
    let c = &m.classes[class_id];
    format!(
        "rbe-eligibility: promote {class_id} ({repo}) to {mode}\n\n\
         Proof artifact: {location}\n\
         Artifact sha256: {sha}\n\
         Invocation: {inv} (bazel {cmd}, finished {date})\n\
         Executor: {exec} (instance {inst})\n\
         Remote executions: {n}\n\
         Worker images: {images}\n\
         Signed by keyid: {key}\n\
         Patterns: {patterns}\n",
        repo = c.repo,
        mode = c.mode.as_str(),
        sha = r.artifact_sha256,
        inv = r.invocation_id,
        cmd = r.command,
        date = r.date,
        exec = r.executor,
        inst = r.instance_name.as_deref().unwrap_or("(default)"),
        n = r.remote_executions,
        images = r.worker_images.join(", "),
        key = r.signer_keyid,
        patterns = c.patterns.join(" "),
    )
}
