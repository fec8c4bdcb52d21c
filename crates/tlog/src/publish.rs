//! The server's log: the leaves file plus the origin and the key that signs
//! its checkpoints. Appends a statement and hands back its inclusion
//! sidecar; answers `/log/checkpoint` and `/log/tile/...`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use thiserror::Error;

use crate::checkpoint::{sign_checkpoint, CheckpointError};
use crate::file::{FileLog, LogError};
use crate::inclusion::Inclusion;
use crate::shared::SharedLog;
use crate::tree::Tree;

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

/// Called once a submitted statement is logged (its leaf synced, its
/// inclusion proof against a checkpoint signed after the sync), or not.
pub type Done = Box<dyn FnOnce(Result<Inclusion, String>) + Send>;

struct Job {
    id: String,
    statement: Vec<u8>,
    done: Done,
}

/// Where a published log's leaves are: a file of the directory store, or
/// a database shared by replicas.
#[derive(Debug)]
pub enum Leaves {
    File(FileLog),
    Shared(SharedLog),
}

impl Leaves {
    fn append_batch(&self, items: &[&[u8]]) -> Result<Vec<u64>, String> {
        match self {
            Leaves::File(f) => f.append_batch(items).map_err(|e| e.to_string()),
            Leaves::Shared(s) => s.append_batch(items),
        }
    }

    /// Runs `f` on the tree (a shared log is brought up to date first; if
    /// the database cannot be read, on the tree as last seen).
    pub fn with_tree<T>(&self, f: impl FnOnce(&Tree) -> T) -> T {
        match self {
            Leaves::File(l) => l.with_tree(f),
            Leaves::Shared(s) => {
                if let Err(e) = s.refresh() {
                    eprintln!("transparency log: cannot read the shared log: {e}");
                }
                s.with_tree(f)
            }
        }
    }
}

/// A log the server appends to and publishes.
pub struct Published {
    pub log: Leaves,
    pub origin: String,
    dir: PathBuf,
    key: SigningKey,
    jobs: Mutex<Vec<Job>>,
    wake: Condvar,
    in_flight: Mutex<HashSet<String>>,
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
    /// Opens (creating) the log in `dir` (for a directory store:
    /// `STORE/tlog`) and starts its committer thread ([`Published::submit`]).
    pub fn open(dir: &Path, origin: &str, key: SigningKey) -> Result<Arc<Published>, PublishError> {
        Self::start(Leaves::File(FileLog::open(dir)?), dir, origin, key)
    }

    /// Starts publishing a log shared by replicas; `dir` (e.g. a directory
    /// of the shared proofs directory) gets the latest checkpoint file.
    pub fn open_shared(
        shared: SharedLog,
        dir: &Path,
        origin: &str,
        key: SigningKey,
    ) -> Result<Arc<Published>, PublishError> {
        std::fs::create_dir_all(dir).map_err(|source| PublishError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::start(Leaves::Shared(shared), dir, origin, key)
    }

    fn start(
        log: Leaves,
        dir: &Path,
        origin: &str,
        key: SigningKey,
    ) -> Result<Arc<Published>, PublishError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(CheckpointError::Note(format!(
                "the log origin {origin:?} cannot name a key: it must be non-empty, without spaces or '+'"
            ))
            .into());
        }
        let p = Arc::new(Published {
            log,
            origin: origin.to_string(),
            dir: dir.to_path_buf(),
            key,
            jobs: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            in_flight: Mutex::new(HashSet::new()),
        });
        p.write_checkpoint()?;
        let weak = Arc::downgrade(&p);
        std::thread::Builder::new()
            .name("tlog-commit".into())
            .spawn(move || commit_loop(&weak))
            .map_err(|source| PublishError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(p)
    }

    /// Queues `statement` (of invocation `id`) for the next group commit:
    /// the committer thread appends everything queued with one `fdatasync`,
    /// signs one checkpoint after it, and calls each `done` with its
    /// inclusion proof. Returns at once.
    pub fn submit(&self, id: &str, statement: Vec<u8>, done: Done) {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(id.to_string());
        self.jobs.lock().expect("jobs lock").push(Job {
            id: id.to_string(),
            statement,
            done,
        });
        self.wake.notify_one();
    }

    /// `id` was submitted and its `done` has not returned yet.
    pub fn in_flight(&self, id: &str) -> bool {
        self.in_flight.lock().expect("in-flight lock").contains(id)
    }

    fn commit(&self, jobs: Vec<Job>) {
        let items: Vec<&[u8]> = jobs.iter().map(|j| j.statement.as_slice()).collect();
        let result = self.log.append_batch(&items);
        let signed = result.and_then(|indexes| {
            let (size, root, paths) = self.log.with_tree(|t| {
                let size = t.size();
                let paths: Vec<_> = indexes
                    .iter()
                    .map(|&i| t.inclusion(i, size).expect("a logged leaf is in the tree"))
                    .collect();
                (size, t.root(), paths)
            });
            let note =
                sign_checkpoint(&self.origin, size, root, &self.key).map_err(|e| e.to_string())?;
            let _ = write_replace(&self.dir.join("checkpoint"), note.as_bytes(), false);
            Ok(indexes
                .into_iter()
                .zip(paths)
                .map(|(i, p)| Inclusion::new(i, size, root, &p, note.clone()))
                .collect::<Vec<_>>())
        });
        match signed {
            Ok(incs) => {
                for (job, inc) in jobs.into_iter().zip(incs) {
                    let id = job.id.clone();
                    (job.done)(Ok(inc));
                    self.in_flight.lock().expect("in-flight lock").remove(&id);
                }
            }
            Err(e) => {
                for job in jobs {
                    let id = job.id.clone();
                    (job.done)(Err(e.clone()));
                    self.in_flight.lock().expect("in-flight lock").remove(&id);
                }
            }
        }
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
        let index = self
            .log
            .append_batch(&[statement])
            .map_err(|e| PublishError::Write {
                path: self.dir.clone(),
                source: std::io::Error::other(e),
            })?[0];
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

fn commit_loop(weak: &Weak<Published>) {
    loop {
        let Some(p) = weak.upgrade() else { return };
        let jobs = {
            let guard = p.jobs.lock().expect("jobs lock");
            let (mut guard, _) = p
                .wake
                .wait_timeout_while(guard, Duration::from_secs(1), |j| j.is_empty())
                .expect("jobs lock");
            std::mem::take(&mut *guard)
        };
        if !jobs.is_empty() {
            p.commit(jobs);
        }
    }
}
