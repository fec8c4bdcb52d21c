//! Verification of an artifact: layout, signature, digests, re-derivation,
//! then policy, each reported as a named [`Check`].

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use proof_evidence::{Evidence, EvidenceBuilder, EvidenceError};
use proof_stream::delimited::DelimitedReader;
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::dsse::Envelope;
use crate::hashio::HashReader;
use crate::policy::Policy;
use crate::statement::Statement;
use crate::tar::{
    scan, Member, Scanned, TarError, CORROBORATION, EVENTS, EXECLOG, EXECUTOR, GRPCLOG, ORIGIN,
    STATEMENT,
};

/// Names of the integrity checks, in report order (policy checks follow).
pub const INTEGRITY_CHECKS: [&str; 4] = ["envelope", "signature", "digests", "rederived"];

/// One named check of a [`Report`].
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

/// The outcome of verifying one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check passed.
    pub ok: bool,
    /// `envelope`, `signature`, `digests`, `rederived`, then the policy's
    /// checks, in that order.
    pub checks: Vec<Check>,
    /// The re-derived evidence, present when `rederived` passed.
    pub evidence: Option<Evidence>,
    /// Lowercase hex SHA-256 of the artifact file.
    pub artifact_sha256: String,
}

impl Report {
    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The first failed check.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

/// The artifact could not be read at all (distinct from a failed check).
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("cannot open the artifact {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file; pass the path of a .proof.tar artifact", .0.display())]
    NotAFile(PathBuf),
    #[error("reading the artifact failed: {0}")]
    Io(#[from] io::Error),
}

/// Verifies the artifact file at `path`.
pub fn verify_path(
    path: &Path,
    trusted: &[VerifyingKey],
    policy: &Policy,
) -> Result<Report, VerifyError> {
    let open_err = |source| VerifyError::Open {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(open_err)?;
    if !meta.is_file() {
        return Err(VerifyError::NotAFile(path.to_path_buf()));
    }
    let file = File::open(path).map_err(open_err)?;
    verify(file, trusted, policy)
}

/// Verifies an artifact read from `input` (read twice: once sequentially for
/// layout and digests, then the events and exec-log members again, streamed,
/// to re-derive the evidence; nothing but the statement and summary is held
/// in memory).
pub fn verify<R: Read + Seek>(
    mut input: R,
    trusted: &[VerifyingKey],
    policy: &Policy,
) -> Result<Report, VerifyError> {
    let mut checks: Vec<Check> = Vec::new();
    input.seek(SeekFrom::Start(0))?;
    let scanned = match scan(BufReader::with_capacity(256 * 1024, &mut input)) {
        Ok(s) => Ok(s),
        Err(TarError::Io(e)) => return Err(VerifyError::Io(e)),
        Err(TarError::Layout(msg)) => Err(msg),
    };
    let artifact_sha256 = match &scanned {
        Ok(s) => hex::encode(s.sha256),
        Err(_) => {
            input.seek(SeekFrom::Start(0))?;
            let mut h = Sha256::new();
            io::copy(&mut input, &mut h)?;
            hex::encode(h.finalize())
        }
    };

    let mut evidence = None;
    let outcome = integrity(&mut input, scanned, trusted, &mut checks, &mut evidence);
    if let Err(e) = outcome {
        return Err(VerifyError::Io(e));
    }
    // Fill in the integrity checks that were not reached.
    let failed = checks.iter().find(|c| !c.ok).map(|c| c.name.clone());
    for name in INTEGRITY_CHECKS.iter().skip(checks.len()) {
        let earlier = failed.clone().unwrap_or_default();
        checks.push(Check::new(
            name,
            false,
            format!("not checked: {earlier} failed"),
        ));
    }
    match (&evidence, checks.iter().find(|c| !c.ok)) {
        (Some(ev), None) => checks.extend(policy.evaluate(ev)),
        (_, first) => {
            let earlier = first.map_or("rederived", |c| c.name.as_str()).to_string();
            for c in policy.checks_for(None) {
                checks.push(Check::new(
                    c.name(),
                    false,
                    format!("not checked: {earlier} failed"),
                ));
            }
        }
    }
    Ok(Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
        evidence,
        artifact_sha256,
    })
}

/// Runs the four integrity checks, pushing each result; stops at the first
/// failure. Err only for I/O errors of the underlying input.
fn integrity<R: Read + Seek>(
    input: &mut R,
    scanned: Result<Scanned, String>,
    trusted: &[VerifyingKey],
    checks: &mut Vec<Check>,
    evidence: &mut Option<Evidence>,
) -> io::Result<()> {
    // envelope
    let scanned = match scanned {
        Ok(s) => s,
        Err(msg) => {
            checks.push(Check::new("envelope", false, msg));
            return Ok(());
        }
    };
    let envelope = match Envelope::parse(&scanned.statement) {
        Ok(e) => e,
        Err(e) => {
            checks.push(Check::new("envelope", false, format!("{STATEMENT}: {e}")));
            return Ok(());
        }
    };
    checks.push(Check::new(
        "envelope",
        true,
        format!(
            "canonical tar with {} members; DSSE envelope of {} with {} signature(s)",
            scanned.members.len(),
            envelope.payload_type,
            envelope.signatures.len()
        ),
    ));

    // signature
    match envelope.verify(trusted) {
        Ok(keyid) => checks.push(Check::new(
            "signature",
            true,
            format!("ed25519 signature by trusted key {keyid}"),
        )),
        Err(msg) => {
            checks.push(Check::new("signature", false, msg));
            return Ok(());
        }
    }

    // digests
    let statement = match Statement::parse(&envelope.payload) {
        Ok(s) => s,
        Err(msg) => {
            checks.push(Check::new("digests", false, msg));
            return Ok(());
        }
    };
    let members: Vec<&Member> = scanned
        .members
        .iter()
        .filter(|m| m.name != STATEMENT)
        .collect();
    if let Err(msg) = compare_subjects(&statement, &members) {
        checks.push(Check::new("digests", false, msg));
        return Ok(());
    }
    checks.push(Check::new(
        "digests",
        true,
        format!("{} members match the signed sha256 digests", members.len()),
    ));

    // rederived
    match rederive(input, &scanned) {
        Ok(Ok(ev)) => {
            let derived = serde_json::to_value(&ev).map_err(io::Error::other)?;
            if derived == statement.predicate {
                checks.push(Check::new(
                    "rederived",
                    true,
                    format!(
                        "evidence re-derived from {} BEP events equals the signed predicate",
                        ev.event_count
                    ),
                ));
                *evidence = Some(ev);
            } else {
                checks.push(Check::new(
                    "rederived",
                    false,
                    differences(&derived, &statement.predicate),
                ));
            }
        }
        Ok(Err(msg)) => checks.push(Check::new("rederived", false, msg)),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn compare_subjects(statement: &Statement, members: &[&Member]) -> Result<(), String> {
    for m in members {
        let want = hex::encode(m.sha256);
        match statement.subject.iter().find(|s| s.name == m.name) {
            None => {
                return Err(format!(
                    "member {} is not a subject of the signed statement",
                    m.name
                ))
            }
            Some(s) if s.digest.sha256 != want => {
                return Err(format!(
                    "member {} has sha256 {want} but the signed statement says {}",
                    m.name, s.digest.sha256
                ))
            }
            Some(_) => {}
        }
    }
    let names: Vec<&str> = statement.subject.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<&str> = members.iter().map(|m| m.name).collect();
    if names != expected {
        return Err(format!(
            "the signed subjects are [{}] but the artifact's members are [{}]",
            names.join(", "),
            expected.join(", ")
        ));
    }
    Ok(())
}

/// Top-level fields whose values differ.
fn differences(derived: &serde_json::Value, signed: &serde_json::Value) -> String {
    let (Some(d), Some(s)) = (derived.as_object(), signed.as_object()) else {
        return "the signed predicate is not a JSON object".to_string();
    };
    let mut keys: Vec<&str> = d
        .iter()
        .filter(|(k, v)| s.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(s.keys().filter(|k| !d.contains_key(*k)).map(String::as_str))
        .collect();
    keys.dedup();
    format!(
        "the evidence re-derived from the included stream differs from the signed predicate in: {}",
        keys.join(", ")
    )
}

/// Streams the events (and exec-log) members through a fresh
/// [`EvidenceBuilder`], re-hashing them on the way. Ok(Err) is a failed
/// check, Err an I/O error of the input.
fn rederive<R: Read + Seek>(
    input: &mut R,
    scanned: &Scanned,
) -> io::Result<Result<Evidence, String>> {
    let mut builder = EvidenceBuilder::new();
    let events = scanned
        .member(EVENTS)
        .ok_or_else(|| io::Error::other("scan returned no events member"))?;
    input.seek(SeekFrom::Start(events.offset))?;
    let mut hashed = HashReader::new(BufReader::with_capacity(
        256 * 1024,
        (&mut *input).take(events.size),
    ));
    let decoded: Result<(), String> = (|| {
        // Bounded relative to the member's size: a signed bomb is refused too.
        let decoder = proof_evidence::bounded::BoundedZstd::new(&mut hashed)
            .map_err(|e| format!("{EVENTS} is not a zstd stream: {e}"))?;
        let budget = decoder.budget();
        for (index, event) in DelimitedReader::new(decoder).enumerate() {
            let event = event.map_err(|e| format!("{EVENTS}: {}", EvidenceError::BepFraming(e)))?;
            budget
                .check_records(index as u64 + 1)
                .map_err(|e| format!("{EVENTS}: {e}"))?;
            builder
                .push_event(&event)
                .map_err(|e| format!("{EVENTS}: event #{index}: {e}"))?;
        }
        Ok(())
    })();
    let (sha, _) = hashed.drain()?;
    if sha != events.sha256 {
        return Ok(Err(format!("{EVENTS} changed while it was being verified")));
    }
    if let Err(msg) = decoded {
        return Ok(Err(msg));
    }
    if let Some(log) = scanned.member(EXECLOG) {
        input.seek(SeekFrom::Start(log.offset))?;
        let mut hashed = HashReader::new(BufReader::new((&mut *input).take(log.size)));
        let pushed = builder.push_exec_log(&mut hashed);
        let (sha, _) = hashed.drain()?;
        if sha != log.sha256 {
            return Ok(Err(format!(
                "{EXECLOG} changed while it was being verified"
            )));
        }
        if let Err(e) = pushed {
            return Ok(Err(format!("{EXECLOG}: {e}")));
        }
    }
    for name in [GRPCLOG, CORROBORATION, EXECUTOR, ORIGIN] {
        let Some(m) = scanned.member(name) else {
            continue;
        };
        input.seek(SeekFrom::Start(m.offset))?;
        let mut hashed = HashReader::new(BufReader::new((&mut *input).take(m.size)));
        let pushed = match name {
            GRPCLOG => builder.push_remote_grpc_log(&mut hashed),
            CORROBORATION => builder.push_corroboration(&mut hashed),
            EXECUTOR => builder.push_executor_ledger(&mut hashed),
            _ => builder.push_origin(&mut hashed),
        };
        let (sha, _) = hashed.drain()?;
        if sha != m.sha256 {
            return Ok(Err(format!("{name} changed while it was being verified")));
        }
        if let Err(e) = pushed {
            return Ok(Err(format!("{name}: {e}")));
        }
    }
    Ok(builder
        .finish()
        .map_err(|e| format!("re-deriving the evidence failed: {e}")))
}
