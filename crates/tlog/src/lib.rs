//! rbe-proof's transparency log: every proof the server signs is appended
//! to an append-only Merkle tree (RFC 6962 / RFC 9162 hashing; the leaf is
//! the exact bytes of the artifact's `statement.dsse.json`), whose head is
//! published as a C2SP checkpoint (a signed note under the server's ed25519
//! key) and whose hashes are served as C2SP tlog-tiles. Format:
//! `docs/proof-format.md` §9.
//!
//! The tree arithmetic, proofs and tiles are the `tlog_tiles` crate's (a
//! port of Go's `golang.org/x/mod/sumdb/tlog`), the notes `signed_note`'s;
//! this crate keeps the tree ([`Tree`], pure), the checkpoint and sidecar
//! formats, and [`FileLog`], the crash-safe file that holds the leaves.

mod checkpoint;
pub mod client;
mod file;
mod inclusion;
mod publish;
mod shared;
mod tree;

pub use checkpoint::{
    note_verifier_key, sign_checkpoint, verify_checkpoint, CheckpointError, Head,
};
pub use file::{leaves_path, FileLog, LogError};
pub use inclusion::{verify_sidecar, Inclusion, SIDECAR_SUFFIX};
pub use publish::{write_atomic, write_replace, Leaves, PublishError, Published};
pub use shared::{LeafBackend, SharedLog};
pub use tlog_tiles::Hash;
pub use tree::{leaf_hash, Tree, TILE_HEIGHT};
