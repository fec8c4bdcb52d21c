//! A log's reader side, the way monitors and witnesses read a C2SP log:
//! the signed checkpoint, then hash tiles authenticated against it
//! (`tlog_tiles::TileHashReader`). Where the bytes come from (HTTP, a store
//! directory) is the caller's [`Fetch`].

use std::cell::RefCell;

use ed25519_dalek::VerifyingKey;
use thiserror::Error;
use tlog_tiles::{Hash, Tile, TileHashReader, TileReader};

use crate::checkpoint::{verify_checkpoint, CheckpointError, Head};
use crate::inclusion::Inclusion;
use crate::tree::{leaf_hash, TILE_HEIGHT};

/// Where a log's checkpoint and tiles are read from.
pub trait Fetch {
    /// The current signed checkpoint.
    fn checkpoint(&self) -> Result<Vec<u8>, String>;
    /// A hash tile by its C2SP path (`tile/L/N[.p/W]`).
    fn tile(&self, path: &str) -> Result<Vec<u8>, String>;
}

/// Why a log question could not be answered, or was answered "no".
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read the log: {0}")]
    Fetch(String),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the statement is not in the log (tree size {size}): this proof was never logged")]
    NotLogged { size: u64 },
    #[error("the log's tiles do not match its signed checkpoint: {0}")]
    Tiles(String),
    #[error("the log is not consistent with the old checkpoint (size {old_size}, root {old_root}): {detail}. The log was rewritten or forked")]
    Inconsistent {
        old_size: u64,
        old_root: String,
        detail: String,
    },
}

/// The C2SP path of a tlog_tiles tile (which prints Go's `tile/H/L/N`).
fn c2sp_path(t: &Tile) -> String {
    let go = t.path();
    let prefix = format!("tile/{TILE_HEIGHT}/");
    format!("tile/{}", go.strip_prefix(&prefix).unwrap_or(&go))
}

struct Tiles<'a> {
    fetch: &'a dyn Fetch,
    error: RefCell<Option<String>>,
}

impl TileReader for Tiles<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                self.fetch.tile(&c2sp_path(t)).map_err(|e| {
                    *self.error.borrow_mut() = Some(e);
                    tlog_tiles::Error::IndexesNotInTree
                })
            })
            .collect()
    }
    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

impl Tiles<'_> {
    fn err(&self, e: tlog_tiles::Error) -> ClientError {
        match self.error.borrow_mut().take() {
            Some(f) => ClientError::Fetch(f),
            None => ClientError::Tiles(e.to_string()),
        }
    }
}

/// Fetches and verifies the current checkpoint: (its text, its head).
pub fn current(
    fetch: &dyn Fetch,
    trusted: &[VerifyingKey],
    origin: Option<&str>,
) -> Result<(String, Head), ClientError> {
    let note = fetch.checkpoint().map_err(ClientError::Fetch)?;
    let head = verify_checkpoint(&note, trusted, origin)?;
    Ok((String::from_utf8_lossy(&note).into_owned(), head))
}

/// Finds `statement` in the log and proves its inclusion in the current
/// checkpoint's tree (every tile checked against the signed root).
pub fn prove_inclusion(
    fetch: &dyn Fetch,
    trusted: &[VerifyingKey],
    statement: &[u8],
) -> Result<Inclusion, ClientError> {
    let (note, head) = current(fetch, trusted, None)?;
    let want = leaf_hash(statement);
    let tiles = Tiles {
        fetch,
        error: RefCell::new(None),
    };
    let mut found = None;
    let full = head.size >> TILE_HEIGHT;
    for n in 0..=full {
        let w = if n < full {
            1u64 << TILE_HEIGHT
        } else {
            head.size - (full << TILE_HEIGHT)
        };
        if w == 0 {
            break;
        }
        let t = Tile::new(
            TILE_HEIGHT,
            0,
            n,
            u32::try_from(w).expect("w <= 256"),
            false,
        );
        let data = fetch.tile(&c2sp_path(&t)).map_err(ClientError::Fetch)?;
        if let Some(i) = data.chunks_exact(32).position(|c| c == want.0) {
            found = Some((n << TILE_HEIGHT) + i as u64);
            break;
        }
    }
    let index = found.ok_or(ClientError::NotLogged { size: head.size })?;
    let reader = TileHashReader::new(head.size, head.root, &tiles);
    let path = tlog_tiles::prove_record(head.size, index, &reader).map_err(|e| tiles.err(e))?;
    tlog_tiles::check_record(&path, head.size, head.root, index, want)
        .map_err(|e| ClientError::Tiles(e.to_string()))?;
    Ok(Inclusion::new(index, head.size, head.root, &path, note))
}

/// Proves that the log's current tree extends the one `old_note` states
/// (same origin, signed by a trusted key). Returns (old head, new head,
/// new checkpoint text).
pub fn check_consistency(
    fetch: &dyn Fetch,
    trusted: &[VerifyingKey],
    old_note: &[u8],
) -> Result<(Head, Head, String), ClientError> {
    let old = verify_checkpoint(old_note, trusted, None)?;
    let (note, new) = current(fetch, trusted, Some(&old.origin))?;
    let inconsistent = |detail: String| ClientError::Inconsistent {
        old_size: old.size,
        old_root: hex::encode(old.root.0),
        detail,
    };
    if new.size < old.size {
        return Err(inconsistent(format!(
            "the log now has {} leaves, fewer than {}",
            new.size, old.size
        )));
    }
    if new.size == old.size || old.size == 0 {
        let empty = old.size == 0 && old.root == tlog_tiles::EMPTY_HASH;
        if (old.size == 0 && !empty) || (old.size > 0 && new.root != old.root) {
            return Err(inconsistent(format!(
                "another root for size {}: {}",
                new.size,
                hex::encode(new.root.0)
            )));
        }
        return Ok((old, new, note));
    }
    let tiles = Tiles {
        fetch,
        error: RefCell::new(None),
    };
    let reader = TileHashReader::new(new.size, new.root, &tiles);
    let proof = match tlog_tiles::prove_tree(new.size, old.size, &reader) {
        Ok(p) => p,
        Err(e) => {
            return Err(match tiles.err(e) {
                ClientError::Tiles(d) => inconsistent(d),
                other => other,
            })
        }
    };
    tlog_tiles::check_tree(&proof, new.size, new.root, old.size, old.root)
        .map_err(|e| inconsistent(e.to_string()))?;
    Ok((old, new, note))
}

/// Hashes used by callers that print them.
pub fn hex_hash(h: &Hash) -> String {
    hex::encode(h.0)
}
