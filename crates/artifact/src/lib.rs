//! rbe-proof's signed proof artifact.
//!
//! An artifact `INVOCATION_ID.proof.tar` is a canonical tar (see [`tar`])
//! holding a DSSE-signed in-toto statement whose predicate is the
//! [`proof_evidence`] evidence, the raw BEP stream (zstd), the optional
//! execution log and a Markdown summary. The format is documented in
//! `docs/proof-format.md`.

pub mod dsse;
pub mod keys;
pub mod tar;
