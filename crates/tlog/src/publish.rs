//! The server's log: the leaves file plus the origin and the key that signs
//! its checkpoints. Appends a statement and hands back its inclusion
//! sidecar; answers `/log/checkpoint` and `/log/tile/...`.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use thiserror::Error;

use crate::checkpoint::{sign_checkpoint, CheckpointError};
use crate::file::{FileLog, LogError};
use crate::inclusion::Inclusion;

/// Why a statement could not be logged.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A log the server appends to and publishes.
pub struct Published {
    pub log: FileLog,
    pub origin: String,
    dir: PathBuf,
    key: SigningKey,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("origin", &self.origin)
            .field("log", &self.log)
            .finish()
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replace(path, bytes, true)
}

/// Replaces `path` with `bytes` by a rename (readers see the old or the new
/// file, never a part); with `sync`, durably.
pub fn write_replace(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if sync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Published {
    /// Opens (creating) the log in `dir` (for a directory store: `STORE/tlog`).
    pub fn open(dir: &Path, origin: &str, key: SigningKey) -> Result<Published, PublishError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(CheckpointError::Note(format!(
                "the log origin {origin:?} cannot name a key: it must be non-empty, without spaces or '+'"
            ))
            .into());
        }
        let p = Published {
            log: FileLog::open(dir)?,
            origin: origin.to_string(),
            dir: dir.to_path_buf(),
            key,
        };
        p.write_checkpoint()?;
        Ok(p)
    }

    /// The signed checkpoint of the log as it is now.
    pub fn checkpoint(&self) -> Result<String, CheckpointError> {
        let (size, root) = self.log.with_tree(|t| (t.size(), t.root()));
        sign_checkpoint(&self.origin, size, root, &self.key)
    }

    /// Writes `DIR/checkpoint` (what `proof log --store` reads). Not
    /// synced: it is derived from the leaves, and one lost to a crash is
    /// an older, equally valid checkpoint (rewritten at the next start).
    fn write_checkpoint(&self) -> Result<String, PublishError> {
        let note = self.checkpoint()?;
        let path = self.dir.join("checkpoint");
        write_replace(&path, note.as_bytes(), false)
            .map_err(|source| PublishError::Write { path, source })?;
        Ok(note)
    }

    /// Appends `statement` (idempotent: a statement already logged keeps
    /// its index) and returns its inclusion proof against a checkpoint
    /// signed now.
    pub fn log_statement(&self, statement: &[u8]) -> Result<Inclusion, PublishError> {
        let index = self.log.append(statement)?;
        let (size, root, path) = self.log.with_tree(|t| {
            let size = t.size();
            (
                size,
                t.root(),
                t.inclusion(index, size)
                    .expect("a logged leaf is in the tree"),
            )
        });
        let note = sign_checkpoint(&self.origin, size, root, &self.key)?;
        // Best effort for readers of the store; the sidecar carries its own.
        let _ = write_replace(&self.dir.join("checkpoint"), note.as_bytes(), false);
        Ok(Inclusion::new(index, size, root, &path, note))
    }

    /// The bytes of hash tile `path` (`tile/L/N[.p/W]`) of the log now.
    pub fn tile(&self, path: &str) -> Option<Vec<u8>> {
        self.log.with_tree(|t| t.tile(path, t.size()))
    }
}
