//! The file operations [`FsStore`](crate::FsStore) uses to make journals durable.
//!
//! Every call that creates, appends to, truncates, renames, removes or fsyncs a journal file
//! or a journal directory goes through a [`Vfs`]. The production one, [`RealFs`], is
//! `std::fs` itself: `FsStore` is generic over the layer (`FsStore<V = RealFs>`), so the
//! calls are static and inline to exactly what they were before the layer existed.
//!
//! The layer exists so a test can swap in a file system that records which writes and which
//! directory entries were made durable, and then simulates a power cut: every unsynced write
//! lost, every unsynced directory entry gone (see `crates/store/tests/powercut.rs`).
//!
//! Reads (scanning journals, listing directories, `Store::read`) go to `std::fs` directly:
//! a power-cut simulation rewrites the real directory to its durable state before the store
//! is reopened, so reads see exactly what survived.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// An open journal file.
pub trait VfsFile: Read + Write + Seek + Send + 'static {
    /// `fdatasync`: the data written so far (and the length) survive a power cut.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and metadata survive a power cut.
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates (or extends) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length of the file.
    fn file_len(&self) -> io::Result<u64>;
}

/// The mutating and syncing file operations of the store.
pub trait Vfs: Send + Sync + 'static {
    type File: VfsFile;
    /// `fs::create_dir_all`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// `File::create`: creates or truncates `path`, opened for writing.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing (recovery).
    fn open_read_write(&self, path: &Path) -> io::Result<Self::File>;
    /// `fs::rename`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `fs::remove_file`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: its entries (created, renamed, removed) survive a power cut.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system: `std::fs`, nothing added.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl VfsFile for File {
    #[inline]
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    #[inline]
    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
    #[inline]
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    #[inline]
    fn file_len(&self) -> io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

impl Vfs for RealFs {
    type File = File;
    #[inline]
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    #[inline]
    fn create(&self, path: &Path) -> io::Result<File> {
        File::create(path)
    }
    #[inline]
    fn open_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().append(true).open(path)
    }
    #[inline]
    fn open_read_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }
    #[inline]
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    #[inline]
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    #[inline]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
