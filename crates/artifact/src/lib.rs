//! rbe-proof's signed proof artifact.
//!
//! An artifact `INVOCATION_ID.proof.tar` is a canonical tar (see [`tar`])
//! holding a DSSE-signed in-toto statement whose predicate is the
//! [`proof_evidence`] evidence, the raw BEP stream (zstd), the optional
//! execution log and a Markdown summary. The format is documented in
//! `docs/proof-format.md`.

pub mod dsse;
mod hashio;
pub mod keys;
pub mod policy;
pub mod record;
pub mod statement;
pub mod summary;
pub mod tar;
pub mod verify;

pub use keys::{
    generate, keyid, load_private_pem, load_public_pem, KeyError, SigningKey, VerifyingKey,
};
pub use policy::{Policy, PolicyCheck};
pub use proof_evidence::Evidence;
pub use record::{record, record_delimited, RecordError, RecordOutcome};
pub use verify::{verify, verify_path, Check, Report, VerifyError};
