//! rbe-proof's test support, in one place (a dev-dependency only; never published).
//!
//! - [`fixtures`]: the repository's Bazel 4.2.3 fixtures, journal records with known
//!   contents, and checks over what a store holds.
//! - [`contract`]: the [`proof_store::Store`] contract suite, run against every backend
//!   with [`store_contract!`].
//! - [`counting`]: a real store that counts journal reads.
//! - [`timeouts`]: the bounds a test waits for, and polling under one.
//! - `server` (feature `server`): the BES server in-process on a loopback port; and
//!   `executor`: a fake remote executor (ListOperations, BatchReadBlobs) that can lie.
//! - `pg` (feature `pg`): a fresh PostgreSQL database per test on `PROOF_PG_URL`.
//!
//! End-to-end helpers that drive the `proof` binary, Bazel or BuildGrid as child
//! processes live in the `proof-e2e` crate (tests/src), built on this one.

pub mod contract;
pub mod counting;
#[cfg(feature = "server")]
pub mod executor;
pub mod fixtures;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "server")]
pub mod server;
pub mod timeouts;
