//! The log's leaves on disk: `DIR/leaves`, the RFC 6962 leaf hash of every
//! logged statement, 32 bytes each, in log order, appended and fsynced
//! before anyone is told the leaf's index (like the journal: nothing
//! acknowledged is lost). The interior hashes are rebuilt in memory on
//! open. A crash can leave a torn tail (a partial record, or records that
//! never reached the disk and read as zeros): it was never acknowledged,
//! and is cut off when the writer opens the log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;
use tlog_tiles::Hash;

use crate::tree::{leaf_hash, Tree};

/// An I/O failure of the log file.
#[derive(Debug, Error)]
#[error("transparency log {}: {what}: {source}", path.display())]
pub struct LogError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

struct State {
    file: Option<File>,
    tree: Tree,
    index: HashMap<[u8; 32], u64>,
}

/// The file-backed log (one writer: the server that owns the store).
pub struct FileLog {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog").field("path", &self.path).finish()
    }
}

/// The leaves file of a log directory.
pub fn leaves_path(dir: &Path) -> PathBuf {
    dir.join("leaves")
}

fn read_leaves(bytes: &[u8]) -> Vec<Hash> {
    let mut out = Vec::with_capacity(bytes.len() / 32);
    for c in bytes.chunks_exact(32) {
        let h: [u8; 32] = c.try_into().expect("32-byte chunk");
        if h == [0; 32] {
            break; // never a SHA-256 output: a tail that never reached the disk
        }
        out.push(Hash(h));
    }
    out
}

impl FileLog {
    /// Opens (creating) the log in `dir` for appending, cutting off a torn tail.
    pub fn open(dir: &Path) -> Result<FileLog, LogError> {
        let path = leaves_path(dir);
        let err = |what| {
            let path = path.clone();
            move |source| LogError { path, what, source }
        };
        std::fs::create_dir_all(dir).map_err(err("cannot create the log directory"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err("cannot open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err("cannot read"))?;
        let leaves = read_leaves(&bytes);
        let good = leaves.len() as u64 * 32;
        if good != bytes.len() as u64 {
            file.set_len(good)
                .map_err(err("cannot cut off the torn tail"))?;
            file.sync_all().map_err(err("cannot sync"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(err("cannot seek"))?;
        Ok(Self::with(path, Some(file), leaves))
    }

    /// Reads the log in `dir` as it is now, without writing (beside a
    /// running server; a torn tail is ignored, not cut).
    pub fn read(dir: &Path) -> Result<FileLog, LogError> {
        let path = leaves_path(dir);
        let bytes = std::fs::read(&path).map_err(|source| LogError {
            path: path.clone(),
            what: "cannot read (is this the store of a server with a transparency log?)",
            source,
        })?;
        let leaves = read_leaves(&bytes);
        Ok(Self::with(path, None, leaves))
    }

    fn with(path: PathBuf, file: Option<File>, leaves: Vec<Hash>) -> FileLog {
        let index = leaves
            .iter()
            .enumerate()
            .map(|(i, h)| (h.0, i as u64))
            .collect();
        FileLog {
            path,
            state: Mutex::new(State {
                file,
                tree: Tree::from_leaf_hashes(leaves),
                index,
            }),
        }
    }

    /// Appends `data` (a statement's exact bytes) and syncs; returns its
    /// leaf index. A statement already in the log is not added again: its
    /// index is returned.
    pub fn append(&self, data: &[u8]) -> Result<u64, LogError> {
        Ok(self.append_batch(&[data])?[0])
    }

    /// Appends every statement of `items` not yet in the log, in order, with
    /// one write and one `fdatasync` (a group commit); returns each one's
    /// leaf index. The tree (and so every checkpoint) grows only after the
    /// sync. On a failed write or sync the file is cut back and nothing is
    /// added.
    pub fn append_batch(&self, items: &[&[u8]]) -> Result<Vec<u64>, LogError> {
        let mut st = self.state.lock().expect("log lock");
        let base = st.tree.size();
        let mut out = Vec::with_capacity(items.len());
        let mut new: Vec<Hash> = Vec::new();
        let mut batch: HashMap<[u8; 32], u64> = HashMap::new();
        for d in items {
            let h = leaf_hash(d);
            if let Some(&i) = st.index.get(&h.0).or_else(|| batch.get(&h.0)) {
                out.push(i);
                continue;
            }
            let i = base + new.len() as u64;
            batch.insert(h.0, i);
            new.push(h);
            out.push(i);
        }
        if new.is_empty() {
            return Ok(out);
        }
        let path = self.path.clone();
        let file = st.file.as_mut().ok_or_else(|| LogError {
            path: path.clone(),
            what: "opened read-only",
            source: std::io::Error::other("append on a log opened with FileLog::read"),
        })?;
        let bytes: Vec<u8> = new.iter().flat_map(|h| h.0).collect();
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(source) = written {
            let _ = file.set_len(base * 32);
            let _ = file.seek(SeekFrom::End(0));
            return Err(LogError {
                path,
                what: "cannot append and sync",
                source,
            });
        }
        for h in new {
            let i = st.tree.push(h);
            st.index.insert(h.0, i);
        }
        Ok(out)
    }

    /// Runs `f` on the tree as it is now.
    pub fn with_tree<T>(&self, f: impl FnOnce(&Tree) -> T) -> T {
        f(&self.state.lock().expect("log lock").tree)
    }

    /// The leaf index of `data`, if it is logged.
    pub fn find(&self, data: &[u8]) -> Option<u64> {
        self.state
            .lock()
            .expect("log lock")
            .index
            .get(&leaf_hash(data).0)
            .copied()
    }
}
