//! proof-manifest: the RBE target-eligibility manifest
//! (`config/rbe-target-eligibility.json`, schema in
//! `docs/rbe-target-eligibility.schema.json`, described in `docs/manifest.md`).
//!
//! Pure where possible: [`model`] (the typed manifest and its canonical
//! text), [`schema`] (JSON Schema + semantic validation), [`facts`] (what a
//! verified proof artifact says, and whether it covers a target class),
//! [`promote`] (the promotion edit `(old text, artifact facts) -> new text`),
//! [`check`] (the PR check), [`report`] (the six platform questions) and
//! [`render`]. File I/O is only in [`io`].

pub mod check;
pub mod facts;
pub mod io;
pub mod model;
pub mod pattern;
pub mod promote;
pub mod render;
pub mod report;
pub mod schema;

pub use check::{check_manifest, CheckOptions, CheckReport, ClassCheck};
pub use facts::{repo_of, ArtifactFacts, REPO_METADATA_KEY, REPO_WORKSPACE_STATUS_KEY};
pub use io::{promote_file, scan_proofs, ProofDir, ScannedArtifact};
pub use model::{
    Class, Gate, GateStatus, Manifest, Mode, PilotStatus, ProofRecord, Repo, WorkKind, CLASS_GATES,
    PLATFORM_GATES, SCHEMA_VERSION,
};
pub use promote::{promote, PromoteError, PromoteRequest, Promotion};
pub use report::{build_report, PlatformReport};
pub use schema::{parse_manifest, ManifestError, SCHEMA};
