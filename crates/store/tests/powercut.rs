//! Power-cut campaign: crash consistency beyond SIGKILL.
//!
//! SIGKILL keeps the kernel's page cache, so a missing fsync passes every kill -9 test. Here
//! the store writes its journals through [`CrashFs`], a [`Vfs`] over the real directory that
//! records what was made durable: file contents as of each file's last `fsync`/`fdatasync`,
//! and directory entries (created files and directories, renames, removals) as of each
//! directory's last fsync. A power cut (after a random number of file operations, so it can
//! fall inside `append`, inside journal creation, between a write and its fsync) then
//! rewrites the directory to that durable state: unsynced writes dropped (or, at random, a
//! prefix of them kept as a torn tail), unsynced entries gone, unsynced removals and renames
//! undone.
//!
//! The SQLite index is not simulated: SQLite does its own fsyncs and is derived from the
//! journals. At a cut the index is either kept as it is or (one cut in four) deleted, so the
//! store must rebuild it from the journals alone (docs/store.md, "Power cuts").
//!
//! The workload is real: the Bazel 4.2.3 fixture streams, appended in random batches as the
//! BES server does (`append` returned = acked) or as a file import does (`append_unsynced`,
//! acked once a later `sync`, `append` or `mark_complete` returned). After every cut the store must open with a
//! sane recovery report, keep every acked event byte for byte, and reopen clean.
//!
//! `POWERCUT_SEED=<n>` replays a campaign; a failure prints its seed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use proof_store::{AppendFlags, FsStore, JournalRecord, Store, StoreError, Vfs, VfsFile};
use proof_testkit::fixtures::{meta, Rng};

// ---------------------------------------------------------------------------------------
// The simulated disk.

/// Which fsync the layer pretends to do but does not (to show the campaign catches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forget {
    Nothing,
    /// `fdatasync` of an open file does nothing (the append fsync).
    FileDataSync,
    /// fsync of a directory does nothing (new journals' entries).
    DirSync,
}

#[derive(Debug)]
struct Inode {
    is_dir: bool,
    /// Contents as of the last fsync (files).
    durable: Vec<u8>,
}

#[derive(Debug)]
struct Disk {
    forget: Forget,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    /// Paths the layer knows, as they are now.
    current: HashMap<PathBuf, u64>,
    /// Directory entries as of each directory's last fsync.
    durable: HashMap<PathBuf, HashMap<OsString, u64>>,
    /// Directories created through the layer (they exist after a cut only if their entry
    /// was made durable in their parent).
    created_dirs: HashMap<PathBuf, u64>,
    /// File operations left before the power goes out (`None`: no cut planned).
    budget: Option<u64>,
    off: bool,
    file_syncs: u64,
    dir_syncs: u64,
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is gone")
}

impl Disk {
    fn new(forget: Forget) -> Self {
        Disk {
            forget,
            next_ino: 1,
            inodes: HashMap::new(),
            current: HashMap::new(),
            durable: HashMap::new(),
            created_dirs: HashMap::new(),
            budget: None,
            off: false,
            file_syncs: 0,
            dir_syncs: 0,
        }
    }

    /// Counts one operation against the budget; fails once the power is out.
    fn tick(&mut self) -> io::Result<()> {
        if self.off {
            return Err(power_off());
        }
        if let Some(b) = self.budget.as_mut() {
            if *b == 0 {
                self.off = true;
                return Err(power_off());
            }
            *b -= 1;
        }
        Ok(())
    }

    fn new_ino(&mut self, is_dir: bool) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                is_dir,
                durable: Vec::new(),
            },
        );
        ino
    }

    fn split(path: &Path) -> (PathBuf, OsString) {
        (
            path.parent().expect("absolute path").to_path_buf(),
            path.file_name().expect("file name").to_os_string(),
        )
    }

    /// A path that existed before this boot is durable as it is: track it from now on.
    fn adopt(&mut self, path: &Path) -> Option<u64> {
        if let Some(&ino) = self.current.get(path) {
            return Some(ino);
        }
        let md = std::fs::symlink_metadata(path).ok()?;
        let ino = self.new_ino(md.is_dir());
        if !md.is_dir() {
            self.inodes.get_mut(&ino).unwrap().durable = std::fs::read(path).ok()?;
        }
        self.current.insert(path.to_path_buf(), ino);
        let (dir, name) = Disk::split(path);
        self.durable.entry(dir).or_default().insert(name, ino);
        Some(ino)
    }

    /// A directory is there after a cut if it was not created by the layer, or its entry
    /// is durable in a parent that is there.
    fn survives(&self, dir: &Path) -> bool {
        match self.created_dirs.get(dir) {
            None => true,
            Some(&ino) => {
                let (parent, name) = Disk::split(dir);
                self.durable
                    .get(&parent)
                    .and_then(|m| m.get(&name))
                    .is_some_and(|&i| i == ino)
                    && self.survives(&parent)
            }
        }
    }

    /// Rewrites the real directory tree to its durable state.
    fn cut(&mut self, rng: &mut Rng) -> io::Result<()> {
        let mut dirs: Vec<PathBuf> = self.durable.keys().cloned().collect();
        for p in self.current.keys() {
            dirs.push(Disk::split(p).0);
        }
        dirs.sort_by_key(|d| (d.components().count(), d.clone()));
        dirs.dedup();
        for dir in dirs {
            if !self.survives(&dir) || !dir.exists() {
                continue;
            }
            let durable = self.durable.get(&dir).cloned().unwrap_or_default();
            let now: Vec<(PathBuf, u64)> = self
                .current
                .iter()
                .filter(|(p, _)| p.parent() == Some(&dir))
                .map(|(p, &i)| (p.clone(), i))
                .collect();
            for (path, _) in &now {
                if !durable.contains_key(path.file_name().unwrap()) {
                    if path.is_dir() {
                        std::fs::remove_dir_all(path)?;
                    } else {
                        std::fs::remove_file(path)?;
                    }
                }
            }
            // Sorted, so a seed replays the same cut.
            let mut durable: Vec<_> = durable.into_iter().collect();
            durable.sort();
            for (name, ino) in durable {
                let path = dir.join(&name);
                let inode = &self.inodes[&ino];
                if inode.is_dir {
                    if !path.is_dir() {
                        std::fs::create_dir(&path)?;
                    }
                    continue;
                }
                let mut content = inode.durable.clone();
                // Unsynced bytes of the same file may partly reach the disk: keep a random
                // prefix of them now and then (recovery must cut it as a torn tail).
                if self.current.get(&path) == Some(&ino) && rng.below(2) == 0 {
                    if let Ok(now) = std::fs::read(&path) {
                        if now.len() > content.len() && now.starts_with(&content) {
                            let extra = now.len() - content.len();
                            let keep = rng.below(extra as u64 + 1) as usize;
                            content.extend_from_slice(&now[inode.durable.len()..][..keep]);
                        }
                    }
                }
                std::fs::write(&path, &content)?;
            }
        }
        Ok(())
    }
}

/// A [`Vfs`] over the real file system that remembers what is durable.
#[derive(Clone)]
struct CrashFs(Arc<Mutex<Disk>>);

impl CrashFs {
    fn new(forget: Forget) -> Self {
        CrashFs(Arc::new(Mutex::new(Disk::new(forget))))
    }
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap()
    }
    fn is_off(&self) -> bool {
        self.disk().off
    }
    fn set_budget(&self, b: Option<u64>) {
        self.disk().budget = b;
    }
    /// Power cut, then boot: the directory holds exactly the durable state, which is the
    /// starting point of the next boot.
    /// Opens a file that exists, for reading and writing (appending with `append`).
    fn open_existing(&self, path: &Path, append: bool) -> io::Result<CrashFile> {
        let mut d = self.disk();
        d.tick()?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .append(append)
            .open(path)?;
        let ino = d.adopt(path).expect("opened, so it exists");
        Ok(CrashFile {
            file,
            ino,
            disk: self.0.clone(),
        })
    }

    fn cut_and_boot(&self, rng: &mut Rng) {
        let mut d = self.disk();
        d.cut(rng).expect("applying the power cut to the directory");
        let (forget, fs, ds) = (d.forget, d.file_syncs, d.dir_syncs);
        *d = Disk::new(forget);
        d.file_syncs = fs;
        d.dir_syncs = ds;
    }
}

struct CrashFile {
    file: std::fs::File,
    ino: u64,
    disk: Arc<Mutex<Disk>>,
}

impl CrashFile {
    fn sync(&self, data_only: bool) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.tick()?;
        d.file_syncs += 1;
        if data_only && d.forget == Forget::FileDataSync {
            return Ok(());
        }
        let len = self.file.metadata()?.len() as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, 0)?;
        d.inodes.get_mut(&self.ino).unwrap().durable = buf;
        Ok(())
    }
}

impl Read for CrashFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for CrashFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Write for CrashFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.disk.lock().unwrap().tick()?;
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl VfsFile for CrashFile {
    fn sync_data(&self) -> io::Result<()> {
        self.sync(true)
    }
    fn sync_all(&self) -> io::Result<()> {
        self.sync(false)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.lock().unwrap().tick()?;
        self.file.set_len(len)
    }
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl Vfs for CrashFs {
    type File = CrashFile;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        let missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(path)?;
        for p in missing.into_iter().rev() {
            let ino = d.new_ino(true);
            d.current.insert(p.clone(), ino);
            d.created_dirs.insert(p, ino);
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<CrashFile> {
        let mut d = self.disk();
        d.tick()?;
        // Truncating an existing file keeps its inode; a new name gets a new one.
        let ino = match d.adopt(path) {
            Some(ino) => ino,
            None => {
                let ino = d.new_ino(false);
                d.current.insert(path.to_path_buf(), ino);
                ino
            }
        };
        // Readable too: a sync reads back what it makes durable.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(CrashFile {
            file,
            ino,
            disk: self.0.clone(),
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<CrashFile> {
        self.open_existing(path, true)
    }

    fn open_read_write(&self, path: &Path) -> io::Result<CrashFile> {
        self.open_existing(path, false)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        d.adopt(from);
        d.adopt(to);
        std::fs::rename(from, to)?;
        let ino = d.current.remove(from).expect("adopted");
        d.current.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        d.adopt(path);
        std::fs::remove_file(path)?;
        d.current.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        d.dir_syncs += 1;
        std::fs::File::open(dir)?;
        if d.forget == Forget::DirSync {
            return Ok(());
        }
        let entries: HashMap<OsString, u64> = d
            .current
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &i)| (p.file_name().unwrap().to_os_string(), i))
            .collect();
        d.durable.insert(dir.to_path_buf(), entries);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The workload: the Bazel 4.2.3 fixture streams.

fn fixture_streams() -> Vec<(String, Vec<Bytes>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bazel-4.2.3");
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("listing {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bep.bin").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let bytes = std::fs::read(d.join("bep.bin")).unwrap();
        let mut events = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = bytes[pos];
                pos += 1;
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            events.push(Bytes::copy_from_slice(&bytes[pos..pos + len]));
            pos += len;
        }
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, events));
    }
    assert!(out.len() >= 5, "expected the Bazel 4.2.3 fixture streams");
    out
}

/// One invocation the campaign writes.
struct Inv {
    id: String,
    stream: usize,
    /// `open_invocation` returned `Ok`.
    created: bool,
    /// Highest seq whose `append` (or `sync` after `append_unsynced`) returned `Ok`, or
    /// that recovery kept.
    acked: u64,
    /// Highest seq written, by `append` or `append_unsynced` (≥ `acked`).
    written: u64,
    /// `mark_complete` returned `Ok`.
    finalized: bool,
    /// Finalized once (a lost index forgets it; the stream is not finalized again).
    done: bool,
    /// `delete` was called (it may have been cut short).
    deleting: bool,
    /// `delete` returned `Ok`: the invocation must never come back.
    deleted: bool,
    /// `remove_journal` (retention) was called (it may have been cut short).
    removing: bool,
    /// `remove_journal` returned `Ok`, or recovery showed its tombstone: from now on a
    /// tombstone, never a journal again.
    removed: bool,
}

#[derive(Debug, Default)]
struct Stats {
    cuts: u64,
    cuts_inside_an_operation: u64,
    cuts_during_recovery: u64,
    index_dropped: u64,
    acked_events: u64,
    unsynced_batches: u64,
    torn_tails_cut: u64,
    rebuilt_rows: u64,
    invocations: u64,
    deletes: u64,
    removals: u64,
    removals_cut_short: u64,
    removals_finished_by_recovery: u64,
    file_syncs: u64,
    dir_syncs: u64,
}

fn record(stream: &[Bytes], seq: u64) -> JournalRecord {
    JournalRecord::bep_event(seq, stream[seq as usize - 1].clone())
}

/// Checks the store right after a cut: sane report, every acked event, byte for byte.
fn verify(
    store: &FsStore<CrashFs>,
    invs: &mut [Inv],
    streams: &[(String, Vec<Bytes>)],
    index_kept: bool,
    stats: &mut Stats,
) -> Result<(), String> {
    let rep = store.recovery_report().clone();
    if !rep.errors.is_empty() {
        return Err(format!("recovery reported errors: {:?}", rep.errors));
    }
    stats.torn_tails_cut += rep.torn.len() as u64;
    stats.rebuilt_rows += rep.rebuilt_rows.len() as u64;
    stats.removals_finished_by_recovery += rep.finished_removals.len() as u64;
    for inv in invs.iter_mut() {
        let events = &streams[inv.stream].1;
        let state = store
            .state(&inv.id)
            .map_err(|e| format!("{}: state failed: {e}", inv.id))?;
        if inv.deleted {
            if state.is_some() {
                return Err(format!("{}: deleted invocation came back", inv.id));
            }
            continue;
        }
        let Some(state) = state else {
            if inv.removing && !index_kept {
                // Retention removed the journal, and the index (with the tombstone) was
                // lost with the power: nothing is left to rebuild the row from.
                inv.deleted = true;
                continue;
            }
            if inv.deleting {
                // The deletion was cut short but its removal of the journal was durable.
                inv.deleted = true;
                continue;
            }
            if inv.created {
                return Err(format!(
                    "{}: invocation lost (open_invocation had returned Ok, {} events acked)",
                    inv.id, inv.acked
                ));
            }
            continue;
        };
        // Retention: a tombstone, or the whole journal; never a journal with frames missing.
        let rec = store
            .get(&inv.id)
            .map_err(|e| format!("{}: get failed: {e}", inv.id))?
            .ok_or_else(|| format!("{}: state without a record", inv.id))?;
        if let Some(t) = &rec.journal_removed {
            if !inv.removing {
                return Err(format!(
                    "{}: tombstone of a journal that retention was never asked to remove",
                    inv.id
                ));
            }
            if !state.finalized || state.event_count != events.len() as u64 {
                return Err(format!(
                    "{}: the tombstone lost the outcome: {state:?}",
                    inv.id
                ));
            }
            match store.read(&inv.id) {
                Err(StoreError::JournalRemoved { .. }) => {}
                Err(e) => return Err(format!("{}: tombstone read: {e}", inv.id)),
                Ok(_) => return Err(format!("{}: tombstone still reads", inv.id)),
            }
            if store.journal_path(&inv.id).exists() {
                return Err(format!(
                    "{}: tombstone {t:?} but the journal file is still there",
                    inv.id
                ));
            }
            inv.removed = true;
            continue;
        }
        if inv.removed {
            if index_kept {
                return Err(format!(
                    "{}: retention removed the journal ({} events) but the invocation is back without its tombstone",
                    inv.id, inv.acked
                ));
            }
            // Unreachable in practice: the file is gone, so no row can be rebuilt.
            return Err(format!("{}: a removed journal came back", inv.id));
        }
        if inv.removing {
            // Cut short before its tombstone was durable: the journal is whole (checked
            // below) and retention may run again.
            stats.removals_cut_short += 1;
            inv.removing = false;
        }
        if rep.missing_journals.contains(&inv.id) {
            return Err(format!(
                "{}: journal file lost ({} events acked)",
                inv.id, inv.acked
            ));
        }
        if let Some(t) = rep.torn.iter().find(|t| t.invocation_id == inv.id) {
            if t.last_seq < inv.acked {
                return Err(format!(
                    "{}: recovery cut the journal at seq {} but {} was acked",
                    inv.id, t.last_seq, inv.acked
                ));
            }
        }
        let mut n = 0u64;
        for r in store
            .read(&inv.id)
            .map_err(|e| format!("{}: read: {e}", inv.id))?
        {
            let r = r.map_err(|e| format!("{}: reading record {}: {e}", inv.id, n + 1))?;
            n += 1;
            if n as usize > events.len() || r != record(events, n) {
                return Err(format!(
                    "{}: record {n} differs from the event that was appended",
                    inv.id
                ));
            }
        }
        if n < inv.acked {
            return Err(format!(
                "{}: lost acked events: {n} survived, {} were acked",
                inv.id, inv.acked
            ));
        }
        if n != state.last_seq || state.event_count != n {
            return Err(format!(
                "{}: index state says last_seq {} / {} events, journal holds {n}",
                inv.id, state.last_seq, state.event_count
            ));
        }
        if inv.finalized && index_kept && !state.finalized {
            return Err(format!("{}: finalization lost", inv.id));
        }
        // What survived is durable: the client resends from there.
        inv.acked = n;
        inv.written = n;
        inv.created = true;
        inv.finalized = state.finalized;
    }
    Ok(())
}

/// Runs `cuts` random power cuts over the fixture workload. `Err` names the first loss.
fn campaign(seed: u64, cuts: u64, forget: Forget) -> Result<Stats, String> {
    let streams = fixture_streams();
    // The simulated disk decides what survives, not the real one: a RAM file system (when
    // there is one) spares SQLite's real fsyncs and keeps the campaign to a few seconds.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let fs = CrashFs::new(forget);
    let mut rng = Rng(seed | 1);
    let mut stats = Stats::default();
    let mut invs: Vec<Inv> = Vec::new();
    let mut generation = 0u64;
    let mut index_kept = true;
    for cut in 0..=cuts {
        // Now and then the power goes out again during recovery itself.
        if cut > 0 && rng.below(4) == 0 {
            fs.set_budget(Some(rng.below(6)));
            match FsStore::open_with(&dir, fs.clone()) {
                Ok(store) => drop(store),
                Err(e) if fs.is_off() => {
                    stats.cuts_during_recovery += 1;
                    let _ = e;
                }
                Err(e) => return Err(format!("cut {cut}: recovery failed with the power on: {e}")),
            }
            fs.cut_and_boot(&mut rng);
        }
        fs.set_budget(None);
        let store = FsStore::open_with(&dir, fs.clone())
            .map_err(|e| format!("cut {cut}: open after the power cut failed: {e}"))?;
        verify(&store, &mut invs, &streams, index_kept, &mut stats)
            .map_err(|e| format!("cut {cut}: {e}"))?;
        drop(store);
        let store = FsStore::open_with(&dir, fs.clone())
            .map_err(|e| format!("cut {cut}: second open failed: {e}"))?;
        if !store.recovery_report().is_clean() {
            return Err(format!(
                "cut {cut}: recovery is not idempotent: the second open repaired {:?}",
                store.recovery_report()
            ));
        }
        if cut == cuts {
            break;
        }
        // Finalized invocations stay in `invs`: every later cut re-checks them too.
        let mut active: Vec<usize> = (0..invs.len()).filter(|&i| !invs[i].done).collect();
        while active.len() < 3 {
            active.push(invs.len());
            generation += 1;
            invs.push(Inv {
                id: format!("pc-{generation}"),
                stream: rng.below(streams.len() as u64) as usize,
                created: false,
                acked: 0,
                written: 0,
                finalized: false,
                done: false,
                deleting: false,
                deleted: false,
                removing: false,
                removed: false,
            });
            stats.invocations += 1;
        }
        // The power goes out after a random number of file operations, or after the
        // round's work if that comes first.
        fs.set_budget(Some(rng.below(24)));
        let deletable: Vec<usize> = (0..invs.len())
            .filter(|&i| invs[i].done && !invs[i].deleting && !invs[i].removing)
            .collect();
        // Retention removes only finalized journals.
        let removable: Vec<usize> = (0..invs.len())
            .filter(|&i| invs[i].finalized && !invs[i].deleting && !invs[i].removing)
            .collect();
        'round: for _ in 0..rng.below(16) + 1 {
            // Now and then a finalized invocation is deleted (denied/aborted streams are),
            // or its journal removed by retention (`proof gc`).
            let delete = !deletable.is_empty() && rng.below(6) == 0;
            let remove = !delete && !removable.is_empty() && rng.below(5) == 0;
            let k = if delete {
                deletable[rng.below(deletable.len() as u64) as usize]
            } else if remove {
                removable[rng.below(removable.len() as u64) as usize]
            } else {
                active[rng.below(active.len() as u64) as usize]
            };
            let inv = &mut invs[k];
            let events = &streams[inv.stream].1;
            let r: Result<(), StoreError> = if remove {
                if inv.removing || inv.deleting {
                    continue;
                }
                inv.removing = true;
                store
                    .remove_journal(&inv.id, Some("proofs/x.proof.tar"), 1)
                    .map(|freed| {
                        assert!(freed > 0, "{}: nothing freed", inv.id);
                        inv.removed = true;
                        stats.removals += 1;
                    })
            } else if delete {
                if inv.deleting || inv.removing {
                    continue;
                }
                inv.deleting = true;
                store.delete(&inv.id).map(|()| {
                    inv.deleted = true;
                    stats.deletes += 1;
                })
            } else if !inv.created {
                store
                    .open_invocation(&meta(&inv.id))
                    .map(|_| inv.created = true)
            } else if inv.written > inv.acked && rng.below(3) == 0 {
                // A file import makes its unsynced batches durable in one go.
                store.sync(&inv.id).map(|()| {
                    stats.acked_events += inv.written - inv.acked;
                    inv.acked = inv.written;
                })
            } else if inv.written < events.len() as u64 {
                let n = (rng.below(24) + 1).min(events.len() as u64 - inv.written);
                let batch: Vec<_> = (inv.written + 1..=inv.written + n)
                    .map(|s| record(events, s))
                    .collect();
                let last = inv.written + n == events.len() as u64;
                let flags = AppendFlags {
                    saw_build_finished: last,
                    saw_last_message: last,
                    saw_stream_finished: false,
                };
                // Now and then a batch as a file import writes it: acked only once synced.
                let durable = rng.below(3) != 0;
                let res = if durable {
                    store.append(&inv.id, &batch, flags)
                } else {
                    stats.unsynced_batches += 1;
                    store.append_unsynced(&inv.id, &batch, flags)
                };
                res.map(|st| {
                    assert_eq!(st.last_seq, inv.written + n);
                    inv.written += n;
                    if durable {
                        stats.acked_events += inv.written - inv.acked;
                        inv.acked = inv.written;
                    }
                })
            } else {
                store
                    .mark_complete(&inv.id, true, None, &serde_json::json!({}))
                    .map(|()| {
                        inv.acked = inv.written;
                        inv.finalized = true;
                        inv.done = true;
                    })
            };
            if let Err(e) = r {
                if fs.is_off() {
                    stats.cuts_inside_an_operation += 1;
                    break 'round;
                }
                return Err(format!(
                    "cut {cut}: {} failed with the power on: {e}",
                    inv.id
                ));
            }
            if fs.is_off() {
                break 'round;
            }
        }
        drop(store);
        fs.cut_and_boot(&mut rng);
        stats.cuts += 1;
        // The index is derived: now and then it is lost with the power and rebuilt.
        index_kept = rng.below(4) != 0;
        if !index_kept {
            for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            stats.index_dropped += 1;
        }
    }
    let d = fs.disk();
    stats.file_syncs = d.file_syncs;
    stats.dir_syncs = d.dir_syncs;
    Ok(stats)
}

fn seed() -> u64 {
    match std::env::var("POWERCUT_SEED") {
        Ok(s) => s.parse().expect("POWERCUT_SEED must be a number"),
        Err(_) => Rng::from_time().next_u64(),
    }
}

#[test]
fn power_cuts_keep_every_acked_event() {
    let seed = seed();
    let t = std::time::Instant::now();
    let stats = campaign(seed, 120, Forget::Nothing)
        .unwrap_or_else(|e| panic!("power-cut campaign failed (POWERCUT_SEED={seed}): {e}"));
    eprintln!("seed {seed}: {stats:?} in {:?}", t.elapsed());
    assert_eq!(stats.cuts, 120, "seed {seed}");
    // The campaign must have exercised what it claims to (seed {seed}).
    assert!(stats.acked_events > 1000, "seed {seed}: {stats:?}");
    assert!(stats.unsynced_batches > 50, "seed {seed}: {stats:?}");
    assert!(
        stats.cuts_inside_an_operation > 20,
        "seed {seed}: {stats:?}"
    );
    assert!(stats.torn_tails_cut > 0, "seed {seed}: {stats:?}");
    assert!(stats.cuts_during_recovery > 0, "seed {seed}: {stats:?}");
    assert!(stats.deletes > 0, "seed {seed}: {stats:?}");
    assert!(stats.removals > 0, "seed {seed}: {stats:?}");
    assert!(stats.index_dropped > 0, "seed {seed}: {stats:?}");
}

/// Without the append's fdatasync, acked events are lost at some cut: the campaign sees it.
#[test]
fn campaign_catches_a_missing_append_fsync() {
    let seed = seed();
    let err = campaign(seed, 120, Forget::FileDataSync)
        .err()
        .unwrap_or_else(|| panic!("seed {seed}: a store that never fdatasyncs its appends passed"));
    eprintln!("seed {seed}: detected: {err}");
    assert!(
        err.contains("lost acked events") || err.contains("recovery cut the journal"),
        "seed {seed}: {err}"
    );
}

/// Without directory fsyncs, new journals vanish at some cut: the campaign sees it.
#[test]
fn campaign_catches_a_missing_directory_fsync() {
    let seed = seed();
    let err = campaign(seed, 120, Forget::DirSync)
        .err()
        .unwrap_or_else(|| panic!("seed {seed}: a store that never fsyncs directories passed"));
    eprintln!("seed {seed}: detected: {err}");
    assert!(
        err.contains("invocation lost") || err.contains("journal file lost"),
        "seed {seed}: {err}"
    );
}
