//! rbe-proof's signed proof artifact.
//!
//! An artifact `INVOCATION_ID.proof.tar` is a canonical tar (see [`tar`])
//! holding a DSSE-signed in-toto statement whose predicate is the
//! [`proof_evidence`] evidence, the raw BEP stream (zstd), the optional
//! execution log and a Markdown summary. The format is documented in
//! `docs/proof-format.md`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{fs::File, path::Path};
//! let (private_pem, public_pem) = proof_artifact::generate()?;
//! let key = proof_artifact::load_private_pem(&private_pem)?;
//! let out = proof_artifact::record_delimited(
//!     File::open("bep.bin")?,
//!     Some(Path::new("execution_log.bin")),
//!     &key,
//!     Path::new("proofs"),
//! )?;
//! let trusted = [proof_artifact::load_public_pem(&public_pem)?];
//! let report = proof_artifact::verify_path(&out.path, &trusted, &proof_artifact::Policy::default())?;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```
//!
//! Fuzzing (nightly, cargo-fuzz): `cd tests/fuzz && cargo +nightly fuzz run
//! envelope` (also `tar_reader`, `verify`; `bash tests/fuzz/run.sh` runs all). Benchmark:
//! `cargo bench -p proof-artifact --bench verify`.

pub mod dsse;
mod hashio;
pub mod keys;
mod outputs_bound;
pub mod policy;
pub mod record;
pub mod statement;
pub mod summary;
pub mod tar;
pub mod verify;
pub mod vsa;

pub use keys::{
    generate, keyid, load_private_pem, load_public_pem, KeyError, SigningKey, VerifyingKey,
};
pub use policy::{Policy, PolicyCheck};
pub use proof_evidence::Evidence;
pub use record::{
    record, record_delimited, record_with, RecordError, RecordInputs, RecordOutcome,
    MAX_INVOCATION_ID_LEN,
};
pub use verify::{verify, verify_path, Check, Report, VerifyError, INTEGRITY_CHECKS};
