//! The execution log held against the executor's ledger (issue 27, item
//! 4), both ways:
//!
//! - every remote spawn the log names (runner `remote`, not a cache hit)
//!   must be one executed operation of this invocation inside the window;
//! - every executed operation of this invocation inside the window must be
//!   a spawn the log names: an extra operation is a decoy, or a foreign
//!   build sharing the invocation id.
//!
//! Matching is one to one (an operation matches at most one spawn), by one
//! of two keys, per spawn:
//! - **(a) `action_digest`**: the spawn carries an action digest (Bazel 5+
//!   `SpawnExec.digest`, the compact log's `Spawn.digest`): it must equal
//!   the operation's `ExecuteOperationMetadata.action_digest`;
//! - **(b) `outputs`**: it carries none (Bazel 4.x): its exit code must be
//!   the operation's, each of its `actual_outputs` (path relative to the
//!   exec root, sha256, size) must be an output file of the operation's
//!   ActionResult (or a file of one of its read output directories, by
//!   path prefix and digest), and each output file of the ActionResult
//!   must be among the spawn's `actual_outputs`.
//!
//! Cache-hit spawns ("remote cache hit") claim nothing was executed. One
//! whose key matches an executed operation left over by the remote spawns
//! is *reported*, not failed: the client claims less remote work than the
//! executor did, which never lets a proof claim more than its evidence
//! shows, and Bazel can log a hit for an action the executor also ran (an
//! Execute raced by a cache lookup, or a key shared by identical actions).
//! The operation then counts as named by the log.
//!
//! Pure: the spawns read from the log and the ledger's operations in, an
//! [`ExecLogCheck`] out; [`contradictions`] turns its mismatches into
//! `sources_agree` contradictions naming both sides.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::attestation::{Contradiction, ExecutorAttestation};
use crate::execlog::Spawn;
use crate::runners::{classify, RunnerClass};
use crate::ActionDigest;

/// Most spawns kept from execution logs for the cross-check.
pub const MAX_LOGGED_SPAWNS: usize = 1_000_000;
/// Most unmatched spawns, unlogged operations and executed cache hits named
/// (the counts are always complete).
pub const MAX_NAMED: usize = 20;

/// An output file: path (relative to the exec root), sha256, size.
pub type OutputFile = (String, String, i64);

/// What the cross-check keeps of one logged spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedSpawn {
    class: RunnerClass,
    cache_hit: bool,
    target_label: String,
    mnemonic: String,
    exit_code: i32,
    digest: Option<ActionDigest>,
    /// `actual_outputs`; `None` when the log format gives no outputs here
    /// (the compact log names them by file id).
    outputs: Option<Vec<OutputFile>>,
    first_output: Option<String>,
}

impl From<&Spawn> for LoggedSpawn {
    fn from(s: &Spawn) -> Self {
        LoggedSpawn {
            class: classify(&s.runner),
            cache_hit: s.cache_hit,
            target_label: s.target_label.clone(),
            mnemonic: s.mnemonic.clone(),
            exit_code: s.exit_code,
            digest: s.digest.clone(),
            outputs: s.outputs.clone(),
            first_output: s.first_output.clone(),
        }
    }
}

impl LoggedSpawn {
    fn remote(&self) -> bool {
        self.class == RunnerClass::RemoteExecution && !self.cache_hit
    }

    fn remote_hit(&self) -> bool {
        self.class == RunnerClass::RemoteCacheHit
            || (self.class == RunnerClass::RemoteExecution && self.cache_hit)
    }

    fn key(&self) -> &'static str {
        if self.digest.is_some() {
            "action_digest"
        } else {
            "outputs"
        }
    }

    fn named(&self, why: String) -> NamedSpawn {
        NamedSpawn {
            target_label: self.target_label.clone(),
            mnemonic: self.mnemonic.clone(),
            first_output: self.first_output.clone(),
            action_digest: self
                .digest
                .as_ref()
                .map(|d| format!("{}/{}", d.hash, d.size_bytes)),
            key: self.key().into(),
            why,
        }
    }
}

/// What the logs gathered so far hold for the cross-check.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoggedSpawns {
    pub(crate) spawns: Vec<LoggedSpawn>,
    pub(crate) dropped: u64,
}

impl LoggedSpawns {
    /// Keeps the remote and remote-cache-hit spawns (others never match).
    pub(crate) fn push(&mut self, s: &Spawn) {
        let l = LoggedSpawn::from(s);
        if !(l.remote() || l.remote_hit()) {
            return;
        }
        if self.spawns.len() >= MAX_LOGGED_SPAWNS {
            self.dropped += 1;
            return;
        }
        self.spawns.push(l);
    }
}

/// One executed operation of this invocation inside the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecutedOperation {
    pub(crate) name: String,
    pub(crate) action_digest: ActionDigest,
    pub(crate) worker: Option<String>,
    pub(crate) exit_code: i32,
    /// ActionResult.output_files.
    pub(crate) files: Vec<OutputFile>,
    /// Read output directories: path and the (sha256, size) of its files.
    pub(crate) dirs: Vec<(String, Vec<(String, i64)>)>,
}

impl ExecutedOperation {
    fn matches(&self, s: &LoggedSpawn) -> bool {
        if let Some(d) = &s.digest {
            return *d == self.action_digest;
        }
        let Some(outs) = &s.outputs else {
            return false;
        };
        s.exit_code == self.exit_code
            && outs.iter().all(|o| self.produced(o))
            && self.files.iter().all(|f| outs.contains(f))
    }

    fn produced(&self, (path, hash, size): &OutputFile) -> bool {
        self.files
            .iter()
            .any(|(p, h, n)| p == path && h == hash && n == size)
            || self.dirs.iter().any(|(dir, files)| {
                path.strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                    && files.iter().any(|(h, n)| h == hash && n == size)
            })
    }

    fn named(&self) -> NamedOperation {
        NamedOperation {
            operation: self.name.clone(),
            action_digest: format!(
                "{}/{}",
                self.action_digest.hash, self.action_digest.size_bytes
            ),
            worker: self.worker.clone(),
            first_output: self.files.first().map(|f| f.0.clone()),
        }
    }
}

/// A spawn of the log on one side of a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedSpawn {
    /// Empty in Bazel 4.x logs (SpawnExec has no target label there).
    pub target_label: String,
    pub mnemonic: String,
    pub first_output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_digest: Option<String>,
    /// The key it was matched by: `action_digest` or `outputs`.
    pub key: String,
    pub why: String,
}

/// An executor operation on one side of a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedOperation {
    pub operation: String,
    /// `HASH/SIZE`.
    pub action_digest: String,
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_output: Option<String>,
}

/// The execution log against the executor's operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLogCheck {
    /// The key(s) used: `action_digest`, `outputs`, or both joined by
    /// " and " (none when the log names no remote spawn).
    pub key: String,
    /// Remote spawns (runner `remote`, not a cache hit) in the log.
    pub remote_spawns: u64,
    /// Of them, matched to an executed operation.
    pub matched: u64,
    /// Remote-cache-hit spawns in the log.
    pub cache_hit_spawns: u64,
    /// Executed operations of this invocation inside the window.
    pub executed_operations: u64,
    pub unmatched_spawns: u64,
    /// The first [`MAX_NAMED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<NamedSpawn>,
    /// Executed operations no spawn of the log names.
    pub unlogged_operations: u64,
    /// The first [`MAX_NAMED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlogged: Vec<NamedOperation>,
    /// Cache-hit spawns matching an operation the executor executed
    /// (reported, not failed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_hits_executed: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_hits_executed_named: Vec<NamedOperation>,
    /// Why the check could not be complete (spawns over the bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn push_capped<T>(v: &mut Vec<T>, item: T) {
    if v.len() < MAX_NAMED {
        v.push(item);
    }
}

/// The operations a spawn can match, found without scanning them all: by
/// action digest; by an output file; those without output files (a spawn
/// without outputs); those with output directories (a spawn output inside
/// one is found by digest only).
struct Index {
    by_digest: HashMap<ActionDigest, Vec<usize>>,
    by_output: HashMap<OutputFile, Vec<usize>>,
    no_files: Vec<usize>,
    with_dirs: Vec<usize>,
}

impl Index {
    fn new(ops: &[ExecutedOperation]) -> Self {
        let mut ix = Index {
            by_digest: HashMap::new(),
            by_output: HashMap::new(),
            no_files: Vec::new(),
            with_dirs: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            ix.by_digest
                .entry(op.action_digest.clone())
                .or_default()
                .push(i);
            for f in &op.files {
                ix.by_output.entry(f.clone()).or_default().push(i);
            }
            if op.files.is_empty() {
                ix.no_files.push(i);
            }
            if !op.dirs.is_empty() {
                ix.with_dirs.push(i);
            }
        }
        ix
    }

    /// Every operation that may match `s`, in operation order (a superset
    /// of those that do).
    fn candidates(&self, s: &LoggedSpawn) -> Vec<usize> {
        let mut c: Vec<usize> = match (&s.digest, &s.outputs) {
            (Some(d), _) => self.by_digest.get(d).cloned().unwrap_or_default(),
            (None, None) => Vec::new(),
            (None, Some(outs)) => match outs.first() {
                None => self.no_files.clone(),
                Some(first) => {
                    let mut c = self.by_output.get(first).cloned().unwrap_or_default();
                    c.extend(&self.with_dirs);
                    c
                }
            },
        };
        c.sort_unstable();
        c.dedup();
        c
    }
}

/// The first unused operation matching `s`, marked used.
fn take_match(
    s: &LoggedSpawn,
    ops: &[ExecutedOperation],
    ix: &Index,
    used: &mut [bool],
) -> Option<usize> {
    let i = ix
        .candidates(s)
        .into_iter()
        .find(|&i| !used[i] && ops[i].matches(s))?;
    used[i] = true;
    Some(i)
}

fn unmatched_why(s: &LoggedSpawn, invocation_id: &str) -> String {
    match (&s.digest, &s.outputs) {
        (Some(d), _) => format!(
            "no executed operation of invocation {invocation_id} inside the window has action digest {}/{}",
            d.hash, d.size_bytes
        ),
        (None, Some(_)) => format!(
            "no executed operation of invocation {invocation_id} inside the window produced exactly its outputs (paths and digests) with its exit code"
        ),
        (None, None) => {
            "the log gives neither its action digest nor its outputs: it cannot be matched".into()
        }
    }
}

/// Holds `spawns` against `ops` (the executed operations of the invocation
/// inside the window).
pub(crate) fn check(
    spawns: &LoggedSpawns,
    ops: &[ExecutedOperation],
    invocation_id: &str,
) -> ExecLogCheck {
    let mut used = vec![false; ops.len()];
    let ix = Index::new(ops);
    let mut out = ExecLogCheck {
        key: String::new(),
        remote_spawns: 0,
        matched: 0,
        cache_hit_spawns: 0,
        executed_operations: ops.len() as u64,
        unmatched_spawns: 0,
        unmatched: Vec::new(),
        unlogged_operations: 0,
        unlogged: Vec::new(),
        cache_hits_executed: 0,
        cache_hits_executed_named: Vec::new(),
        incomplete: (spawns.dropped > 0).then(|| {
            format!(
                "the logs name more than {MAX_LOGGED_SPAWNS} remote spawns; {} were not checked",
                spawns.dropped
            )
        }),
    };
    let mut keys = BTreeSet::new();
    for s in spawns.spawns.iter().filter(|s| s.remote()) {
        out.remote_spawns += 1;
        keys.insert(s.key());
        if take_match(s, ops, &ix, &mut used).is_some() {
            out.matched += 1;
        } else {
            out.unmatched_spawns += 1;
            push_capped(&mut out.unmatched, s.named(unmatched_why(s, invocation_id)));
        }
    }
    for s in spawns.spawns.iter().filter(|s| s.remote_hit()) {
        out.cache_hit_spawns += 1;
        if let Some(i) = take_match(s, ops, &ix, &mut used) {
            out.cache_hits_executed += 1;
            push_capped(&mut out.cache_hits_executed_named, ops[i].named());
        }
    }
    for (op, _) in ops.iter().zip(&used).filter(|(_, u)| !**u) {
        out.unlogged_operations += 1;
        push_capped(&mut out.unlogged, op.named());
    }
    out.key = keys.into_iter().collect::<Vec<_>>().join(" and ");
    out
}

/// The execution log held against the executor's ledger, as
/// contradictions: none unless the ledger was read whole (reachable, no
/// errors, not truncated: a truncated ledger lacks operations) and the
/// binding holds a cross-check.
pub(crate) fn ledger_contradictions(
    attestation: Option<&ExecutorAttestation>,
    binding: Option<&crate::OutputBinding>,
) -> Vec<Contradiction> {
    let Some(att) =
        attestation.filter(|a| a.reachable && a.errors.is_empty() && a.truncated.is_none())
    else {
        return Vec::new();
    };
    match binding.and_then(|b| b.exec_log_check.as_ref()) {
        Some(c) => contradictions(c, &att.executor, &att.invocation_id),
        None => Vec::new(),
    }
}

/// The mismatches of `c` as contradictions naming both sides: one per
/// named spawn and operation, and one for those beyond the names.
pub(crate) fn contradictions(
    c: &ExecLogCheck,
    executor: &str,
    invocation_id: &str,
) -> Vec<Contradiction> {
    let mut out = Vec::new();
    // Each spawn's detail names at most 3 of the operations not in the log.
    let unlogged = |ops: &[NamedOperation]| {
        let mut t = ops
            .iter()
            .take(3)
            .map(describe_op)
            .collect::<Vec<_>>()
            .join(", ");
        if c.unlogged_operations > 3 {
            t.push_str(&format!(" and {} more", c.unlogged_operations - 3));
        }
        t
    };
    for s in &c.unmatched {
        let l = spawn_text(s);
        out.push(Contradiction {
            fact: "exec_log_spawn".into(),
            claim_source: "the execution log".into(),
            claimed: format!("{l} ran remotely"),
            other_source: format!("the executor {executor}"),
            shown: s.why.clone(),
            detail: format!(
                "the execution log says {l} ran remotely (matched by {}), but {}; operations of the executor not in the log: {}",
                s.key,
                s.why,
                if c.unlogged.is_empty() { "none".to_string() } else { unlogged(&c.unlogged) }
            ),
        });
    }
    for o in &c.unlogged {
        out.push(Contradiction {
            fact: "exec_log_operation".into(),
            claim_source: format!("the executor {executor}"),
            claimed: format!("{} executed for invocation {invocation_id}", describe_op(o)),
            other_source: "the execution log".into(),
            shown: "no spawn with its action digest or outputs".into(),
            detail: format!(
                "the executor {executor} executed {} for invocation {invocation_id} inside the window, and it is not a spawn the execution log names (a decoy, or a foreign build sharing the invocation id)",
                describe_op(o)
            ),
        });
    }
    let beyond = (c.unmatched_spawns - c.unmatched.len() as u64)
        + (c.unlogged_operations - c.unlogged.len() as u64);
    if beyond > 0 {
        out.push(Contradiction {
            fact: "exec_log_mismatches".into(),
            claim_source: "the execution log".into(),
            claimed: format!("{} remote spawns", c.remote_spawns),
            other_source: format!("the executor {executor}"),
            shown: format!("{} executed operations", c.executed_operations),
            detail: format!(
                "{beyond} more mismatch(es) between the execution log and the executor than named here ({} unmatched spawn(s), {} operation(s) not in the log)",
                c.unmatched_spawns, c.unlogged_operations
            ),
        });
    }
    out
}

fn spawn_text(s: &NamedSpawn) -> String {
    let mut t = format!(
        "spawn {} {} {}",
        if s.target_label.is_empty() {
            "(no target label in the log)"
        } else {
            &s.target_label
        },
        if s.mnemonic.is_empty() {
            "(no mnemonic)"
        } else {
            &s.mnemonic
        },
        s.first_output.as_deref().unwrap_or("(no output)")
    );
    if let Some(d) = &s.action_digest {
        t.push_str(&format!(" (action {d})"));
    }
    t
}

fn describe_op(o: &NamedOperation) -> String {
    format!(
        "operation {} (action {}, worker {}{})",
        o.operation,
        o.action_digest,
        o.worker.as_deref().unwrap_or("not reported"),
        o.first_output
            .as_deref()
            .map(|p| format!(", output {p}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(i: usize) -> ExecutedOperation {
        ExecutedOperation {
            name: format!("op-{i}"),
            action_digest: ActionDigest {
                hash: format!("{i:064x}"),
                size_bytes: 100,
            },
            worker: Some("w".into()),
            exit_code: 0,
            files: vec![(format!("bazel-out/bin/f{i}"), format!("{:064x}", i + 1), 7)],
            dirs: Vec::new(),
        }
    }

    fn spawn(o: &ExecutedOperation, by_digest: bool) -> LoggedSpawn {
        LoggedSpawn {
            class: RunnerClass::RemoteExecution,
            cache_hit: false,
            target_label: String::new(),
            mnemonic: "Genrule".into(),
            exit_code: 0,
            digest: by_digest.then(|| o.action_digest.clone()),
            outputs: (!by_digest).then(|| o.files.clone()),
            first_output: o.files.first().map(|f| f.0.clone()),
        }
    }

    /// 100 000 spawns against 100 000 operations (half by outputs, half by
    /// digest, in reverse order) are matched through the index, not by a
    /// scan of every operation per spawn (10^10 comparisons).
    #[test]
    fn a_large_build_is_matched_in_bounded_time() {
        let n = 100_000;
        let ops: Vec<ExecutedOperation> = (0..n).map(op).collect();
        let spawns = LoggedSpawns {
            spawns: ops
                .iter()
                .rev()
                .enumerate()
                .map(|(i, o)| spawn(o, i % 2 == 0))
                .collect(),
            dropped: 0,
        };
        let t = std::time::Instant::now();
        let c = check(&spawns, &ops, "x");
        let took = t.elapsed();
        println!("{n} spawns x {n} operations: {took:?}");
        assert_eq!(
            (c.matched, c.unmatched_spawns, c.unlogged_operations),
            (n as u64, 0, 0)
        );
        assert_eq!(c.key, "action_digest and outputs");
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    }
}
