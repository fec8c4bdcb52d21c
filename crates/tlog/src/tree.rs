//! The Merkle tree in memory: every stored hash (leaves and complete
//! interior nodes, in `tlog_tiles`' storage order), rebuilt from the leaf
//! hashes when the log is opened.

use tlog_tiles::{Hash, HashReader, Tile};

/// Height of the tiles served under `/log/tile/` (C2SP tlog-tiles: 8).
pub const TILE_HEIGHT: u8 = 8;

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    tlog_tiles::record_hash(data)
}

/// An append-only Merkle tree held in memory.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    stored: Vec<Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.stored.get(i))
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// The tree of these leaf hashes, in order.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Tree {
        let mut t = Tree::default();
        for h in leaves {
            t.push(h);
        }
        t
    }

    /// Appends one leaf (by its leaf hash); returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let n = self.size;
        let new = tlog_tiles::stored_hashes_for_record_hash(n, leaf, self)
            .expect("the tree holds every stored hash below its size");
        self.stored.extend(new);
        self.size += 1;
        n
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        if index >= self.size {
            return None;
        }
        self.read_hashes(&[tlog_tiles::stored_hash_index(0, index)])
            .ok()
            .map(|v| v[0])
    }

    /// The root hash of the first `size` leaves (RFC 6962 MTH).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size <= self.size)
            .then(|| tlog_tiles::tree_hash(size, self).expect("size within the tree"))
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Hash {
        tlog_tiles::tree_hash(self.size, self).expect("size within the tree")
    }

    /// The audit path of leaf `index` in the tree of the first `size`
    /// leaves (RFC 9162 §2.1.3.1 order: from the leaf's sibling upward).
    pub fn inclusion(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size {
            return None;
        }
        tlog_tiles::prove_record(size, index, self).ok()
    }

    /// The consistency proof from the first `old` leaves to the first
    /// `new` (RFC 9162 §2.1.4.1).
    pub fn consistency(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old > new || new > self.size {
            return None;
        }
        if old == 0 || old == new {
            return Some(Vec::new());
        }
        tlog_tiles::prove_tree(new, old, self).ok()
    }

    /// The bytes of the hash tile at `path` (C2SP tlog-tiles, height 8,
    /// e.g. `tile/0/000` or `tile/0/000.p/5`), for a tree of `size`
    /// leaves; `None` for a path that is not a hash tile of this tree.
    pub fn tile(&self, path: &str, size: u64) -> Option<Vec<u8>> {
        // C2SP paths are `tile/L/N[.p/W]` (height 8 implied); tlog_tiles
        // parses Go's `tile/H/L/N[.p/W]`.
        let rest = path.strip_prefix("tile/")?;
        if rest.starts_with("entries/") || rest.starts_with("data/") {
            return None;
        }
        let tile = Tile::from_path(&format!("tile/{TILE_HEIGHT}/{rest}")).ok()?;
        if tile.is_data() || tile.height() != TILE_HEIGHT || size > self.size {
            return None;
        }
        // The tile must lie within the tree of `size` leaves: a full tile
        // of width 2^h, or the partial tile at the right edge.
        let exists = Tile::new_tiles(TILE_HEIGHT, 0, size)
            .into_iter()
            .any(|t| t == tile);
        if !exists {
            return None;
        }
        tile.read_data(self).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_small_roots_match_rfc6962() {
        use sha2::{Digest, Sha256};
        let t = Tree::default();
        assert_eq!(t.root().0, <[u8; 32]>::from(Sha256::digest(b"")));
        let t = Tree::from_leaf_hashes([leaf_hash(b"a"), leaf_hash(b"b")]);
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(leaf_hash(b"a").0);
        h.update(leaf_hash(b"b").0);
        assert_eq!(t.root().0, <[u8; 32]>::from(h.finalize()));
        assert_eq!(t.leaf(1), Some(leaf_hash(b"b")));
        assert_eq!(t.leaf(2), None);
    }

    #[test]
    fn tiles_exist_only_inside_the_tree() {
        let t = Tree::from_leaf_hashes((0..300u32).map(|i| leaf_hash(&i.to_be_bytes())));
        let full = t.tile("tile/0/000", 300).unwrap();
        assert_eq!(full.len(), 256 * 32);
        assert_eq!(&full[..32], &leaf_hash(&0u32.to_be_bytes()).0);
        let partial = t.tile("tile/0/001.p/44", 300).unwrap();
        assert_eq!(partial.len(), 44 * 32);
        assert!(t.tile("tile/0/001.p/45", 300).is_none());
        assert!(t.tile("tile/0/002", 300).is_none());
        assert!(t.tile("tile/1/000.p/1", 300).is_some());
        assert!(t.tile("tile/entries/000", 300).is_none());
    }
}
