//! `proof verify --vsa-out FILE --vsa-key KEY` (a SLSA verification summary
//! of an offline verdict, e.g. the PR check's) and `proof verify-vsa`
//! (for consumers of such summaries). Format: docs/proof-format.md §8.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_artifact::{vsa, Policy, Report, SigningKey};
use sha2::{Digest, Sha256};

use crate::{EXIT_FAILED, EXIT_OK};

#[derive(clap::Args)]
pub struct VsaOutArgs {
    /// Also write a SLSA verification summary (DSSE, in-toto Statement v1,
    /// predicateType https://slsa.dev/verification_summary/v1) of the verdict
    /// to FILE; needs exactly one artifact and --vsa-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "vsa_key",
        conflicts_with = "manifest"
    )]
    vsa_out: Option<PathBuf>,
    /// With --vsa-out: the verifier's signing key (PKCS#8 PEM).
    #[arg(long, value_name = "KEY", requires = "vsa_out")]
    vsa_key: Option<PathBuf>,
    /// With --vsa-out: verifier.id (default: urn:rbe-proof:verifier:KEYID).
    #[arg(long, value_name = "URI", requires = "vsa_out")]
    vsa_verifier_id: Option<String>,
    /// With --vsa-out: resourceUri (default: urn:rbe-proof:invocation:ID).
    #[arg(long, value_name = "URI", requires = "vsa_out")]
    vsa_resource_uri: Option<String>,
}

/// A VSA to write after verifying.
pub struct VsaOut {
    out: PathBuf,
    key: SigningKey,
    verifier_id: String,
    resource_uri: Option<String>,
}

impl VsaOutArgs {
    /// Loads the key up front (before verifying anything).
    pub fn prepare(&self, artifacts: &[PathBuf]) -> Result<Option<VsaOut>> {
        let (Some(out), Some(key)) = (&self.vsa_out, &self.vsa_key) else {
            return Ok(None);
        };
        if artifacts.len() != 1 {
            bail!(
                "--vsa-out summarizes one verdict: name exactly one artifact ({} given)",
                artifacts.len()
            );
        }
        let key = crate::signing::load_signing_key(key)?;
        let verifier_id = self.vsa_verifier_id.clone().unwrap_or_else(|| {
            format!(
                "urn:rbe-proof:verifier:{}",
                proof_artifact::keyid(&key.verifying_key())
            )
        });
        Ok(Some(VsaOut {
            out: out.clone(),
            key,
            verifier_id,
            resource_uri: self.vsa_resource_uri.clone(),
        }))
    }
}

impl VsaOut {
    /// Signs and writes the VSA of `report`, the verdict on `artifact`.
    pub fn write(&self, artifact: &Path, report: &Report, policy: &Policy) -> Result<()> {
        let (name, statement) = vsa::subject_of(artifact);
        let id = report
            .evidence
            .as_ref()
            .map(|e| e.invocation_id.clone())
            .unwrap_or_else(|| name.trim_end_matches(".proof.tar").to_string());
        let resource_uri = self
            .resource_uri
            .clone()
            .unwrap_or_else(|| format!("urn:rbe-proof:invocation:{id}"));
        let ctx = vsa::Context {
            verifier_id: &self.verifier_id,
            resource_uri: &resource_uri,
            time_verified: time::OffsetDateTime::now_utc(),
            artifact_name: &name,
            statement: statement.as_deref(),
            policy,
        };
        let bytes = vsa::sign(report, &ctx, &self.key);
        let dir = match self.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.out)
            .with_context(|| format!("cannot write {}", self.out.display()))?;
        eprintln!(
            "wrote {} ({})",
            self.out.display(),
            if report.ok { vsa::PASSED } else { vsa::FAILED }
        );
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct VerifyVsaArgs {
    /// The summary (ID.vsa.dsse.json).
    file: PathBuf,
    /// Trusted public key(s) of the verifier that signed it (SPKI PEM); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Also require this level in verifiedLevels (e.g. RBE_PROOF_EXECUTOR_ATTESTED_V1); repeatable.
    #[arg(long = "expect-level", value_name = "LEVEL")]
    expect_levels: Vec<String>,
    /// Also require the subject's SHA-256 to be this artifact file's (a VSA
    /// of another artifact is otherwise accepted).
    #[arg(long, value_name = "ARTIFACT")]
    artifact: Option<PathBuf>,
    /// Print the statement and the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit 0: signature good, PASSED, every expected level present, subject
/// matches; 1: any of those not so; 2: unreadable input.
pub fn verify_vsa(a: VerifyVsaArgs) -> Result<u8> {
    let keys = crate::signing::load_verifying_keys(&a.keys)?;
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut problems = Vec::new();
    let verified = match vsa::verify(&bytes, &keys) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Some(v) = &verified {
        if !v.passed() {
            problems.push("verificationResult is FAILED".to_string());
        }
        for l in &a.expect_levels {
            if !vsa::LEVELS.contains(&l.as_str()) {
                bail!(
                    "--expect-level {l}: rbe-proof states the levels {}",
                    vsa::LEVELS.join(", ")
                );
            }
            if !v.has_level(l) {
                problems.push(format!(
                    "verifiedLevels {:?} does not name {l}",
                    v.statement.predicate.verified_levels
                ));
            }
        }
        if let Some(art) = &a.artifact {
            let data =
                std::fs::read(art).with_context(|| format!("cannot read {}", art.display()))?;
            let got = hex::encode(Sha256::digest(&data));
            let want = &v.statement.subject[0].digest.sha256;
            if &got != want {
                problems.push(format!(
                    "the summary is of an artifact with sha256 {want}, but {} has sha256 {got}",
                    art.display()
                ));
            }
        }
    }
    let ok = problems.is_empty();
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "vsa": a.file,
                "ok": ok,
                "problems": problems,
                "keyid": verified.as_ref().map(|v| v.keyid.clone()),
                "statement": verified.as_ref().map(|v| &v.statement),
            }))?
        );
    } else {
        outln!("{}: {}", a.file.display(), if ok { "PASS" } else { "FAIL" });
        if let Some(v) = &verified {
            let p = &v.statement.predicate;
            outln!(
                "  subject {} sha256 {}",
                v.statement.subject[0].name,
                v.statement.subject[0].digest.sha256
            );
            outln!(
                "  {} by {} at {} (keyid {})",
                p.verification_result,
                p.verifier.id,
                p.time_verified,
                v.keyid
            );
            outln!("  levels {}", p.verified_levels.join(", "));
            outln!(
                "  policy {} sha256 {}",
                p.policy.uri,
                p.policy.digest.sha256
            );
            outln!("  resource {}", p.resource_uri);
        }
        for pr in &problems {
            outln!("  FAIL {pr}");
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}
