//! proof-acaudit: the action-cache audit, pure (bytes in, verdicts out).
//!
//! A proof signed by `proof serve --executor` holds the executor's own
//! answers about the build (`executor.bin`): for every action it executed,
//! the `ActionResult` it returned. Later, anyone with write access to the
//! executor's ActionCache can replace that entry (`UpdateActionResult`), and
//! every later build that hits it is served the replacement. The audit
//! compares what the proofs attested with what the cache serves now:
//!
//! - [`ledger::read_ledger`]: the executed actions and their ActionResults
//!   from an `executor.bin`, and every worker the ledger shows;
//! - [`outputs::TargetOutputs`]: which targets of the proof's BEP stream
//!   have an output with a given digest (to name the target of an action);
//! - [`verdict::judge`]: attested vs current ActionResult → [`Verdict`];
//! - [`report`]: the per-entry findings, exit code, text/Markdown/JSON and
//!   the operator's nuke-key hand-off;
//! - [`probe`]: the write-posture canary (a synthetic action digest no build
//!   can ask for) and what an executor's answer to writing it means.
//!
//! The gRPC calls live in `proof-executor` (`ac` module); the command line
//! in `proof-cli` (`proof audit`, `proof probe-ac`).

pub mod e2;
pub mod ledger;
pub mod outputs;
pub mod probe;
pub mod report;
pub mod verdict;
pub mod watch;

pub use ledger::{read_ledger, AttestedEntry, AttestedLedger};
pub use outputs::TargetOutputs;
pub use report::{AuditEntry, AuditReport, Reliance, Suspect};
pub use verdict::{judge, Current, ResultView, Verdict};

use thiserror::Error;

/// Why a proof's executor record cannot be audited.
#[derive(Debug, Error)]
pub enum AuditError {
    #[error("executor.bin is not a delimited ledger: {0}")]
    Framing(String),
    #[error("executor.bin record #{index}: {what}")]
    BadLedger { index: u64, what: String },
}

/// `HASH/SIZE`, the way REAPI digests are written in reports.
pub fn digest_string(d: Option<&proof_proto::reapi::Digest>) -> String {
    match d {
        Some(d) => format!("{}/{}", d.hash, d.size_bytes),
        None => "(none)".to_string(),
    }
}
