//! One AC entry: the ActionResult(s) a proof attested against what the
//! executor's ActionCache serves now.
//!
//! Two results are the *same* when everything a later build consumes is
//! equal: every output file (path, digest, executable bit), every output
//! directory (path, tree digest), every output symlink (path, target), the
//! exit code, the stdout/stderr digests, and the writer
//! (`execution_metadata.worker`), and inline stdout/stderr bytes when there
//! are any. Timestamps and other execution metadata are not compared (no
//! build consumes them).

use std::collections::BTreeSet;

use proof_proto::reapi::ActionResult;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest_string;

/// The audit's verdict on one AC entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The cache serves what the proof attested.
    Same,
    /// The cache serves something else, written by a worker the executor's
    /// ledgers show: a poison suspect.
    Changed,
    /// The entry is gone (evicted, or removed by an operator): normal.
    Missing,
    /// The cache serves something else, and its writer is not a worker any
    /// ledger read has ever shown (or names none): a poison suspect.
    UnattestedWriter,
    /// The executor could not be asked, or its answer was not a usable
    /// ActionResult: not audited.
    Unreachable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Changed => "changed",
            Verdict::Missing => "missing",
            Verdict::UnattestedWriter => "unattested-writer",
            Verdict::Unreachable => "unreachable",
        }
    }

    /// A poison suspect (exit 1).
    pub fn is_suspect(self) -> bool {
        matches!(self, Verdict::Changed | Verdict::UnattestedWriter)
    }

    pub const ALL: [Verdict; 5] = [
        Verdict::Same,
        Verdict::Changed,
        Verdict::Missing,
        Verdict::UnattestedWriter,
        Verdict::Unreachable,
    ];
}

/// What the executor answered for the entry now.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    Found(Box<ActionResult>),
    /// NOT_FOUND.
    NotFound,
    /// Could not be asked, or the answer was not usable (an error status
    /// other than NOT_FOUND, an undecodable or oversized answer): why.
    Unusable(String),
}

/// One output file as compared and reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputView {
    pub path: String,
    /// `HASH/SIZE`.
    pub digest: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

/// The parts of an ActionResult the audit compares and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultView {
    /// `SHA256/SIZE` of the ActionResult message as encoded here (the
    /// digest an executor that stores results in its CAS, e.g. BuildGrid,
    /// files it under when it encodes the same way).
    pub result_digest: String,
    pub exit_code: i32,
    /// `execution_metadata.worker` (empty when none).
    pub worker: String,
    /// Sorted by path.
    pub output_files: Vec<OutputView>,
    /// `PATH HASH/SIZE` of each output directory's tree, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_directories: Vec<String>,
    /// `KIND PATH -> TARGET` of each output symlink (file, directory or
    /// either), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_symlinks: Vec<String>,
    pub stdout_digest: String,
    pub stderr_digest: String,
    /// `SHA256/SIZE` of inline stdout / stderr bytes, when the executor
    /// inlined them (a build prints, and Bazel keeps as a test's log, the
    /// inline bytes rather than the digest's blob).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_raw: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_raw: String,
}

fn raw_digest(b: &[u8]) -> String {
    if b.is_empty() {
        String::new()
    } else {
        format!("{}/{}", hex::encode(sha2::Sha256::digest(b)), b.len())
    }
}

impl ResultView {
    pub fn of(r: &ActionResult) -> Self {
        let bytes = r.encode_to_vec();
        let mut output_files: Vec<OutputView> = r
            .output_files
            .iter()
            .map(|f| OutputView {
                path: f.path.clone(),
                digest: digest_string(f.digest.as_ref()),
                executable: f.is_executable,
            })
            .collect();
        output_files.sort();
        let mut output_directories: Vec<String> = r
            .output_directories
            .iter()
            .map(|d| format!("{} {}", d.path, digest_string(d.tree_digest.as_ref())))
            .collect();
        output_directories.sort();
        let mut output_symlinks: Vec<String> = [
            ("file", &r.output_file_symlinks),
            ("directory", &r.output_directory_symlinks),
            ("any", &r.output_symlinks),
        ]
        .into_iter()
        .flat_map(|(kind, links)| {
            links
                .iter()
                .map(move |l| format!("{kind} {} -> {}", l.path, l.target))
        })
        .collect();
        output_symlinks.sort();
        ResultView {
            result_digest: format!(
                "{}/{}",
                hex::encode(sha2::Sha256::digest(&bytes)),
                bytes.len()
            ),
            exit_code: r.exit_code,
            worker: r
                .execution_metadata
                .as_ref()
                .map(|m| m.worker.clone())
                .unwrap_or_default(),
            output_files,
            output_directories,
            output_symlinks,
            stdout_digest: digest_string(r.stdout_digest.as_ref()),
            stderr_digest: digest_string(r.stderr_digest.as_ref()),
            stdout_raw: raw_digest(&r.stdout_raw),
            stderr_raw: raw_digest(&r.stderr_raw),
        }
    }

    /// Equal in everything a later build consumes, and the writer.
    pub fn same_as(&self, other: &ResultView) -> bool {
        self.exit_code == other.exit_code
            && self.worker == other.worker
            && self.output_files == other.output_files
            && self.output_directories == other.output_directories
            && self.output_symlinks == other.output_symlinks
            && self.stdout_digest == other.stdout_digest
            && self.stderr_digest == other.stderr_digest
            && self.stdout_raw == other.stdout_raw
            && self.stderr_raw == other.stderr_raw
    }
}

/// The verdict on one entry: `attested` are the results the proofs
/// recorded for it (any of them counts as the same), `known_workers` every
/// worker the ledgers read have shown.
pub fn judge(
    attested: &[ResultView],
    current: &Current,
    known_workers: &BTreeSet<String>,
) -> Verdict {
    match current {
        Current::NotFound => Verdict::Missing,
        Current::Unusable(_) => Verdict::Unreachable,
        Current::Found(r) => {
            let now = ResultView::of(r.as_ref());
            if attested.iter().any(|a| a.same_as(&now)) {
                Verdict::Same
            } else if now.worker.is_empty() || !known_workers.contains(&now.worker) {
                Verdict::UnattestedWriter
            } else {
                Verdict::Changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::result;

    fn workers() -> BTreeSet<String> {
        ["bot-1".to_string()].into()
    }

    #[test]
    fn verdicts() {
        let att = vec![ResultView::of(&result("bot-1", "hello.txt", "11"))];
        let w = workers();
        let mut same = result("bot-1", "hello.txt", "11");
        // Timestamps do not count.
        same.execution_metadata
            .as_mut()
            .unwrap()
            .worker_start_timestamp = Some(prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        });
        assert_eq!(
            judge(&att, &Current::Found(Box::new(same)), &w),
            Verdict::Same
        );
        // The attack of issue 22: another blob, the worker name kept.
        let poisoned = result("bot-1", "hello.txt", "99");
        assert_eq!(
            judge(&att, &Current::Found(Box::new(poisoned.clone())), &w),
            Verdict::Changed
        );
        assert!(Verdict::Changed.is_suspect());
        // The same rewrite by a writer no ledger ever showed, or by none.
        let stranger = result("laptop-7", "hello.txt", "99");
        assert_eq!(
            judge(&att, &Current::Found(Box::new(stranger)), &w),
            Verdict::UnattestedWriter
        );
        let anonymous = result("", "hello.txt", "11");
        assert_eq!(
            judge(&att, &Current::Found(Box::new(anonymous)), &w),
            Verdict::UnattestedWriter
        );
        // Only the worker changed: still not the attested result.
        let other_bot = result("bot-2", "hello.txt", "11");
        let w2: BTreeSet<String> = ["bot-1".to_string(), "bot-2".to_string()].into();
        assert_eq!(
            judge(&att, &Current::Found(Box::new(other_bot)), &w2),
            Verdict::Changed
        );
        // An executable bit flipped is a change.
        let mut exe = result("bot-1", "hello.txt", "11");
        exe.output_files[0].is_executable = true;
        assert_eq!(
            judge(&att, &Current::Found(Box::new(exe)), &w),
            Verdict::Changed
        );
        // Inline stdout (a remote test's log) is a change.
        let mut raw = result("bot-1", "hello.txt", "11");
        raw.stdout_raw = b"PASSED".to_vec();
        assert_eq!(
            judge(&att, &Current::Found(Box::new(raw)), &w),
            Verdict::Changed
        );
        // An exit code changed is a change.
        let mut code = result("bot-1", "hello.txt", "11");
        code.exit_code = 1;
        assert_eq!(
            judge(&att, &Current::Found(Box::new(code)), &w),
            Verdict::Changed
        );
        assert_eq!(judge(&att, &Current::NotFound, &w), Verdict::Missing);
        assert_eq!(
            judge(&att, &Current::Unusable("x".into()), &w),
            Verdict::Unreachable
        );
        // Any of several attested results counts.
        let two = vec![att[0].clone(), ResultView::of(&poisoned)];
        assert_eq!(
            judge(&two, &Current::Found(Box::new(poisoned)), &w),
            Verdict::Same
        );
    }

    /// The cheapest rewrite that kept every field the audit first compared:
    /// an output symlink added (ActionResult.output_symlinks, field 12,
    /// which Bazel materializes as an output), every other field kept.
    #[test]
    fn an_added_output_symlink_is_a_change() {
        let att = vec![ResultView::of(&result("bot-1", "hello.txt", "11"))];
        let mut bytes = result("bot-1", "hello.txt", "11").encode_to_vec();
        // field 12 (output_symlinks), length-delimited: OutputSymlink {
        // path = "hello.txt" (1), target = "/etc/passwd" (2) }
        let mut sym = Vec::new();
        for (tag, v) in [(0x0a_u8, "hello.txt"), (0x12, "/etc/passwd")] {
            sym.push(tag);
            sym.push(v.len() as u8);
            sym.extend_from_slice(v.as_bytes());
        }
        bytes.push(0x62);
        bytes.push(sym.len() as u8);
        bytes.extend_from_slice(&sym);
        let forged = ActionResult::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            judge(&att, &Current::Found(Box::new(forged)), &workers()),
            Verdict::Changed
        );
    }

    #[test]
    fn result_digest_is_the_encoding_digest() {
        let r = result("bot-1", "hello.txt", "11");
        let v = ResultView::of(&r);
        let bytes = r.encode_to_vec();
        assert_eq!(
            v.result_digest,
            format!(
                "{}/{}",
                hex::encode(sha2::Sha256::digest(&bytes)),
                bytes.len()
            )
        );
        assert_eq!(v.output_files[0].digest, "11/6");
    }
}
