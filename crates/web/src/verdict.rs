//! The proof state of an invocation, read from its signed artifact
//! `PROOFS_DIR/<id>.proof.tar` and verified as `proof verify` does (the
//! server's public key, the default policy: every check the artifact
//! library runs, `executor_attested` included when the proof carries an
//! executor ledger). The web never re-derives a verdict from the stream.
//!
//! | store state | `<id>.proof.tar` | state |
//! |---|---|---|
//! | any | present; every check passes and it is this invocation's stream | `proven` |
//! | any | present; a check fails, or it cannot be read | `not proven` |
//! | open (not finalized) | absent | `pending` |
//! | finalized complete | absent | `pending` (the server is signing it) |
//! | finalized incomplete | absent | `no proof` (no proof is signed for an incomplete stream) |
//! | — (no proofs directory configured) | — | `no proof` |
//!
//! Verdicts are cached by the artifact's sha256 (bounded LRU); a file whose
//! identity (inode, size, mtime) is unchanged is not hashed again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use proof_artifact::{Check, Policy, VerifyingKey};
use proof_store::InvocationRecord;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::Inner;

/// Largest number of cached verdicts (and of cached file digests).
pub(crate) const VERDICT_CACHE_CAP: usize = 4096;

/// Where the signed proofs are and which keys sign them.
#[derive(Clone, Debug)]
pub struct ProofsConfig {
    /// The directory `proof serve` writes `<invocation id>.proof.tar` to.
    pub dir: PathBuf,
    /// The public key(s) a proof must be signed by (the server's own).
    pub trusted: Vec<VerifyingKey>,
}

/// The proof state of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProofState {
    Proven,
    NotProven,
    Pending,
    NoProof,
}

impl ProofState {
    pub const ALL: [ProofState; 4] = [
        ProofState::Proven,
        ProofState::NotProven,
        ProofState::Pending,
        ProofState::NoProof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProofState::Proven => "proven",
            ProofState::NotProven => "not proven",
            ProofState::Pending => "pending",
            ProofState::NoProof => "no proof",
        }
    }
}

/// What verifying one artifact gave; cached by its sha256.
#[derive(Debug)]
pub(crate) struct Verified {
    /// Every check `proof verify` ran, in its order.
    pub checks: Vec<Check>,
    pub sha256: String,
    /// From the signed evidence, when it could be re-derived.
    pub invocation_id: Option<String>,
    pub event_count: Option<u64>,
    /// The client's count of remote executions, as signed.
    pub remote_executions: Option<u64>,
    /// What the executor's ledger says it executed, when the proof has one.
    pub attested_executions: Option<u64>,
}

/// The proof state of one invocation and why.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub state: ProofState,
    pub reason: String,
    /// Every check of the artifact, then `matches_store`; empty without one.
    pub checks: Vec<Check>,
    pub artifact: Option<Arc<Verified>>,
}

impl Verdict {
    fn without_artifact(state: ProofState, reason: impl Into<String>) -> Verdict {
        Verdict {
            state,
            reason: reason.into(),
            checks: Vec::new(),
            artifact: None,
        }
    }

    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The `proof` object of the JSON API; `checks` only when `with_checks`.
    pub fn json(&self, id: &str, with_checks: bool) -> Value {
        let a = self.artifact.as_ref();
        let mut v = json!({
            "state": self.state.as_str(),
            "reason": self.reason,
            "failed_checks": self.failed(),
            "artifact_sha256": a.map(|a| a.sha256.clone()),
            "artifact": a.map(|_| format!("/api/v1/invocations/{id}/artifact")),
            "attested_executions": a.and_then(|a| a.attested_executions),
        });
        if with_checks {
            v["checks"] = serde_json::to_value(&self.checks).unwrap_or(Value::Null);
        }
        v
    }
}

/// A file's identity: while it is unchanged its digest is too (proofs are
/// replaced by rename, which gives a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(-1, |d| d.as_nanos() as i128);
        Stamp {
            len: m.len(),
            ino,
            mtime_ns,
        }
    }
}

/// The bounded caches of [`Inner::verdict`].
pub(crate) struct VerdictCache {
    /// artifact path → (its identity, its sha256).
    digests: Mutex<LruCache<PathBuf, (Stamp, String)>>,
    /// artifact sha256 → what verifying it gave.
    verdicts: Mutex<LruCache<String, Arc<Verified>>>,
}

impl VerdictCache {
    pub fn new(cap: usize) -> VerdictCache {
        VerdictCache {
            digests: Mutex::new(LruCache::new(cap)),
            verdicts: Mutex::new(LruCache::new(cap)),
        }
    }
}

fn sha256_of(f: &mut File) -> std::io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl Inner {
    /// The verified artifact at `path` (cached), `Ok(None)` when absent.
    fn verified(&self, cfg: &ProofsConfig, path: &Path) -> Result<Option<Arc<Verified>>, String> {
        let cache = &self.verdicts;
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        let stamp = Stamp::of(&meta);
        let known = cache
            .digests
            .lock()
            .map_err(|_| "the verdict cache lock is poisoned".to_string())?
            .get(path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, sha)| sha.clone());
        let sha = match known {
            Some(sha) => sha,
            None => {
                let sha = sha256_of(&mut file)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if let Ok(mut d) = cache.digests.lock() {
                    d.insert(path.to_path_buf(), (stamp, sha.clone()));
                }
                sha
            }
        };
        if let Some(v) = cache
            .verdicts
            .lock()
            .ok()
            .and_then(|mut c| c.get(&sha).cloned())
        {
            self.web.verdict_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(v));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let report = proof_artifact::verify(&mut file, &cfg.trusted, &Policy::default())
            .map_err(|e| e.to_string())?;
        self.web.verifications.fetch_add(1, Ordering::Relaxed);
        let ev = report.evidence.as_ref();
        let v = Arc::new(Verified {
            invocation_id: ev.map(|e| e.invocation_id.clone()),
            event_count: ev.map(|e| e.event_count),
            remote_executions: ev.and_then(|e| e.processes.remote_executions),
            attested_executions: ev.and_then(|e| e.attestation.as_ref().map(|a| a.executed)),
            // The file read is the one hashed: the same open handle.
            sha256: report.artifact_sha256,
            checks: report.checks,
        });
        if let Ok(mut c) = cache.verdicts.lock() {
            c.insert(v.sha256.clone(), v.clone());
        }
        Ok(Some(v))
    }

    /// The proof state of `rec` (blocking: may verify an artifact).
    pub(crate) fn verdict(&self, rec: &InvocationRecord) -> Verdict {
        let id = &rec.meta.invocation_id;
        let Some(cfg) = &self.cfg.proofs else {
            return Verdict::without_artifact(
                ProofState::NoProof,
                "this server reads no proofs directory, so nothing it shows is proven",
            );
        };
        if proof_store::validate_invocation_id(id).is_err() {
            return Verdict::without_artifact(
                ProofState::NoProof,
                "the invocation id cannot name a proof file",
            );
        }
        let path = cfg.dir.join(format!("{id}.proof.tar"));
        match self.verified(cfg, &path) {
            Ok(Some(a)) => {
                let mut checks = a.checks.clone();
                checks.push(matches_store(rec, &a));
                let failed: Vec<&str> = checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.name.as_str())
                    .collect();
                let (state, reason) = if failed.is_empty() {
                    (
                        ProofState::Proven,
                        format!(
                            "every one of the {} checks of the signed proof passed",
                            checks.len()
                        ),
                    )
                } else {
                    (
                        ProofState::NotProven,
                        format!("the signed proof fails: {}", failed.join(", ")),
                    )
                };
                Verdict {
                    state,
                    reason,
                    checks,
                    artifact: Some(a),
                }
            }
            Ok(None) if !rec.state.finalized => Verdict::without_artifact(
                ProofState::Pending,
                "the stream is still open; the server signs a proof once it is complete",
            ),
            Ok(None) if rec.state.complete => Verdict::without_artifact(
                ProofState::Pending,
                "the stream is complete and its proof is not signed yet (the server asks the \
                 executor first); if this lasts, the server's log says why signing failed",
            ),
            Ok(None) => Verdict::without_artifact(
                ProofState::NoProof,
                format!(
                    "the stream ended incomplete ({}); no proof is signed for an incomplete stream",
                    rec.state
                        .incomplete_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            ),
            Err(e) => Verdict {
                state: ProofState::NotProven,
                reason: format!("the proof artifact cannot be verified: {e}"),
                checks: vec![Check::new("artifact_readable", false, e)],
                artifact: None,
            },
        }
    }
}

/// The artifact is this invocation's: its signed evidence names the
/// invocation and holds as many BEP events as the store.
fn matches_store(rec: &InvocationRecord, a: &Verified) -> Check {
    const NAME: &str = "matches_store";
    let id = &rec.meta.invocation_id;
    match (&a.invocation_id, a.event_count) {
        (Some(signed), Some(n)) if signed == id && n == rec.state.event_count => Check::new(
            NAME,
            true,
            format!("the signed evidence is invocation {id} with the {n} BEP events stored"),
        ),
        (Some(signed), Some(n)) => Check::new(
            NAME,
            false,
            format!(
                "the artifact signs invocation {signed} with {n} BEP events, but the store holds \
                 invocation {id} with {} events",
                rec.state.event_count
            ),
        ),
        _ => Check::new(
            NAME,
            false,
            "not checked: the signed evidence could not be re-derived",
        ),
    }
}
