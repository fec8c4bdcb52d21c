//! The inclusion sidecar `ID.tlog.json`: where a proof's inclusion proof
//! travels. It is written beside `ID.proof.tar` once the proof is in the
//! log, and is unsigned: everything in it is checked against the statement
//! bytes and the checkpoint's signature, so it needs no signature of its own.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;

use crate::checkpoint::{verify_checkpoint, Head};
use crate::tree::leaf_hash;

/// `ID.proof.tar` → `ID.tlog.json`.
pub const SIDECAR_SUFFIX: &str = ".tlog.json";

/// An inclusion proof of one statement, against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inclusion {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Lowercase hex.
    pub root_hash: String,
    /// The audit path, lowercase hex, RFC 9162 order (leaf's sibling first).
    pub hashes: Vec<String>,
    /// The C2SP signed note of the tree head at `tree_size`.
    pub checkpoint: String,
}

fn parse_hex(s: &str) -> Result<Hash, String> {
    let v = hex::decode(s).map_err(|_| format!("{s:?} is not hex"))?;
    let a: [u8; 32] = v
        .try_into()
        .map_err(|_| format!("{s:?} is not a 32-byte hash"))?;
    Ok(Hash(a))
}

impl Inclusion {
    /// The sidecar for leaf `index` of a tree with audit path `path`.
    pub fn new(index: u64, size: u64, root: Hash, path: &[Hash], checkpoint: String) -> Self {
        Inclusion {
            leaf_index: index,
            tree_size: size,
            root_hash: hex::encode(root.0),
            hashes: path.iter().map(|h| hex::encode(h.0)).collect(),
            checkpoint,
        }
    }

    /// Compact JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("an inclusion serializes");
        v.push(b'\n');
        v
    }

    /// The audit path as hashes.
    pub fn path(&self) -> Result<Vec<Hash>, String> {
        self.hashes.iter().map(|h| parse_hex(h)).collect()
    }
}

/// Checks that `statement` (the exact bytes of `statement.dsse.json`) is
/// leaf `leaf_index` of the tree whose head the checkpoint states, and that
/// the checkpoint is signed by a trusted key. Returns the verified head.
pub fn verify_sidecar(
    statement: &[u8],
    sidecar: &[u8],
    trusted: &[VerifyingKey],
    origin: Option<&str>,
) -> Result<Head, String> {
    let inc: Inclusion = serde_json::from_slice(sidecar)
        .map_err(|e| format!("the inclusion sidecar is not {{leaf_index, tree_size, root_hash, hashes, checkpoint}} JSON: {e}"))?;
    let head =
        verify_checkpoint(inc.checkpoint.as_bytes(), trusted, origin).map_err(|e| e.to_string())?;
    let root = parse_hex(&inc.root_hash)?;
    if head.size != inc.tree_size || head.root != root {
        return Err(format!(
            "the sidecar says tree size {} root {}, its signed checkpoint says size {} root {}",
            inc.tree_size,
            inc.root_hash,
            head.size,
            hex::encode(head.root.0)
        ));
    }
    tlog_tiles::check_record(
        &inc.path()?,
        inc.tree_size,
        root,
        inc.leaf_index,
        leaf_hash(statement),
    )
    .map_err(|e| {
        format!(
            "the statement is not leaf {} of the signed tree of size {} ({e}): the statement or the proof was changed",
            inc.leaf_index, inc.tree_size
        )
    })?;
    Ok(head)
}
