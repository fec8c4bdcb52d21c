//! Writes `PROOFS/INVOCATION_ID.vsa.dsse.json`, the SLSA verification
//! summary of the server's own verdict on each proof it signs
//! ([`proof_artifact::vsa`]), atomically beside the artifact.

use std::io::Write;
use std::path::{Path, PathBuf};

use proof_artifact::{Report, SigningKey};

/// Who the server says it is in its VSAs.
#[derive(Debug, Clone)]
pub struct VsaConfig {
    /// `verifier.id`: the server's URI (`proof serve --verifier-id`).
    pub verifier_id: String,
    /// With a public base URL the `resourceUri` is the invocation's results
    /// page `BASE/invocations/ID`; otherwise `urn:rbe-proof:invocation:ID`.
    pub results_base: Option<String>,
}

impl VsaConfig {
    /// The `resourceUri` of invocation `id`.
    pub fn resource_uri(&self, id: &str) -> String {
        match &self.results_base {
            Some(base) => format!("{}/invocations/{id}", base.trim_end_matches('/')),
            None => format!("urn:rbe-proof:invocation:{id}"),
        }
    }
}

/// Where the VSA of the artifact at `artifact` is written.
pub fn path(artifact: &Path) -> PathBuf {
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    artifact.with_file_name(proof_artifact::vsa::file_name(&name))
}

/// Signs and writes the VSA of `report` (the verdict on `artifact`):
/// temporary file, fsync, rename, fsync of the directory.
pub fn write(
    cfg: &VsaConfig,
    key: &SigningKey,
    id: &str,
    artifact: &Path,
    report: &Report,
) -> std::io::Result<PathBuf> {
    let (name, statement) = proof_artifact::vsa::subject_of(artifact);
    let policy = proof_artifact::Policy::default();
    let resource_uri = cfg.resource_uri(id);
    let ctx = proof_artifact::vsa::Context {
        verifier_id: &cfg.verifier_id,
        resource_uri: &resource_uri,
        time_verified: time::OffsetDateTime::now_utc(),
        artifact_name: &name,
        statement: statement.as_deref(),
        policy: &policy,
    };
    let bytes = proof_artifact::vsa::sign(report, &ctx, key);
    let out = path(artifact);
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&out).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(out)
}
