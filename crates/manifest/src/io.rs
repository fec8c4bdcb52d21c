//! The file I/O at the edge: reading proof directories and replacing the
//! manifest atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use proof_artifact::{Policy, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::facts::ArtifactFacts;
use crate::promote::{promote, PromoteError, PromoteRequest, Promotion};

/// One `*.proof.tar` of a proofs directory.
#[derive(Debug, Clone)]
pub struct ScannedArtifact {
    pub path: PathBuf,
    /// File name within the directory.
    pub file_name: String,
    /// The verification outcome, or why the file could not be read.
    pub facts: Result<ArtifactFacts, String>,
}

/// Every artifact of a proofs directory, verified once each.
#[derive(Debug, Clone, Default)]
pub struct ProofDir {
    pub artifacts: Vec<ScannedArtifact>,
}

impl ProofDir {
    /// The artifact whose file has this SHA-256.
    pub fn by_sha256(&self, sha: &str) -> Option<&ScannedArtifact> {
        self.artifacts
            .iter()
            .find(|a| matches!(&a.facts, Ok(f) if f.artifact_sha256 == sha))
    }

    /// The artifact with this file name.
    pub fn by_file_name(&self, name: &str) -> Option<&ScannedArtifact> {
        self.artifacts.iter().find(|a| a.file_name == name)
    }
}

/// Every `*.proof.tar` file in `dir` (not recursive), in file-name order.
pub fn proof_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".proof.tar"))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Verifies (exactly as `proof verify`) every `*.proof.tar` in `dir` (not
/// recursive), in file-name order.
pub fn scan_proofs(dir: &Path, trusted: &[VerifyingKey]) -> std::io::Result<ProofDir> {
    let paths = proof_paths(dir)?;
    let policy = Policy::default();
    let artifacts = paths
        .into_iter()
        .map(|path| {
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let facts = proof_artifact::verify_path(&path, trusted, &policy)
                .map(|r| ArtifactFacts::from_report(file_name.clone(), &r, trusted))
                .map_err(|e| e.to_string());
            ScannedArtifact {
                path,
                file_name,
                facts,
            }
        })
        .collect();
    Ok(ProofDir { artifacts })
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the manifest at `path`, applies [`promote`] and, when the text
/// changed, replaces the file atomically ([`replace_if_unchanged`]).
pub fn promote_file(
    path: &Path,
    facts: &ArtifactFacts,
    req: &PromoteRequest,
) -> Result<Promotion, PromoteError> {
    promote_file_with_hook(path, facts, req, || {})
}

/// [`promote_file`] with `before_replace` called between computing the new
/// text and replacing the file (tests use it to change the file underneath).
pub fn promote_file_with_hook(
    path: &Path,
    facts: &ArtifactFacts,
    req: &PromoteRequest,
    before_replace: impl FnOnce(),
) -> Result<Promotion, PromoteError> {
    // A symlinked manifest is written through: the file it points at is
    // replaced (beside itself), the link stays a link.
    let resolved = std::fs::canonicalize(path).map_err(|source| PromoteError::Io {
        what: "resolve the manifest path",
        path: path.display().to_string(),
        source,
    })?;
    let path = resolved.as_path();
    let bytes = std::fs::read(path).map_err(|source| PromoteError::Io {
        what: "read the manifest",
        path: path.display().to_string(),
        source,
    })?;
    let read_sha = sha256_hex(&bytes);
    let old = String::from_utf8(bytes).map_err(|e| PromoteError::Io {
        what: "read the manifest (not UTF-8)",
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let promotion = promote(&old, facts, req)?;
    before_replace();
    if promotion.changed {
        replace_if_unchanged(path, &read_sha, promotion.text.as_bytes())?;
    }
    Ok(promotion)
}

/// Writes `new` to a temporary file beside `path`, fsyncs it, checks that
/// `path` still has the SHA-256 `expected_sha256`, renames the temporary
/// file over `path` and fsyncs the directory. On any failure `path` is
/// untouched and the temporary file removed.
pub fn replace_if_unchanged(
    path: &Path,
    expected_sha256: &str,
    new: &[u8],
) -> Result<(), PromoteError> {
    let io_err = |what: &'static str, p: &Path| {
        let p = p.display().to_string();
        move |source| PromoteError::Io {
            what,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("manifest");
    let tmp = dir.join(format!(".{name}.promote-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(new).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        let now = std::fs::read(path).map_err(io_err("re-read", path))?;
        let found = sha256_hex(&now);
        if found != expected_sha256 {
            return Err(PromoteError::ChangedUnderneath {
                path: path.display().to_string(),
                expected: expected_sha256.to_string(),
                found,
            });
        }
        std::fs::rename(&tmp, path).map_err(io_err("rename over", path))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
