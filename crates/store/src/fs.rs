//! `FsStore`: journals on the local file system plus a SQLite index.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::error::StoreError;
use crate::index;
use crate::journal::{self, JournalReader, ReadError};
use crate::types::{
    check_owner, validate_build_id, validate_invocation_id, AppendFlags, InvocationMeta,
    InvocationRecord, InvocationState, JournalRecord, JournalRemoved, LifecycleEvent, ListFilter,
};
use crate::vfs::{RealFs, Vfs, VfsFile};
use crate::{RecordIter, Store};

mod backup;
pub use backup::BackupReport;

/// A torn or corrupt journal tail found and cut by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub invocation_id: String,
    pub path: PathBuf,
    /// Length the file was cut to (header plus every good frame).
    pub good_len: u64,
    /// Length the file had before.
    pub file_len: u64,
    /// Why the first bad frame was rejected.
    pub reason: String,
    /// Where the cut bytes were saved for inspection.
    pub quarantined_to: Option<PathBuf>,
    /// Last sequence number that survived.
    pub last_seq: u64,
}

/// What `FsStore::open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Journals that were scanned.
    pub scanned: u64,
    /// Torn tails that were cut.
    pub torn: Vec<TornTail>,
    /// Invocations whose index row was rebuilt from the journal header (row was missing).
    pub rebuilt_rows: Vec<String>,
    /// Invocations whose index state disagreed with the journal and was corrected.
    pub corrected_states: Vec<String>,
    /// Index rows whose journal file is gone (marked finalized and incomplete).
    pub missing_journals: Vec<String>,
    /// Deletions interrupted by a crash, finished now.
    pub finished_deletes: Vec<String>,
    /// Retention removals interrupted by a crash (tombstone written, journal file still
    /// there), finished now.
    pub finished_removals: Vec<String>,
    /// Leftover temporary files of interrupted journal creation, removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Files that could not be recovered (unreadable header, I/O errors); left untouched.
    pub errors: Vec<(PathBuf, String)>,
}

impl RecoveryReport {
    /// True if nothing had to be repaired.
    pub fn is_clean(&self) -> bool {
        self.torn.is_empty()
            && self.rebuilt_rows.is_empty()
            && self.corrected_states.is_empty()
            && self.missing_journals.is_empty()
            && self.finished_deletes.is_empty()
            && self.finished_removals.is_empty()
            && self.removed_temp_files.is_empty()
            && self.errors.is_empty()
    }
}

/// An invocation with an open journal, cached while it is being appended to.
struct Live<F> {
    file: F,
    state: InvocationState,
    /// Who the invocation belongs to (fixed when it was created).
    tenant: Option<String>,
    /// The index row lags behind `state` (an index write failed); retried on the next call.
    index_dirty: bool,
    /// Batches were written by [`Store::append_unsynced`] but not yet fsynced (nor
    /// recorded in the index): the next durable append, `sync` or finalization does both.
    unsynced: bool,
    poisoned: Option<String>,
}

struct Slot<F> {
    /// Removed from the map: whoever locked it must look it up again.
    evicted: bool,
    live: Option<Live<F>>,
}

impl<F> Default for Slot<F> {
    fn default() -> Self {
        Slot {
            evicted: false,
            live: None,
        }
    }
}

/// Live invocations by id, each behind its own lock.
type Slots<F> = HashMap<String, Arc<Mutex<Slot<F>>>>;

/// The embedded store. See the crate docs and `docs/store.md`.
///
/// [`FsStore::open`] opens it for writing: one writer per directory, held by a lock file.
/// [`FsStore::open_read_only`] opens a reader beside that writer: the read half of [`Store`]
/// works, every write fails with [`StoreError::ReadOnly`].
///
/// Journal files and directories are written through a [`Vfs`]: [`RealFs`] (`std::fs`) unless
/// a test opens the store with [`FsStore::open_with`].
pub struct FsStore<V: Vfs = RealFs> {
    vfs: V,
    dir: PathBuf,
    journals: PathBuf,
    db: Mutex<Connection>,
    slots: Mutex<Slots<V::File>>,
    /// Invocations whose one-time work runs now ([`Store::exclusive`]); one process owns
    /// the directory, so an in-process set is exclusive across processes too.
    exclusive: Mutex<std::collections::HashSet<String>>,
    report: RecoveryReport,
    /// zstd contexts and buffers reused from one append to the next.
    encoders: journal::EncoderPool,
    /// The writer's lock on `DIR/writer.lock` (released when dropped); `None` for a reader.
    writer_lock: Option<File>,
}

impl<V: Vfs> std::fmt::Debug for FsStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore")
            .field("dir", &self.dir)
            .field("read_only", &self.writer_lock.is_none())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; the journal is the truth.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl FsStore {
    /// Opens (creating if needed) a store in `dir` and recovers it: finishes interrupted
    /// deletions, cuts torn journal tails, and rebuilds index state from the journals.
    /// What was repaired is in [`FsStore::recovery_report`].
    ///
    /// One process owns a store directory for writing: a second `open` of the same directory
    /// (in any process) fails with [`StoreError::Locked`] while the first is alive. Readers
    /// ([`FsStore::open_read_only`]) are not affected.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        FsStore::open_with(dir, RealFs)
    }

    /// Opens an existing store for reading, beside the process that may be writing it
    /// (`proof serve`). Takes no lock, creates nothing, repairs nothing.
    ///
    /// Readers see what the writer has committed: the index through SQLite WAL (committed
    /// transactions only), and each journal up to the length the index records for it,
    /// which the writer updates only after the frames are complete and fsynced, so a frame
    /// being appended concurrently is never read. Every write method fails with
    /// [`StoreError::ReadOnly`]. A torn tail left by a crash is not read either: it lies
    /// beyond the recorded length, and the next [`FsStore::open`] cuts it.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let index_path = dir.join("index.sqlite");
        if !index_path.is_file() {
            return Err(StoreError::NoStore {
                dir: dir.to_path_buf(),
                reason: if dir.exists() {
                    format!("{} does not exist", index_path.display())
                } else {
                    "the directory does not exist".into()
                },
            });
        }
        let conn = index::open_read_only(&index_path)?;
        Ok(FsStore {
            dir: dir.to_path_buf(),
            journals: dir.join("journals"),
            db: Mutex::new(conn),
            slots: Mutex::new(HashMap::new()),
            exclusive: Mutex::new(std::collections::HashSet::new()),
            report: RecoveryReport::default(),
            encoders: journal::EncoderPool::default(),
            writer_lock: None,
            vfs: RealFs,
        })
    }
}

impl<V: Vfs> FsStore<V> {
    /// [`FsStore::open`] with journal files written through `vfs` (tests use it to simulate
    /// power cuts; see [`crate::vfs`]).
    pub fn open_with(dir: &Path, vfs: V) -> Result<Self, StoreError> {
        let journals = dir.join("journals");
        let created = !dir.is_dir();
        vfs.create_dir_all(&journals)
            .map_err(StoreError::io(format!(
                "creating store directory {}",
                journals.display()
            )))?;
        // Make `journals/` (and a store directory created just now) survive a power cut:
        // the journal creation fsyncs only `journals/` and the shard, not the entries above.
        let mut synced = vec![dir.to_path_buf()];
        if created {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            synced.push(parent.unwrap_or(Path::new(".")).to_path_buf());
        }
        for d in synced {
            vfs.sync_dir(&d).map_err(StoreError::io(format!(
                "fsync of directory {}",
                d.display()
            )))?;
        }
        let lock = lock_writer(dir)?;
        let conn = index::open(&dir.join("index.sqlite"))?;
        let mut store = FsStore {
            dir: dir.to_path_buf(),
            journals,
            db: Mutex::new(conn),
            slots: Mutex::new(HashMap::new()),
            exclusive: Mutex::new(std::collections::HashSet::new()),
            report: RecoveryReport::default(),
            encoders: journal::EncoderPool::default(),
            writer_lock: Some(lock),
            vfs,
        };
        store.report = store.recover()?;
        Ok(store)
    }

    /// True if opened with [`FsStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writer_lock.is_none()
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        self.vfs.sync_dir(dir).map_err(StoreError::io(format!(
            "fsync of directory {}",
            dir.display()
        )))
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.is_read_only() {
            return Err(StoreError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// What recovery found when the store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard_dir(&self, id: &str) -> PathBuf {
        self.journals
            .join(format!("{:02x}", crc32fast::hash(id.as_bytes()) & 0xff))
    }

    /// Path of the journal of `id` (which must be valid).
    pub fn journal_path(&self, id: &str) -> PathBuf {
        self.shard_dir(id).join(format!("{id}.journal"))
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    fn recover(&self) -> Result<RecoveryReport, StoreError> {
        let mut rep = RecoveryReport::default();
        let mut by_id = self.finish_deletions(&mut rep)?;
        let removed = self.finish_removals(&mut by_id, &mut rep)?;
        let seen = self.scan_journals(&by_id, &removed, &mut rep)?;
        self.mark_missing_journals(&by_id, &seen, &mut rep)?;
        log_recovery(&rep);
        Ok(rep)
    }

    /// Recovery, step 1: deletions a crash interrupted are finished (journal, then row).
    /// Returns the live rows: id → (finalized, journal length the index records).
    fn finish_deletions(
        &self,
        rep: &mut RecoveryReport,
    ) -> Result<HashMap<String, (bool, u64)>, StoreError> {
        let rows = index::brief_all(&lock(&self.db))?;
        let mut by_id: HashMap<String, (bool, u64)> = HashMap::new();
        for (id, finalized, jlen, deleted) in rows {
            if deleted || validate_invocation_id(&id).is_err() {
                let path = self.journal_path(&id);
                if validate_invocation_id(&id).is_ok() {
                    match self.vfs.remove_file(&path) {
                        Ok(()) => self.sync_dir(&self.shard_dir(&id))?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            rep.errors.push((path, format!("finishing deletion: {e}")));
                            continue;
                        }
                    }
                }
                index::remove(&lock(&self.db), &id)?;
                rep.finished_deletes.push(id);
                continue;
            }
            by_id.insert(id, (finalized, jlen));
        }
        Ok(by_id)
    }

    /// Recovery, step 2: retention tombstones. The journal is gone or goes now (the
    /// tombstone was written, with synchronous=FULL, before the file was removed); those
    /// ids leave `by_id`. Returns every tombstoned id.
    fn finish_removals(
        &self,
        by_id: &mut HashMap<String, (bool, u64)>,
        rep: &mut RecoveryReport,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let removed = index::removed_ids(&lock(&self.db))?;
        for id in &removed {
            if by_id.remove(id).is_none() || validate_invocation_id(id).is_err() {
                continue;
            }
            let path = self.journal_path(id);
            match self.vfs.remove_file(&path) {
                Ok(()) => {
                    self.sync_dir(&self.shard_dir(id))?;
                    rep.finished_removals.push(id.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => rep
                    .errors
                    .push((path, format!("finishing a retention removal: {e}"))),
            }
        }
        Ok(removed)
    }

    /// Recovery, step 3: every journal file on disk. Temporary files go; a journal whose
    /// row is finalized with its exact length is trusted; any other is scanned (torn tail
    /// cut, state recomputed). Returns the ids of the journals found.
    fn scan_journals(
        &self,
        by_id: &HashMap<String, (bool, u64)>,
        removed: &std::collections::HashSet<String>,
        rep: &mut RecoveryReport,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let shards = fs::read_dir(&self.journals).map_err(StoreError::io(format!(
            "listing {}",
            self.journals.display()
        )))?;
        for shard in shards {
            let shard = shard.map_err(StoreError::io("listing journal shards"))?;
            if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let entries = fs::read_dir(shard.path()).map_err(StoreError::io(format!(
                "listing {}",
                shard.path().display()
            )))?;
            for ent in entries {
                let ent = ent.map_err(StoreError::io("listing journals"))?;
                let path = ent.path();
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.ends_with(".journal.tmp") {
                    self.vfs.remove_file(&path).map_err(StoreError::io(format!(
                        "removing temporary file {}",
                        path.display()
                    )))?;
                    rep.removed_temp_files.push(path);
                    continue;
                }
                let Some(id) = name.strip_suffix(".journal") else {
                    continue;
                };
                if validate_invocation_id(id).is_err() || self.journal_path(id) != path {
                    rep.errors
                        .push((path, "unexpected file in the journal directory".into()));
                    continue;
                }
                seen.insert(id.to_string());
                if removed.contains(id) {
                    // A tombstone whose file could not be removed above (reported there).
                    continue;
                }
                let file_len = ent.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                match by_id.get(id) {
                    Some(&(true, jlen)) if jlen == file_len => continue,
                    _ => {}
                }
                rep.scanned += 1;
                if let Err(e) = self.recover_one(id, by_id.contains_key(id), rep) {
                    rep.errors.push((path, e.to_string()));
                }
            }
        }
        Ok(seen)
    }

    /// Recovery, step 4: a row whose journal file is missing is finalized as incomplete
    /// (unless it already was).
    fn mark_missing_journals(
        &self,
        by_id: &HashMap<String, (bool, u64)>,
        seen: &std::collections::HashSet<String>,
        rep: &mut RecoveryReport,
    ) -> Result<(), StoreError> {
        for (id, (finalized, _)) in by_id {
            if seen.contains(id) {
                continue;
            }
            let db = lock(&self.db);
            if let Some(row) = index::get(&db, id)? {
                let mut st = row.state;
                if !finalized || st.complete {
                    st.finalized = true;
                    st.complete = false;
                    st.incomplete_reason = Some("journal file missing at recovery".into());
                    index::with_full_sync(&db, |c| index::update_state(c, id, &st))?;
                }
            }
            rep.missing_journals.push(id.clone());
        }
        Ok(())
    }

    /// Scans one journal, cuts a torn tail, and writes the recomputed state to the index.
    fn recover_one(
        &self,
        id: &str,
        has_row: bool,
        rep: &mut RecoveryReport,
    ) -> Result<InvocationState, StoreError> {
        let path = self.journal_path(id);
        let mut file = self
            .vfs
            .open_read_write(&path)
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        let file_len = file
            .file_len()
            .map_err(StoreError::io(format!("stat of {}", path.display())))?;
        let scan = journal::scan_reader(BufReader::with_capacity(1 << 20, &mut file), file_len)
            .map_err(StoreError::io(format!("reading {}", path.display())))?;
        let Some(meta) = scan.meta.clone() else {
            let e = scan.error.unwrap_or_else(|| journal::DecodeError {
                offset: 0,
                reason: "bad header".into(),
            });
            return Err(StoreError::Corrupt {
                path,
                offset: e.offset,
                reason: e.reason,
            });
        };
        if meta.invocation_id != id {
            return Err(StoreError::Corrupt {
                path,
                offset: 0,
                reason: format!("header names invocation {:?}", meta.invocation_id),
            });
        }
        if let Some(err) = &scan.error {
            let quarantined_to = self.quarantine(id, &mut file, scan.good_len, file_len);
            file.set_len(scan.good_len)
                .and_then(|_| file.sync_all())
                .map_err(StoreError::io(format!(
                    "cutting the torn tail of {} at {}",
                    path.display(),
                    scan.good_len
                )))?;
            rep.torn.push(TornTail {
                invocation_id: id.to_string(),
                path: path.clone(),
                good_len: scan.good_len,
                file_len,
                reason: format!("at offset {}: {}", err.offset, err.reason),
                quarantined_to,
                last_seq: scan.state.last_seq,
            });
        }
        let db = lock(&self.db);
        let mut state = scan.state;
        match index::get(&db, id)? {
            Some(row) if has_row => {
                state.finalized = row.state.finalized;
                state.complete = row.state.complete;
                state.incomplete_reason = row.state.incomplete_reason.clone();
                if row.state != state {
                    rep.corrected_states.push(id.to_string());
                    index::update_state(&db, id, &state)?;
                }
            }
            _ => {
                index::insert(&db, &meta, &state)?;
                rep.rebuilt_rows.push(id.to_string());
            }
        }
        Ok(state)
    }

    /// Copies the bytes about to be cut into `DIR/quarantine/` (best effort).
    /// Quarantine copies are diagnostics, not data: they go to `std::fs` directly.
    fn quarantine(&self, id: &str, file: &mut V::File, from: u64, to: u64) -> Option<PathBuf> {
        use std::io::{Seek, SeekFrom};
        let qdir = self.quarantine_dir();
        let dest = qdir.join(format!("{id}.{from}.{}.tail", now_ms()));
        let r = (|| -> std::io::Result<()> {
            fs::create_dir_all(&qdir)?;
            file.seek(SeekFrom::Start(from))?;
            let mut out = File::create(&dest)?;
            std::io::copy(&mut file.take(to.saturating_sub(from)), &mut out)?;
            out.sync_all()
        })();
        r.ok().map(|_| dest)
    }

    /// Finds (or creates) the slot of `id`, locks it and runs `f`. Slots that end up
    /// without a live journal are dropped from the map.
    fn with_slot<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Slot<V::File>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            let arc = lock(&self.slots).entry(id.to_string()).or_default().clone();
            let mut slot = lock(&arc);
            if slot.evicted {
                continue;
            }
            let r = f(&mut slot);
            if slot.live.is_none() {
                slot.evicted = true;
                let mut map = lock(&self.slots);
                if map.get(id).is_some_and(|a| Arc::ptr_eq(a, &arc)) {
                    map.remove(id);
                }
            }
            return r;
        }
    }

    /// Opens the journal of an existing, unfinalized invocation for appending.
    fn load_live(&self, id: &str) -> Result<Live<V::File>, StoreError> {
        let row = index::get(&lock(&self.db), id)?;
        let Some(row) = row.filter(|r| !r.deleted) else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if row.state.finalized {
            return Err(StoreError::AlreadyFinalized(id.to_string()));
        }
        let path = self.journal_path(id);
        let file = self.vfs.open_append(&path).map_err(StoreError::io(format!(
            "opening journal {} for appending",
            path.display()
        )))?;
        let len = file
            .file_len()
            .map_err(StoreError::io(format!("stat of {}", path.display())))?;
        let state = if len != row.state.journal_bytes {
            // Only possible if a write failed after open; re-run recovery for this journal.
            let mut rep = RecoveryReport::default();
            let s = self.recover_one(id, true, &mut rep)?;
            tracing::warn!(invocation_id = %id, ?rep, "journal length disagreed with the index; recovered");
            s
        } else {
            row.state
        };
        Ok(Live {
            file,
            state,
            tenant: row.meta.tenant,
            index_dirty: false,
            unsynced: false,
            poisoned: None,
        })
    }

    fn create_journal(&self, meta: &InvocationMeta) -> Result<u64, StoreError> {
        let id = &meta.invocation_id;
        let shard = self.shard_dir(id);
        self.vfs
            .create_dir_all(&shard)
            .map_err(StoreError::io(format!(
                "creating journal directory {}",
                shard.display()
            )))?;
        let path = self.journal_path(id);
        let tmp = shard.join(format!("{id}.journal.tmp"));
        let header = journal::encode_header(meta);
        let ctx = format!("creating journal {}", tmp.display());
        let mut f = self.vfs.create(&tmp).map_err(StoreError::io(ctx.clone()))?;
        f.write_all(&header)
            .and_then(|_| f.sync_all())
            .map_err(StoreError::io(ctx))?;
        self.vfs
            .rename(&tmp, &path)
            .map_err(StoreError::io(format!(
                "renaming {} to {}",
                tmp.display(),
                path.display()
            )))?;
        self.sync_dir(&shard)?;
        self.sync_dir(&self.journals)?;
        Ok(header.len() as u64)
    }

    /// fsyncs what [`Store::append_unsynced`] wrote and records it in the index. A failed
    /// fsync poisons the journal: the kernel may have dropped the pages it could not
    /// write, so nothing after the last good fsync can be vouched for.
    fn sync_live(&self, id: &str, live: &mut Live<V::File>) -> Result<(), StoreError> {
        if !live.unsynced {
            return Ok(());
        }
        if let Some(reason) = &live.poisoned {
            return Err(StoreError::Poisoned {
                id: id.to_string(),
                reason: reason.clone(),
            });
        }
        if let Err(e) = live.file.sync_data() {
            live.poisoned = Some(format!("fsync of unsynced batches failed ({e})"));
            return Err(StoreError::Io {
                context: format!("syncing journal {}", self.journal_path(id).display()),
                source: e,
            });
        }
        live.unsynced = false;
        live.index_dirty = true;
        self.flush_dirty(id, live);
        Ok(())
    }

    /// [`Store::open_invocation`], holding the invocation's slot.
    fn open_locked(
        &self,
        slot: &Slot<V::File>,
        meta: &InvocationMeta,
    ) -> Result<InvocationState, StoreError> {
        let id = meta.invocation_id.as_str();
        validate_invocation_id(id)?;
        if let Some(b) = &meta.build_id {
            validate_build_id(b)?;
        }
        let existing = index::get(&lock(&self.db), id)?;
        if let Some(row) = existing.filter(|r| !r.deleted) {
            check_owner(id, row.meta.tenant.as_deref(), meta.tenant.as_deref())?;
            // A live journal may be ahead of the index if an index write failed.
            return Ok(match &slot.live {
                Some(live) => live.state.clone(),
                None => row.state,
            });
        }
        let len = self.create_journal(meta)?;
        let state = InvocationState {
            journal_bytes: len,
            ..Default::default()
        };
        index::insert(&lock(&self.db), meta, &state)?;
        Ok(state)
    }

    /// [`Store::append`] (`durable`) or [`Store::append_unsynced`]; with `owner`,
    /// [`Store::append_as`].
    fn append_with(
        &self,
        invocation_id: &str,
        owner: Option<&InvocationMeta>,
        records: &[JournalRecord],
        flags: AppendFlags,
        durable: bool,
    ) -> Result<InvocationState, StoreError> {
        self.writable()?;
        let id = invocation_id;
        validate_invocation_id(id)?;
        self.with_slot(id, |slot| {
            if slot.live.is_none() {
                if let Some(meta) = owner {
                    // Created (its tenant written) before anything is appended, or
                    // refused if it exists for another tenant.
                    self.open_locked(slot, meta)?;
                }
                slot.live = Some(self.load_live(id)?);
            }
            let live = slot.live.as_mut().expect("just loaded");
            if let Some(meta) = owner {
                check_owner(id, live.tenant.as_deref(), meta.tenant.as_deref())?;
            }
            if let Some(reason) = &live.poisoned {
                return Err(StoreError::Poisoned {
                    id: id.to_string(),
                    reason: reason.clone(),
                });
            }
            journal::check_batch(id, live.state.last_seq, records)?;
            let expected = live.state.last_seq + 1;
            if records.is_empty() && !flags.any() {
                return Ok(live.state.clone());
            }
            let mut enc = self
                .encoders
                .get()
                .map_err(StoreError::io("creating a zstd context"))?;
            let buf = enc
                .encode_batch(expected, records, flags)
                .map_err(StoreError::io("compressing a journal frame"))?;

            Self::write_frame(live, buf, durable, &self.journal_path(id))?;
            live.state = advanced(&live.state, records, flags, buf.len() as u64);
            if !durable {
                // Recorded in the index once synced.
                live.unsynced = true;
                return Ok(live.state.clone());
            }
            live.unsynced = false;
            // The data is durable: a failing index write must not fail the append (the caller
            // would resend records that are already stored). Recovery repairs the index.
            if let Err(e) = index::update_state(&lock(&self.db), id, &live.state) {
                tracing::warn!(invocation_id = %id, error = %e, "index update after append failed; will retry");
                live.index_dirty = true;
            }
            Ok(live.state.clone())
        })
    }

    /// Appends one encoded frame to the journal (fsynced when `durable`). On failure the
    /// file is put back to its last good length, or the journal is poisoned when that
    /// cannot be trusted (a truncate failed, or unsynced batches came before).
    fn write_frame(
        live: &mut Live<V::File>,
        frame: &[u8],
        durable: bool,
        path: &Path,
    ) -> Result<(), StoreError> {
        let written = live.file.write_all(frame).and_then(|_| {
            if durable {
                live.file.sync_data()
            } else {
                Ok(())
            }
        });
        let Err(e) = written else {
            return Ok(());
        };
        if live.unsynced {
            // Earlier unsynced batches may be what the failed fsync lost.
            live.poisoned = Some(format!(
                "appending failed ({e}) with unsynced batches before it"
            ));
        } else {
            // Put the file back to its last good length so the next append starts clean.
            let good = live.state.journal_bytes;
            if let Err(e2) = live.file.set_len(good).and_then(|_| live.file.sync_data()) {
                live.poisoned = Some(format!("write failed ({e}), then truncate failed ({e2})"));
            }
        }
        Err(StoreError::Io {
            context: format!("appending to journal {}", path.display()),
            source: e,
        })
    }

    fn flush_dirty(&self, id: &str, live: &mut Live<V::File>) {
        if live.index_dirty {
            match index::update_state(&lock(&self.db), id, &live.state) {
                Ok(()) => live.index_dirty = false,
                Err(e) => {
                    tracing::warn!(invocation_id = %id, error = %e, "index update failed again")
                }
            }
        }
    }
}

impl<V: Vfs> Store for FsStore<V> {
    fn open_invocation(&self, meta: &InvocationMeta) -> Result<InvocationState, StoreError> {
        self.writable()?;
        self.with_slot(&meta.invocation_id, |slot| self.open_locked(slot, meta))
    }

    fn append_as(
        &self,
        meta: &InvocationMeta,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(&meta.invocation_id, Some(meta), records, flags, true)
    }

    fn append(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(invocation_id, None, records, flags, true)
    }

    fn append_unsynced(
        &self,
        invocation_id: &str,
        records: &[JournalRecord],
        flags: AppendFlags,
    ) -> Result<InvocationState, StoreError> {
        self.append_with(invocation_id, None, records, flags, false)
    }

    fn sync(&self, invocation_id: &str) -> Result<(), StoreError> {
        self.writable()?;
        validate_invocation_id(invocation_id)?;
        self.with_slot(invocation_id, |slot| match slot.live.as_mut() {
            Some(live) => self.sync_live(invocation_id, live),
            None => Ok(()),
        })
    }

    fn state(&self, invocation_id: &str) -> Result<Option<InvocationState>, StoreError> {
        validate_invocation_id(invocation_id)?;
        let slot = lock(&self.slots).get(invocation_id).cloned();
        if let Some(slot) = slot {
            if let Some(live) = &lock(&slot).live {
                return Ok(Some(live.state.clone()));
            }
        }
        Ok(index::get(&lock(&self.db), invocation_id)?
            .filter(|r| !r.deleted)
            .map(|r| r.state))
    }

    fn read(&self, invocation_id: &str) -> Result<RecordIter, StoreError> {
        let id = invocation_id;
        let Some(state) = self.state(id)? else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if let Some(t) = index::removed(&lock(&self.db), id)? {
            return Err(StoreError::JournalRemoved {
                id: id.to_string(),
                at_ms: t.at_ms,
                proof_file: t.proof_file,
            });
        }
        let path = self.journal_path(id);
        let file = File::open(&path).map_err(StoreError::io(format!(
            "opening journal {}",
            path.display()
        )))?;
        // Read only what was durable at this point; a concurrent append may be mid-write.
        let limited = BufReader::with_capacity(256 << 10, file).take(state.journal_bytes);
        let (reader, _meta) = JournalReader::open(limited).map_err(|e| read_err(&path, e))?;
        Ok(Box::new(FrameIter {
            reader,
            path,
            current: Vec::new().into_iter(),
            done: false,
        }))
    }

    fn mark_complete(
        &self,
        invocation_id: &str,
        complete: bool,
        reason: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let id = invocation_id;
        validate_invocation_id(id)?;
        let summary = summary.to_string();
        self.with_slot(id, |slot| {
            let mut state = match slot.live.as_mut() {
                Some(live) => {
                    self.sync_live(id, live)?;
                    self.flush_dirty(id, live);
                    live.state.clone()
                }
                None => match index::get(&lock(&self.db), id)?.filter(|r| !r.deleted) {
                    Some(row) => row.state,
                    None => return Err(StoreError::NotFound(id.to_string())),
                },
            };
            state.finalized = true;
            state.complete = complete;
            state.incomplete_reason = if complete {
                None
            } else {
                Some(reason.unwrap_or("unspecified").to_string())
            };
            let db = lock(&self.db);
            index::with_full_sync(&db, |c| {
                let tx = c
                    .unchecked_transaction()
                    .map_err(StoreError::index("begin"))?;
                index::update_state(&tx, id, &state)?;
                index::set_summary(&tx, id, &summary)?;
                tx.commit()
                    .map_err(StoreError::index("committing finalization"))
            })?;
            // Finalized invocations take no appends: close the journal.
            slot.live = None;
            Ok(())
        })
    }

    fn record_lifecycle(
        &self,
        build_id: &str,
        invocation_id: Option<&str>,
        tenant: Option<&str>,
        event: LifecycleEvent,
    ) -> Result<(), StoreError> {
        self.writable()?;
        validate_build_id(build_id)?;
        if let Some(id) = invocation_id {
            validate_invocation_id(id)?;
        }
        let db = lock(&self.db);
        index::with_full_sync(&db, |c| {
            index::insert_lifecycle(
                c,
                build_id,
                invocation_id,
                tenant,
                &event,
                now_ms(),
                crate::MAX_PENDING_LIFECYCLE_ROWS,
            )
        })
    }

    fn get(&self, invocation_id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        validate_invocation_id(invocation_id)?;
        // A writer's live journal may be ahead of its index row; a reader has only the row.
        let live = if self.is_read_only() {
            None
        } else {
            self.state(invocation_id)?
        };
        let db = lock(&self.db);
        let Some(mut row) = index::get(&db, invocation_id)?.filter(|r| !r.deleted) else {
            return Ok(None);
        };
        if let Some(s) = live {
            row.state = s;
        }
        index::to_record(&db, row).map(Some)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<InvocationRecord>, StoreError> {
        let db = lock(&self.db);
        index::list(&db, filter)?
            .into_iter()
            .map(|row| index::to_record(&db, row))
            .collect()
    }

    fn delete(&self, invocation_id: &str) -> Result<(), StoreError> {
        self.writable()?;
        let id = invocation_id;
        validate_invocation_id(id)?;
        self.with_slot(id, |slot| {
            slot.live = None;
            let db = lock(&self.db);
            if index::get(&db, id)?.is_none() {
                return Ok(());
            }
            // Tombstone first so a crash in between is finished by recovery, not undone.
            index::with_full_sync(&db, |c| index::set_deleted(c, id))?;
            let path = self.journal_path(id);
            match self.vfs.remove_file(&path) {
                Ok(()) => self.sync_dir(&self.shard_dir(id))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        context: format!("deleting journal {}", path.display()),
                        source: e,
                    })
                }
            }
            index::remove(&db, id)
        })
    }

    fn exclusive(
        &self,
        invocation_id: &str,
        f: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        validate_invocation_id(invocation_id)?;
        if !lock(&self.exclusive).insert(invocation_id.to_string()) {
            return Ok(false);
        }
        struct Held<'a, V: Vfs>(&'a FsStore<V>, &'a str);
        impl<V: Vfs> Drop for Held<'_, V> {
            fn drop(&mut self) {
                lock(&self.0.exclusive).remove(self.1);
            }
        }
        let _held = Held(self, invocation_id);
        f().map(|()| true)
    }

    /// Writes the tombstone first (`synchronous=FULL`), then unlinks the journal and
    /// fsyncs its shard: a crash in between leaves a tombstone whose file recovery removes.
    fn remove_journal(
        &self,
        invocation_id: &str,
        proof_file: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.writable()?;
        let id = invocation_id;
        validate_invocation_id(id)?;
        self.with_slot(id, |slot| {
            let db = lock(&self.db);
            let Some(row) = index::get(&db, id)?.filter(|r| !r.deleted) else {
                return Err(StoreError::NotFound(id.to_string()));
            };
            if index::removed(&db, id)?.is_some() {
                return Ok(0);
            }
            if !row.state.finalized {
                return Err(StoreError::NotFinalized(id.to_string()));
            }
            slot.live = None;
            let path = self.journal_path(id);
            let freed = fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or(row.state.journal_bytes);
            let t = JournalRemoved {
                at_ms: now_ms,
                freed_bytes: freed,
                proof_file: proof_file.map(str::to_string),
            };
            index::with_full_sync(&db, |c| index::set_removed(c, id, &t))?;
            match self.vfs.remove_file(&path) {
                Ok(()) => self.sync_dir(&self.shard_dir(id))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        context: format!(
                            "removing journal {} (its tombstone is written; the next open finishes the removal)",
                            path.display()
                        ),
                        source: e,
                    })
                }
            }
            Ok(freed)
        })
    }

    fn release(&self, invocation_id: &str) {
        if self.is_read_only() || validate_invocation_id(invocation_id).is_err() {
            return;
        }
        let _ = self.with_slot(invocation_id, |slot| {
            if let Some(live) = slot.live.as_mut() {
                let synced = self.sync_live(invocation_id, live).is_ok();
                self.flush_dirty(invocation_id, live);
                if synced && !live.index_dirty && live.poisoned.is_none() {
                    slot.live = None;
                }
            }
            Ok(())
        });
    }
}

impl<V: Vfs> FsStore<V> {
    /// Number of invocations with a cached open journal (for metrics and tests).
    pub fn open_journals(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// Takes the writer's lock: an exclusive `flock` on `DIR/writer.lock`, held as long as the
/// returned file is open. The kernel drops it when the process dies, so `kill -9` never
/// leaves a store locked.
fn lock_writer(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("writer.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(format!("opening {}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(StoreError::Io {
            context: format!("locking {}", path.display()),
            source: e.into(),
        }),
    }
}

fn read_err(path: &Path, e: ReadError) -> StoreError {
    match e {
        ReadError::Io(source) => StoreError::Io {
            context: format!("reading journal {}", path.display()),
            source,
        },
        ReadError::Decode(d) => StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: d.offset,
            reason: d.reason,
        },
    }
}

/// Streams records frame by frame.
struct FrameIter<R> {
    reader: JournalReader<R>,
    path: PathBuf,
    current: std::vec::IntoIter<JournalRecord>,
    done: bool,
}

impl<R: Read> Iterator for FrameIter<R> {
    type Item = Result<JournalRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.reader.next_frame() {
                Ok(Some((_, records))) => self.current = records.into_iter(),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_err(&self.path, e)));
                }
            }
        }
    }
}

/// `state` after `records` (with `flags`) were appended as a frame of `frame_len` bytes.
fn advanced(
    state: &InvocationState,
    records: &[JournalRecord],
    flags: AppendFlags,
    frame_len: u64,
) -> InvocationState {
    let mut st = state.clone();
    for r in records {
        st.record_count += 1;
        st.bytes += r.payload.len() as u64;
        if r.kind == crate::RecordKind::BepEvent {
            st.event_count += 1;
        }
    }
    if let Some(last) = records.last() {
        st.last_seq = last.seq;
    }
    st.saw_build_finished |= flags.saw_build_finished;
    st.saw_last_message |= flags.saw_last_message;
    st.saw_stream_finished |= flags.saw_stream_finished;
    st.journal_bytes += frame_len;
    st
}

/// Logs what recovery repaired (torn tails) and what it could not.
fn log_recovery(rep: &RecoveryReport) {
    for t in &rep.torn {
        tracing::warn!(
            invocation_id = %t.invocation_id,
            good_len = t.good_len,
            file_len = t.file_len,
            reason = %t.reason,
            "cut torn journal tail"
        );
    }
    for (p, e) in &rep.errors {
        tracing::error!(path = %p.display(), error = %e, "journal recovery failed");
    }
}
