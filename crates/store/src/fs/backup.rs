//! `FsStore::backup_to`: a consistent online copy of a directory store, taken beside the
//! process that writes it (`proof backup`).
//!
//! 1. The index is copied as one SQLite snapshot (`VACUUM INTO`, a single read
//!    transaction): every row as the writer had committed it at that instant.
//! 2. Each journal is copied up to the length that snapshot records for it. Journals are
//!    append-only and the writer records a length only once the frames below it are
//!    fsynced, so that prefix is exactly what was durable (and acked) at the snapshot;
//!    bytes appended later are not copied.
//! 3. A journal that vanished between the snapshot and its copy (deleted, or removed by
//!    retention) gets what the live store has now: its row is dropped, or becomes a
//!    retention tombstone.
//! 4. Keys and proofs (`proof.key`, `proof.pub`, `proofs/` with its pending markers) are
//!    copied too when present; proof files are written once by an atomic rename.
//!
//! Every file and directory of the copy is fsynced. The copy is a store: open it with
//! `proof serve --store DEST` (or `FsStore::open`), whose recovery finds nothing to repair.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{lock, FsStore};
use crate::error::StoreError;
use crate::index;
use crate::vfs::Vfs;

/// What a backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    pub dest: PathBuf,
    /// Invocations in the copy (tombstones included).
    pub invocations: u64,
    /// Journals copied, and their bytes.
    pub journals: u64,
    pub journal_bytes: u64,
    /// Invocations of the copy whose journal retention had removed.
    pub tombstones: u64,
    /// Journals gone between the snapshot and their copy (deleted or removed by retention
    /// meanwhile): dropped from the copy, or turned into tombstones.
    pub vanished: Vec<String>,
    /// Proof artifacts (and pending-proof markers) copied.
    pub proof_files: u64,
    /// Key files copied (`proof.key`, `proof.pub`).
    pub key_files: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    StoreError::io(context)
}

fn sync_dir(d: &Path) -> Result<(), StoreError> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("fsync of directory {}", d.display())))
}

/// Copies `from` to `to` (at most `limit` bytes) and fsyncs it; returns the bytes copied.
fn copy_file(from: &Path, to: &Path, limit: Option<u64>) -> std::io::Result<u64> {
    let src = File::open(from)?;
    let mut out = File::create(to)?;
    let n = match limit {
        Some(l) => std::io::copy(&mut src.take(l), &mut out)?,
        None => std::io::copy(&mut &src, &mut out)?,
    };
    out.flush()?;
    out.sync_all()?;
    Ok(n)
}

/// The backup's copy of the index, opened, and what its snapshot holds.
struct IndexCopy {
    path: PathBuf,
    conn: Connection,
    /// Every invocation of the snapshot and the journal length it records.
    rows: Vec<(String, u64)>,
    /// Invocations whose journal retention had removed (tombstones).
    removed: std::collections::HashSet<String>,
}

impl IndexCopy {
    fn ctx(&self, what: &str) -> String {
        format!("{what} in the backup index {}", self.path.display())
    }
}

/// Fails unless `dest` is missing or an empty directory.
fn check_dest_is_empty(dest: &Path) -> Result<(), StoreError> {
    if dest.exists()
        && fs::read_dir(dest)
            .map_err(io(format!("listing {}", dest.display())))?
            .next()
            .is_some()
    {
        return Err(StoreError::Io {
            context: format!(
                "backing up to {}: the directory is not empty; give a new (or empty) directory",
                dest.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    Ok(())
}

impl<V: Vfs> FsStore<V> {
    /// Writes a consistent copy of this store (opened read-only beside a running writer, or
    /// for writing) to `dest`, which must not exist or be empty. See the module docs.
    pub fn backup_to(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        check_dest_is_empty(dest)?;
        let journals = dest.join("journals");
        fs::create_dir_all(&journals).map_err(io(format!("creating {}", journals.display())))?;
        // 1. One snapshot of the index.
        let snap = self.snapshot_index(dest)?;
        let mut rep = BackupReport {
            dest: dest.to_path_buf(),
            invocations: snap.rows.len() as u64,
            tombstones: snap.removed.len() as u64,
            ..BackupReport::default()
        };
        // 2. and 3. Each journal up to the snapshot's length.
        let shards = self.copy_journals(&snap, &journals, &mut rep)?;
        let index_path = snap.path.clone();
        drop(snap);
        File::open(&index_path)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("fsync of {}", index_path.display())))?;
        // 4. Keys and proofs.
        self.copy_keys(dest, &mut rep)?;
        self.copy_proofs(dest, &mut rep)?;
        for d in shards.iter().chain([&journals, &dest.to_path_buf()]) {
            sync_dir(d)?;
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(rep)
    }

    /// Step 1: `VACUUM INTO DEST/index.sqlite` (one read transaction), deletions that were
    /// in progress finished in the copy, and the copy's rows.
    fn snapshot_index(&self, dest: &Path) -> Result<IndexCopy, StoreError> {
        let index_path = dest.join("index.sqlite");
        let target = index_path
            .to_str()
            .ok_or_else(|| StoreError::Io {
                context: format!("{} is not UTF-8", index_path.display()),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?
            .to_string();
        lock(&self.db)
            .execute("VACUUM INTO ?1", [&target])
            .map_err(StoreError::index(format!(
                "copying the index to {}",
                index_path.display()
            )))?;
        let copy = Connection::open(&index_path).map_err(StoreError::index(format!(
            "opening {}",
            index_path.display()
        )))?;
        let ctx = |what: &str| format!("{what} in the backup index {}", index_path.display());
        // Deletions in progress at the snapshot: finished in the copy.
        copy.execute_batch(
            "DELETE FROM lifecycle WHERE invocation_id IN \
               (SELECT invocation_id FROM invocations WHERE deleted = 1) AND invocation_id <> '';
             DELETE FROM retention WHERE invocation_id IN \
               (SELECT invocation_id FROM invocations WHERE deleted = 1);
             DELETE FROM invocations WHERE deleted = 1;",
        )
        .map_err(StoreError::index(ctx("finishing deletions")))?;
        let removed = index::removed_ids(&copy)?;
        let rows: Vec<(String, u64)> = copy
            .prepare("SELECT invocation_id, journal_bytes FROM invocations")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                    .and_then(|it| it.collect())
            })
            .map_err(StoreError::index(ctx("listing invocations")))?;
        Ok(IndexCopy {
            path: index_path,
            conn: copy,
            rows,
            removed,
        })
    }

    /// Step 2: each journal of the snapshot copied up to the length it records (step 3
    /// for one that vanished meanwhile); returns the shard directories created.
    fn copy_journals(
        &self,
        snap: &IndexCopy,
        journals: &Path,
        rep: &mut BackupReport,
    ) -> Result<std::collections::BTreeSet<PathBuf>, StoreError> {
        let mut shards = std::collections::BTreeSet::new();
        for (id, len) in &snap.rows {
            let (id, len) = (id.as_str(), *len);
            if snap.removed.contains(id) || crate::validate_invocation_id(id).is_err() {
                continue;
            }
            let live = self.journal_path(id);
            let rel = live
                .strip_prefix(&self.journals)
                .expect("journal paths are under journals/")
                .to_path_buf();
            let to = journals.join(&rel);
            let shard = to.parent().expect("a shard directory").to_path_buf();
            if shards.insert(shard.clone()) {
                fs::create_dir_all(&shard).map_err(io(format!("creating {}", shard.display())))?;
            }
            match copy_file(&live, &to, Some(len)) {
                Ok(n) if n == len => {
                    rep.journals += 1;
                    rep.journal_bytes += n;
                }
                Ok(n) => {
                    return Err(StoreError::Corrupt {
                        path: live,
                        offset: n,
                        reason: format!(
                            "the journal is shorter ({n} bytes) than its index row says ({len})"
                        ),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = fs::remove_file(&to);
                    self.mirror_vanished(snap, id, &live, e, rep)?;
                }
                Err(e) => {
                    return Err(StoreError::Io {
                        context: format!("copying journal {} to {}", live.display(), to.display()),
                        source: e,
                    })
                }
            }
        }
        Ok(shards)
    }

    /// Step 3: the journal of `id` is gone since the snapshot; the copy mirrors what the
    /// live store has now (a tombstone, or no row at all).
    fn mirror_vanished(
        &self,
        snap: &IndexCopy,
        id: &str,
        live: &Path,
        gone: std::io::Error,
        rep: &mut BackupReport,
    ) -> Result<(), StoreError> {
        let copy = &snap.conn;
        let db = lock(&self.db);
        let now = index::removed(&db, id)?;
        let row = index::get(&db, id)?.filter(|r| !r.deleted);
        drop(db);
        match (row, now) {
            (Some(_), Some(t)) => {
                index::set_removed(copy, id, &t)?;
                rep.tombstones += 1;
            }
            (None, _) => {
                copy.execute(
                    "DELETE FROM invocations WHERE invocation_id = ?1",
                    params![id],
                )
                .and_then(|_| {
                    copy.execute(
                        "DELETE FROM lifecycle WHERE invocation_id = ?1",
                        params![id],
                    )
                })
                .map_err(StoreError::index(snap.ctx("dropping a deleted invocation")))?;
                rep.invocations -= 1;
            }
            (Some(_), None) => {
                return Err(StoreError::Io {
                    context: format!(
                        "copying journal {} (it vanished, but the store still lists it)",
                        live.display()
                    ),
                    source: gone,
                })
            }
        }
        rep.vanished.push(id.to_string());
        Ok(())
    }

    /// Step 4a: `proof.key` (kept private) and `proof.pub`, when present.
    fn copy_keys(&self, dest: &Path, rep: &mut BackupReport) -> Result<(), StoreError> {
        for name in ["proof.key", "proof.pub"] {
            let from = self.dir.join(name);
            if from.is_file() {
                copy_file(&from, &dest.join(name), None)
                    .map_err(io(format!("copying {}", from.display())))?;
                rep.key_files += 1;
            }
        }
        #[cfg(unix)]
        if dest.join("proof.key").exists() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dest.join("proof.key"), fs::Permissions::from_mode(0o600))
                .map_err(io("restricting the copied proof.key".into()))?;
        }
        Ok(())
    }

    /// Step 4b: the proof files and pending-proof markers (not the temporary files of a
    /// proof being written).
    fn copy_proofs(&self, dest: &Path, rep: &mut BackupReport) -> Result<(), StoreError> {
        for sub in ["proofs", "proofs/.pending"] {
            let from = self.dir.join(sub);
            if !from.is_dir() {
                continue;
            }
            let to = dest.join(sub);
            fs::create_dir_all(&to).map_err(io(format!("creating {}", to.display())))?;
            for e in fs::read_dir(&from).map_err(io(format!("listing {}", from.display())))? {
                let e = e.map_err(io(format!("listing {}", from.display())))?;
                let name = e.file_name();
                let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
                // Temporary files of a proof being written are not proofs yet.
                if !is_file || name.to_string_lossy().starts_with('.') {
                    continue;
                }
                match copy_file(&e.path(), &to.join(&name), None) {
                    Ok(_) => rep.proof_files += 1,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(StoreError::Io {
                            context: format!("copying {}", e.path().display()),
                            source: err,
                        })
                    }
                }
            }
            sync_dir(&to)?;
        }
        Ok(())
    }
}
