//! The typed manifest and its canonical text: 2-space JSON, keys in a fixed
//! order (struct fields in declaration order, maps sorted by key), a
//! trailing newline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `schema_version` this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The default-RBE promotion gates of the platform, in priority order (the
/// order in which `report` looks for the next blocker among gates without a
/// `due` date).
pub const PLATFORM_GATES: [&str; 6] = [
    "no-hosted-runner-fallback",
    "durable-cas-ac",
    "trusted-ac-writers",
    "external-inputs-authority",
    "tenant-isolation",
    "operator-visibility",
];

/// The per-class gates, closed by a promotion with a verified artifact.
pub const CLASS_GATES: [&str; 4] = [
    "forced-executor",
    "remote-processes",
    "worker-image-digest",
    "proof-artifacts",
];

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub schema_version: u32,
    /// Accept proofs that record no authenticated tenant (signed by a
    /// `proof serve` without `--tenants`, or by `proof record` without
    /// `--tenant`) for promotions. Off unless set: such a proof says nothing
    /// about who sent the build, so any client could claim any repo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unauthenticated_proofs: bool,
    /// Platform gates for default RBE, by id (every id of [`PLATFORM_GATES`]).
    pub gates: BTreeMap<String, Gate>,
    /// Spoke repos, by `owner/name`.
    pub repos: BTreeMap<String, Repo>,
    /// Target classes, by id.
    pub classes: BTreeMap<String, Class>,
}

/// Status of a gate or gate item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateStatus {
    Open,
    InProgress,
    Closed,
}

impl GateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Open => "open",
            GateStatus::InProgress => "in-progress",
            GateStatus::Closed => "closed",
        }
    }
}

/// A promotion gate: platform-wide (in [`Manifest::gates`]) or per class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub status: GateStatus,
    pub owner: String,
    /// What is still missing; required unless the gate is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    /// Target date (YYYY-MM-DD) for closing the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Links (URLs or repo paths) to the evidence for the status.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Sub-requirements (e.g. restore, retention, quota, audit, failure-modes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, GateItem>,
}

impl Gate {
    pub fn is_closed(&self) -> bool {
        self.status == GateStatus::Closed
    }
}

/// One sub-requirement of a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateItem {
    pub status: GateStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// Cache-first pilot status of a repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PilotStatus {
    NotStarted,
    Ready,
    Piloting,
    Blocked,
}

impl PilotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PilotStatus::NotStarted => "not-started",
            PilotStatus::Ready => "ready",
            PilotStatus::Piloting => "piloting",
            PilotStatus::Blocked => "blocked",
        }
    }
}

/// A spoke repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub cache_first: CacheFirstPilot,
}

/// Whether a repo may pilot cache-first mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFirstPilot {
    pub status: PilotStatus,
    /// Platform gates that must be closed before the pilot may run.
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// What a target class's Bazel command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkKind {
    Check,
    Test,
    Smoke,
    Package,
    Build,
}

impl WorkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Check => "check",
            WorkKind::Test => "test",
            WorkKind::Smoke => "smoke",
            WorkKind::Package => "package",
            WorkKind::Build => "build",
        }
    }

    /// Test and smoke classes are proven by `bazel test`; the others by
    /// `bazel build` or `bazel test`.
    pub fn needs_test_command(self) -> bool {
        matches!(self, WorkKind::Test | WorkKind::Smoke)
    }
}

/// How a class may use remote execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    CacheFirst,
    ExecutorBacked,
    Default,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::CacheFirst => "cache-first",
            Mode::ExecutorBacked => "executor-backed",
            Mode::Default => "default",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cache-first" => Ok(Mode::CacheFirst),
            "executor-backed" => Ok(Mode::ExecutorBacked),
            "default" => Ok(Mode::Default),
            _ => Err(format!(
                "unknown mode {s:?}: use cache-first, executor-backed or default"
            )),
        }
    }
}

/// A target class of a spoke repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub repo: String,
    pub owner: String,
    pub work_kind: WorkKind,
    pub patterns: Vec<String>,
    pub mode: Mode,
    /// Per-class gates, by id (every id of [`CLASS_GATES`]).
    pub gates: BTreeMap<String, Gate>,
    /// Proof artifacts, oldest first.
    #[serde(default)]
    pub proofs: Vec<ProofRecord>,
}

/// What the manifest records about one proof artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofRecord {
    /// Lowercase hex SHA-256 of the `.proof.tar` file.
    pub artifact_sha256: String,
    /// Where the artifact is kept (a URL, or a path relative to the
    /// directory given to `proof verify --proofs`).
    pub location: String,
    pub invocation_id: String,
    /// When the build finished (RFC 3339, from the stream).
    pub date: String,
    pub command: String,
    pub bazel_version: Option<String>,
    pub executor: String,
    pub instance_name: Option<String>,
    pub remote_executions: u64,
    /// Worker images used by remote spawns (all pinned by digest).
    pub worker_images: Vec<String>,
    /// keyid of the trusted key that verified the signature.
    pub signer_keyid: String,
}

impl Manifest {
    /// The canonical text: 2-space indented JSON and a trailing newline.
    pub fn to_canonical(&self) -> String {
        let mut s = serde_json::to_string_pretty(self)
            .expect("a manifest always serializes (string keys, no floats)");
        s.push('\n');
        s
    }

    /// Platform gates that are not closed, in [`PLATFORM_GATES`] order
    /// (unknown extra ids after, sorted).
    pub fn open_platform_gates(&self) -> Vec<(&str, &Gate)> {
        let mut out: Vec<(&str, &Gate)> = PLATFORM_GATES
            .iter()
            .filter_map(|id| self.gates.get_key_value(*id))
            .chain(
                self.gates
                    .iter()
                    .filter(|(id, _)| !PLATFORM_GATES.contains(&id.as_str())),
            )
            .filter(|(_, g)| !g.is_closed())
            .map(|(id, g)| (id.as_str(), g))
            .collect();
        out.dedup_by_key(|(id, _)| *id);
        out
    }
}

impl Class {
    /// Class gates that are not closed, in [`CLASS_GATES`] order.
    pub fn open_gates(&self) -> Vec<(&str, &Gate)> {
        CLASS_GATES
            .iter()
            .filter_map(|id| self.gates.get_key_value(*id))
            .filter(|(_, g)| !g.is_closed())
            .map(|(id, g)| (id.as_str(), g))
            .collect()
    }

    /// The newest proof record (by date, then digest).
    pub fn latest_proof(&self) -> Option<&ProofRecord> {
        self.proofs
            .iter()
            .max_by(|a, b| (&a.date, &a.artifact_sha256).cmp(&(&b.date, &b.artifact_sha256)))
    }
}
