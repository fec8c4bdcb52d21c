//! The one table of Bazel runner names (as they appear in
//! `BuildMetrics.action_summary.runner_count`, in the `N processes: …`
//! summary and in the execution log's `runner` field) and what each means for
//! the question "did this spawn execute on the remote executor?".

use serde::{Deserialize, Serialize};

/// What kind of execution a runner name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerClass {
    /// Executed by the remote executor (REAPI `Execute`).
    RemoteExecution,
    /// Result taken from the remote cache; nothing executed.
    RemoteCacheHit,
    /// Result taken from `--disk_cache`; nothing executed.
    DiskCacheHit,
    /// Executed on the Bazel host (sandboxed or not).
    Local,
    /// Executed by a persistent worker on the Bazel host.
    Worker,
    /// No spawn at all (symlink trees, file writes, local action-cache hits).
    Internal,
    /// A name this table does not know.
    Unknown,
}

impl RunnerClass {
    /// True for classes whose spawns ran on the Bazel host.
    pub fn is_local(self) -> bool {
        matches!(self, RunnerClass::Local | RunnerClass::Worker)
    }

    /// True for remote and disk cache hits.
    pub fn is_cache_hit(self) -> bool {
        matches!(
            self,
            RunnerClass::RemoteCacheHit | RunnerClass::DiskCacheHit
        )
    }
}

/// The runner name Bazel uses for remote execution. Only spawns with exactly
/// this runner count as remote executions.
pub const REMOTE: &str = "remote";

/// The synthetic runner_count entry holding Bazel's own total.
pub const TOTAL: &str = "total";

/// Runner names and their class (wire-facts §3.2).
pub const RUNNERS: &[(&str, RunnerClass)] = &[
    (REMOTE, RunnerClass::RemoteExecution),
    ("remote cache hit", RunnerClass::RemoteCacheHit),
    ("disk cache hit", RunnerClass::DiskCacheHit),
    ("linux-sandbox", RunnerClass::Local),
    ("processwrapper-sandbox", RunnerClass::Local),
    ("darwin-sandbox", RunnerClass::Local),
    ("windows-sandbox", RunnerClass::Local),
    ("docker", RunnerClass::Local),
    ("local", RunnerClass::Local),
    ("standalone", RunnerClass::Local),
    ("sandboxed", RunnerClass::Local),
    ("worker", RunnerClass::Worker),
    ("internal", RunnerClass::Internal),
    // Printed by 8.x in the text summary: a local action-cache hit, no spawn.
    ("action cache hit", RunnerClass::Internal),
];

/// The class of a runner name; [`RunnerClass::Unknown`] for names not in
/// [`RUNNERS`] (including `"total"`).
pub fn classify(name: &str) -> RunnerClass {
    RUNNERS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(RunnerClass::Unknown, |(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_classifies_names_exactly() {
        assert_eq!(classify("remote"), RunnerClass::RemoteExecution);
        assert_eq!(classify("remote cache hit"), RunnerClass::RemoteCacheHit);
        assert_eq!(classify("disk cache hit"), RunnerClass::DiskCacheHit);
        assert_eq!(classify("linux-sandbox"), RunnerClass::Local);
        assert_eq!(classify("worker"), RunnerClass::Worker);
        assert_eq!(classify("internal"), RunnerClass::Internal);
        // Near misses are not remote execution.
        assert_eq!(classify("Remote"), RunnerClass::Unknown);
        assert_eq!(classify("remote "), RunnerClass::Unknown);
        assert_eq!(classify(TOTAL), RunnerClass::Unknown);
        let mut names: Vec<_> = RUNNERS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RUNNERS.len(), "duplicate runner name");
    }
}
