//! Outputs bound to executions: each output file the stream reports for a
//! built target (TargetComplete output groups → NamedSetOfFiles, nested sets
//! resolved; TestResult test action outputs) must carry a digest that the
//! executor produced for this invocation, inside the stream's live window:
//! an output file of an executed (not cached), successful ActionResult in
//! the executor's raw answers (`executor.bin`).
//!
//! Pure: the BEP events and the ledger's ListOperations pages in, an
//! [`OutputBinding`] out. What binds and what does not:
//! - a `bytestream://…/blobs/HASH/SIZE` URI (and `File.digest`/`length`
//!   when Bazel sets them, which must agree with it) equal to an executed,
//!   successful ActionResult's `output_files` digest, or its stdout/stderr
//!   digest (a remote test's `test.log` is its test action's stdout): bound;
//! - a `file://` URI: a local output, unbound by definition; inline
//!   contents and symlinks carry no digest: unbound;
//! - an output served from the remote cache ("remote cache hit": Bazel asks
//!   the ActionCache first, so the executor shows no operation for it, or
//!   an operation answered with `cached_result`) is "cached-attested" only
//!   when an [`AttestedResult`] record in the ledger, an earlier execution
//!   the server witnessed in a proof it signed, is an executed (not cached),
//!   successful operation on one of the ledger's instance names, completed
//!   before this stream finished (plus the slack), whose ActionResult has
//!   an output file at the same path with the same digest (a `test.log`:
//!   its stdout digest). Anything else is unbound: an ActionCache entry
//!   nobody witnessed being produced, or one rewritten to another digest,
//!   whatever worker it names, is "not proven";
//! - a digest the executor produced only by a failed action or an
//!   operation outside the window, and not attested as above: unbound;
//! - files inside an ActionResult's `output_directories`: unbound, the
//!   ledger does not hold the Tree blobs yet;
//! - a file with no path prefix is a source file, and an output whose digest
//!   equals a source file listed for the same target is Bazel's own copy or
//!   symlink of it (e.g. an `sh_test` executable): nothing was executed to
//!   make them, so they need no binding; a target with only such files is
//!   "not applicable", never "bound".
//!
//! The window is BuildStarted to BuildFinished as the client stamped them,
//! widened by [`WINDOW_SLACK_SECONDS`] on each side for clock skew between
//! the Bazel host and the executor. The artifact holds no server-side
//! receive times, so a client can widen its own window; the outputs must
//! still be bound, which is what stops a decoy.

use std::collections::{BTreeMap, BTreeSet};

use proof_proto::bep::{build_event, build_event_id, File};
use proof_proto::ledger::{AttestedResult, OperationsPage};
use proof_proto::longrunning::operation;
use proof_proto::reapi::{ActionResult, ExecuteResponse, ExecutedActionMetadata};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Seconds of clock skew allowed on each side of the stream's window.
pub const WINDOW_SLACK_SECONDS: i64 = 60;
/// Most file entries kept from NamedSetOfFiles events (over all sets).
pub const MAX_SET_FILES: usize = 1_000_000;
/// Most files resolved for one target (nested sets expanded).
pub const MAX_TARGET_FILES: usize = 100_000;
/// Most unbound files named per target (the count is always complete).
pub const MAX_NAMED_UNBOUND: usize = 20;
/// Most operations outside the window named (the count is always complete).
pub const MAX_NAMED_OUTSIDE: usize = 50;

/// Bound, unbound or not applicable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingStatus {
    /// Every output file is an output the executor produced for this build.
    Bound,
    /// Every output file is either bound or served from the cache with an
    /// attested earlier execution that produced it (at least one is).
    CachedAttested,
    /// At least one output file is not.
    Unbound,
    /// Nothing to bind: not built, no outputs, or only source files.
    NotApplicable,
}

/// One output file that is not bound, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnboundFile {
    /// The file's path (path prefix and name).
    pub file: String,
    /// Its URI as the stream gives it (empty for inline contents).
    pub uri: String,
    /// `HASH/SIZE`, when the file names one.
    pub digest: Option<String>,
    pub why: String,
}

/// How one target's outputs bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetBinding {
    pub status: BindingStatus,
    /// Output files bound to an executed action.
    pub files_bound: u64,
    /// Output files not bound (all of them, even beyond those named).
    pub files_unbound: u64,
    /// Source files and Bazel's copies of them (nothing to bind).
    pub source_files: u64,
    /// Output files served from the cache, bound to an attested earlier
    /// execution.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_cached_attested: u64,
    /// Why the target is not applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The first [`MAX_NAMED_UNBOUND`] unbound files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unbound: Vec<UnboundFile>,
}

/// An executor operation that does not count for this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideOperation {
    pub operation: String,
    pub queued_at: Option<String>,
    pub completed_at: Option<String>,
    pub why: String,
}

/// The stream's live window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// BuildStarted time minus the slack.
    pub from: String,
    /// BuildFinished time plus the slack.
    pub to: String,
    pub slack_seconds: i64,
    /// Which times these are.
    pub times: String,
}

/// The outputs of the stream's targets against the executor's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBinding {
    /// `None` when the stream has no start or finish time (nothing counts).
    pub window: Option<Window>,
    /// Executed, successful operations inside the window: the only ones
    /// whose outputs bind.
    pub operations_in_window: u64,
    /// Operations inside the window the executor executed (not cached),
    /// whatever their exit code: what a claimed remote execution count is
    /// held against.
    pub executed_in_window: u64,
    /// Completed operations inside the window that do not bind: served
    /// from the action cache.
    pub cached_in_window: u64,
    /// Operations inside the window that failed or did not finish.
    pub failed_in_window: u64,
    /// Operations outside the window (all of them counted).
    pub operations_outside: u64,
    /// The first [`MAX_NAMED_OUTSIDE`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<OutsideOperation>,
    /// Output directories of binding operations whose Tree blob the ledger
    /// does not hold, or holds but does not match its digest or cannot be
    /// read: their files do not bind.
    pub output_directories_unread: u64,
    /// Output directories whose Tree blob was read (digest checked): their
    /// files bind.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_directories_read: u64,
    /// Why Tree blobs could not be read (the first [`MAX_NAMED_OUTSIDE`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tree_problems: Vec<String>,
    pub targets_bound: u64,
    /// Targets whose outputs are all bound, some only to attested earlier
    /// executions (cache hits).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub targets_cached_attested: u64,
    pub targets_unbound: u64,
    pub targets_not_applicable: u64,
    pub files_bound: u64,
    pub files_unbound: u64,
    /// Output files bound to attested earlier executions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_cached_attested: u64,
    /// Attested earlier executions in the ledger (all records).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attested_results: u64,
    /// Of them, those that cannot bind anything, and why (the first
    /// [`MAX_NAMED_OUTSIDE`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attested_refused: Vec<String>,
    /// Why the stream's file sets could not all be read (over a bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// The execution log's spawns held against the executed operations
    /// inside the window ([`crate::crosscheck`]), when the artifact holds
    /// an execution log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_log_check: Option<crate::crosscheck::ExecLogCheck>,
    /// Per target label.
    pub targets: BTreeMap<String, TargetBinding>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone)]
struct FileRef {
    path: String,
    source: bool,
    /// For a test action's output (TestResult): `testlogs/PKG/NAME/` of
    /// its label, where the ActionResult holds it (the stream gives no
    /// path prefix for it).
    testlogs: Option<String>,
    file: File,
}

#[derive(Debug, Default)]
struct TargetAcc {
    completed: bool,
    success: bool,
    sets: Vec<String>,
    files: Vec<FileRef>,
}

/// What the stream says about targets and their files, gathered event by
/// event.
#[derive(Debug, Default)]
pub(crate) struct BindingAccum {
    sets: BTreeMap<String, (Vec<FileRef>, Vec<String>)>,
    set_files: usize,
    incomplete: Option<String>,
    targets: BTreeMap<String, TargetAcc>,
    started_nanos: Option<i128>,
    finished_nanos: Option<i128>,
    /// The execution log's remote spawns, once a log was read.
    logged: Option<crate::crosscheck::LoggedSpawns>,
}

fn nanos(t: Option<&prost_types::Timestamp>, millis: i64) -> Option<i128> {
    match t {
        Some(t) => Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)),
        None if millis != 0 => Some(i128::from(millis) * 1_000_000),
        None => None,
    }
}

fn file_ref(f: &File) -> FileRef {
    let mut path = f.path_prefix.join("/");
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(&f.name);
    FileRef {
        path,
        source: f.path_prefix.is_empty(),
        testlogs: None,
        file: f.clone(),
    }
}

impl BindingAccum {
    /// An execution log is read (even one without spawns).
    pub(crate) fn exec_log_seen(&mut self) {
        self.logged.get_or_insert_with(Default::default);
    }

    /// One spawn of the execution log.
    pub(crate) fn push_spawn(&mut self, s: &crate::execlog::Spawn) {
        self.logged.get_or_insert_with(Default::default).push(s);
    }

    /// One event's id and payload.
    pub(crate) fn push(&mut self, id: Option<&build_event_id::Id>, payload: &build_event::Payload) {
        use build_event::Payload as P;
        match (payload, id) {
            (P::Started(s), _) => {
                self.started_nanos = nanos(s.start_time.as_ref(), s.start_time_millis);
            }
            (P::Finished(f), _) => {
                self.finished_nanos = nanos(f.finish_time.as_ref(), f.finish_time_millis);
            }
            (P::NamedSetOfFiles(s), Some(build_event_id::Id::NamedSet(sid))) => {
                if self.set_files.saturating_add(s.files.len()) > MAX_SET_FILES {
                    self.incomplete = Some(format!(
                        "the stream lists more than {MAX_SET_FILES} files in its named sets; the rest were not read"
                    ));
                    return;
                }
                self.set_files += s.files.len();
                self.sets.insert(
                    sid.id.clone(),
                    (
                        s.files.iter().map(file_ref).collect(),
                        s.file_sets.iter().map(|n| n.id.clone()).collect(),
                    ),
                );
            }
            (P::Completed(c), Some(build_event_id::Id::TargetCompleted(t))) => {
                let acc = self.targets.entry(t.label.clone()).or_default();
                acc.success = if acc.completed {
                    acc.success && c.success
                } else {
                    c.success
                };
                acc.completed = true;
                for g in &c.output_group {
                    acc.sets.extend(g.file_sets.iter().map(|s| s.id.clone()));
                    acc.files.extend(g.inline_files.iter().map(file_ref));
                }
                acc.files.extend(c.important_output.iter().map(file_ref));
                acc.files.extend(c.directory_output.iter().map(file_ref));
            }
            (P::Aborted(_), Some(build_event_id::Id::TargetCompleted(t))) => {
                let acc = self.targets.entry(t.label.clone()).or_default();
                acc.completed = true;
                acc.success = false;
            }
            (P::TestResult(r), Some(build_event_id::Id::TestResult(t))) => {
                let acc = self.targets.entry(t.label.clone()).or_default();
                // Test outputs (test.log has no path prefix in Bazel 4.2.3)
                // are outputs of the test action, never source files.
                acc.files
                    .extend(r.test_action_output.iter().map(|f| FileRef {
                        source: false,
                        testlogs: testlogs_dir(&t.label),
                        ..file_ref(f)
                    }));
            }
            _ => {}
        }
    }

    /// The files of `t`, nested sets resolved (each set once), or why not.
    fn resolve(&self, t: &TargetAcc) -> Result<Vec<FileRef>, String> {
        let mut out: Vec<FileRef> = t.files.clone();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = t.sets.iter().map(String::as_str).collect();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some((files, nested)) = self.sets.get(id) else {
                return Err(format!(
                    "the stream names file set {id:?} but never sends it"
                ));
            };
            out.extend(files.iter().cloned());
            if out.len() > MAX_TARGET_FILES {
                return Err(format!(
                    "more than {MAX_TARGET_FILES} output files: not checked"
                ));
            }
            todo.extend(nested.iter().map(String::as_str));
        }
        Ok(out)
    }
}

/// `HASH/SIZE` from a `bytestream://HOST/[INSTANCE/]blobs/HASH/SIZE` URI.
pub fn bytestream_digest(uri: &str) -> Option<(String, i64)> {
    let rest = uri.strip_prefix("bytestream://")?;
    let at = rest.rfind("/blobs/")?;
    let mut parts = rest[at + "/blobs/".len()..].split('/');
    let hash = parts.next()?;
    let size: i64 = parts.next()?.parse().ok()?;
    let hex = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && size >= 0 && parts.next().is_none()).then(|| (hash.to_string(), size))
}

/// What the executor did with one output digest.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    bound: bool,
    cached: bool,
    failed: bool,
    outside: bool,
}

fn ts_string(n: Option<i128>) -> Option<String> {
    n.and_then(crate::rfc3339_nanos)
}

/// The window in nanoseconds, and which times it is made of: the server's
/// own times when it signed (`proof serve`: the client's stamps are
/// claims), else BuildStarted/BuildFinished as stamped.
fn window_of(
    acc: &BindingAccum,
    origin: Option<&crate::Origin>,
) -> (Option<(i128, i128)>, &'static str) {
    let slack = i128::from(WINDOW_SLACK_SECONDS) * 1_000_000_000;
    let server_times = origin.and_then(|o| Some((o.opened_at_ms?, o.signed_at_ms?)));
    let window = match (server_times, acc.started_nanos, acc.finished_nanos) {
        (Some((o, s)), _, _) => Some((
            i128::from(o) * 1_000_000 - slack,
            i128::from(s) * 1_000_000 + slack,
        )),
        (None, Some(s), Some(f)) => Some((s - slack, f + slack)),
        _ => None,
    };
    let times = if server_times.is_some() {
        "the server's own times: when it opened the invocation (no later than it received BuildStarted) to when it began signing (after it received BuildFinished)"
    } else {
        "BuildStarted.start_time to BuildFinished.finish_time as the client stamped them (the artifact holds no server receive times)"
    };
    (window, times)
}

/// An [`OutputBinding`] with its window and nothing counted yet.
fn empty_binding(
    window: Option<(i128, i128)>,
    times: &str,
    attested: u64,
    incomplete: Option<String>,
) -> OutputBinding {
    OutputBinding {
        window: window.and_then(|(from, to)| {
            Some(Window {
                from: crate::rfc3339_nanos(from)?,
                to: crate::rfc3339_nanos(to)?,
                slack_seconds: WINDOW_SLACK_SECONDS,
                times: times.into(),
            })
        }),
        operations_in_window: 0,
        executed_in_window: 0,
        cached_in_window: 0,
        failed_in_window: 0,
        operations_outside: 0,
        outside: Vec::new(),
        output_directories_unread: 0,
        output_directories_read: 0,
        tree_problems: Vec::new(),
        targets_bound: 0,
        targets_cached_attested: 0,
        targets_unbound: 0,
        targets_not_applicable: 0,
        files_bound: 0,
        files_unbound: 0,
        files_cached_attested: 0,
        attested_results: attested,
        attested_refused: Vec::new(),
        incomplete,
        exec_log_check: None,
        targets: BTreeMap::new(),
    }
}

/// One distinct operation of the ledger, as the binding sees it.
struct OpFacts<'a> {
    name: &'a str,
    op: &'a proof_proto::longrunning::Operation,
    result: Option<ActionResult>,
    start: Option<i128>,
    end: Option<i128>,
    /// Inside the window, or why not.
    placed: Result<(), String>,
    completed: bool,
    cached: bool,
    /// Completed, executed (not cached), exit code 0.
    succeeded: bool,
}

/// Where an operation queued at `start` and completed at `end` lies.
fn place(
    window: Option<(i128, i128)>,
    start: Option<i128>,
    end: Option<i128>,
) -> Result<(), String> {
    match (window, start, end) {
        (None, _, _) => Err(
            "the stream states no start or finish time, so no operation can be placed in it"
                .to_string(),
        ),
        (_, None, _) | (_, _, None) => {
            Err("the executor recorded no queued and completed times for it".to_string())
        }
        (Some((from, _)), Some(s), _) if s < from => {
            Err("queued before the stream started: not this build's".to_string())
        }
        (Some((_, to)), _, Some(e)) if e > to => {
            Err("completed after the stream finished: not this build's".to_string())
        }
        _ => Ok(()),
    }
}

/// Every distinct operation of the ledger's OK pages (the first of a name
/// wins, the instance prefix stripped), placed against the window.
fn operation_facts(pages: &[OperationsPage], window: Option<(i128, i128)>) -> Vec<OpFacts<'_>> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for page in pages.iter().filter(|p| p.status_code == 0) {
        let prefix = format!("{}/", page.instance_name);
        for op in page.response.iter().flat_map(|r| &r.operations) {
            let name = op.name.strip_prefix(&prefix).unwrap_or(&op.name);
            if !names.insert(name.to_string()) {
                continue;
            }
            let resp = crate::attestation::execute_response(op);
            let (completed, cached) = crate::attestation::completion(op, resp.as_ref());
            let result = resp.and_then(|r| r.result);
            let md: Option<&ExecutedActionMetadata> =
                result.as_ref().and_then(|r| r.execution_metadata.as_ref());
            let start = md.and_then(|m| {
                nanos(
                    m.queued_timestamp
                        .as_ref()
                        .or(m.worker_start_timestamp.as_ref()),
                    0,
                )
            });
            let end = md.and_then(|m| nanos(m.worker_completed_timestamp.as_ref(), 0));
            let succeeded =
                completed && !cached && result.as_ref().is_some_and(|r| r.exit_code == 0);
            out.push(OpFacts {
                name,
                op,
                placed: place(window, start, end),
                start,
                end,
                completed,
                cached,
                succeeded,
                result,
            });
        }
    }
    out
}

/// Counts `f` into the window's figures of `out` (and names it when it
/// lies outside).
fn count_operation(out: &mut OutputBinding, f: &OpFacts) {
    if let Err(why) = &f.placed {
        out.operations_outside += 1;
        if out.outside.len() < MAX_NAMED_OUTSIDE {
            out.outside.push(OutsideOperation {
                operation: f.name.to_string(),
                queued_at: ts_string(f.start),
                completed_at: ts_string(f.end),
                why: why.clone(),
            });
        }
    } else if f.succeeded {
        out.operations_in_window += 1;
        out.executed_in_window += 1;
    } else if f.cached {
        out.cached_in_window += 1;
    } else {
        out.failed_in_window += 1;
        if f.completed {
            out.executed_in_window += 1;
        }
    }
}

/// The files of the output directories of a binding operation, from their
/// Tree blobs: (directory path, (hash, size) of its files) per directory
/// read; the others counted and explained in `out`.
fn read_trees(
    out: &mut OutputBinding,
    ledger: &crate::attestation::LedgerAccum,
    f: &OpFacts,
) -> Vec<(String, Vec<(String, i64)>)> {
    let Some(r) = f
        .result
        .as_ref()
        .filter(|_| f.placed.is_ok() && f.succeeded)
    else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for dir in &r.output_directories {
        match tree_files(ledger, dir) {
            Ok(files) => {
                out.output_directories_read += 1;
                dirs.push((dir.path.clone(), files));
            }
            Err(why) => {
                out.output_directories_unread += 1;
                if out.tree_problems.len() < MAX_NAMED_OUTSIDE {
                    out.tree_problems
                        .push(format!("{} ({}): {why}", dir.path, f.name));
                }
            }
        }
    }
    dirs
}

/// Marks every digest `f` produced (output files, stdout/stderr: a remote
/// test's test.log is its test action's stdout, files of read trees) with
/// how it was produced.
fn mark_produced(
    digests: &mut BTreeMap<(String, i64), Seen>,
    f: &OpFacts,
    dirs: &[(String, Vec<(String, i64)>)],
) {
    let Some(r) = &f.result else { return };
    let raw =
        |b: &[u8]| (!b.is_empty()).then(|| (hex::encode(sha2::Sha256::digest(b)), b.len() as i64));
    let produced = r
        .output_files
        .iter()
        .filter_map(|o| o.digest.as_ref())
        .chain(r.stdout_digest.as_ref())
        .chain(r.stderr_digest.as_ref())
        .map(|d| (d.hash.clone(), d.size_bytes))
        .chain(raw(&r.stdout_raw))
        .chain(raw(&r.stderr_raw))
        .chain(dirs.iter().flat_map(|(_, files)| files.iter().cloned()));
    for key in produced {
        let s = digests.entry(key).or_default();
        match (&f.placed, f.succeeded, f.cached) {
            (Err(_), _, _) => s.outside = true,
            (Ok(()), true, _) => s.bound = true,
            (Ok(()), false, true) => s.cached = true,
            (Ok(()), false, false) => s.failed = true,
        }
    }
}

/// `f` as the execution log is held against it, when it is an executed
/// (completed, not cached) operation inside the window.
fn executed_operation(
    f: &OpFacts,
    dirs: Vec<(String, Vec<(String, i64)>)>,
) -> Option<crate::crosscheck::ExecutedOperation> {
    if f.placed.is_err() || !f.completed || f.cached {
        return None;
    }
    let r = f.result.as_ref()?;
    let d = crate::attestation::operation_metadata(f.op)
        .action_digest
        .unwrap_or_default();
    Some(crate::crosscheck::ExecutedOperation {
        name: f.name.to_string(),
        action_digest: crate::ActionDigest {
            hash: d.hash,
            size_bytes: d.size_bytes,
        },
        worker: r
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .filter(|w| !w.is_empty()),
        exit_code: r.exit_code,
        files: r
            .output_files
            .iter()
            .filter_map(|o| {
                let d = o.digest.as_ref()?;
                Some((o.path.clone(), d.hash.clone(), d.size_bytes))
            })
            .collect(),
        dirs,
    })
}

/// How the outputs of one target the stream reports bind.
fn bind_target(
    acc: &BindingAccum,
    t: &TargetAcc,
    digests: &BTreeMap<(String, i64), Seen>,
    cached: &BTreeMap<(String, String, i64), String>,
    invocation_id: &str,
) -> TargetBinding {
    let mut b = TargetBinding {
        status: BindingStatus::NotApplicable,
        files_bound: 0,
        files_unbound: 0,
        source_files: 0,
        files_cached_attested: 0,
        note: None,
        unbound: Vec::new(),
    };
    if !t.completed {
        b.note = Some("not built: the stream has no TargetComplete for it".into());
        return b;
    }
    if !t.success {
        b.note = Some("not built: its TargetComplete reports a failure".into());
        return b;
    }
    match acc.resolve(t) {
        Err(why) => {
            b.files_unbound = 1;
            b.unbound.push(UnboundFile {
                file: String::new(),
                uri: String::new(),
                digest: None,
                why,
            });
        }
        Ok(files) => bind_files(&mut b, &files, digests, cached, invocation_id),
    }
    b.status = if b.files_unbound > 0 {
        BindingStatus::Unbound
    } else if b.files_cached_attested > 0 {
        BindingStatus::CachedAttested
    } else if b.files_bound > 0 {
        BindingStatus::Bound
    } else {
        b.note = Some(if b.source_files > 0 {
            format!(
                "only source files ({}): nothing was executed to make them",
                b.source_files
            )
        } else {
            "no output files".into()
        });
        BindingStatus::NotApplicable
    };
    b
}

/// Adds one target's binding to the totals of `out`.
fn tally(out: &mut OutputBinding, label: &str, b: TargetBinding) {
    out.files_bound += b.files_bound;
    out.files_unbound += b.files_unbound;
    out.files_cached_attested += b.files_cached_attested;
    match b.status {
        BindingStatus::Bound => out.targets_bound += 1,
        BindingStatus::CachedAttested => out.targets_cached_attested += 1,
        BindingStatus::Unbound => out.targets_unbound += 1,
        BindingStatus::NotApplicable => out.targets_not_applicable += 1,
    }
    out.targets.insert(label.to_string(), b);
}

/// The binding of the stream's outputs (from `acc`) to the executor's
/// answers (`ledger`), and the execution log's spawns (when one was read)
/// held against the executed operations inside the window.
pub(crate) fn derive(
    acc: &BindingAccum,
    ledger: &crate::attestation::LedgerAccum,
    origin: Option<&crate::Origin>,
    invocation_id: &str,
) -> OutputBinding {
    let attested = ledger.attested();
    let (window, times) = window_of(acc, origin);
    let mut out = empty_binding(window, times, attested.len() as u64, acc.incomplete.clone());
    // Every output digest the executor reported, and how.
    let mut digests: BTreeMap<(String, i64), Seen> = BTreeMap::new();
    let mut executed = Vec::new();
    for f in operation_facts(ledger.pages(), window) {
        count_operation(&mut out, &f);
        let dirs = read_trees(&mut out, ledger, &f);
        mark_produced(&mut digests, &f, &dirs);
        executed.extend(executed_operation(&f, dirs));
    }
    out.exec_log_check = acc
        .logged
        .as_ref()
        .map(|l| crate::crosscheck::check(l, &executed, invocation_id));
    let cached = attested_outputs(
        attested,
        ledger.instance_names(),
        window,
        &mut out.attested_refused,
    );
    for (label, t) in &acc.targets {
        let b = bind_target(acc, t, &digests, &cached, invocation_id);
        tally(&mut out, label, b);
    }
    out
}

/// Where a `test.log` binds in [`attested_outputs`]: its action's stdout.
const STDOUT: &str = "<stdout>";

/// Most files and directories read from one output directory's Tree.
pub const MAX_TREE_NODES: usize = 100_000;

/// The (hash, size) of every file inside the output directory `dir`, from
/// its Tree blob in the ledger (digest checked), or why not. A child
/// Directory is found by the SHA-256 of its encoding in the Tree.
fn tree_files(
    ledger: &crate::attestation::LedgerAccum,
    dir: &proof_proto::reapi::OutputDirectory,
) -> Result<Vec<(String, i64)>, String> {
    use proof_proto::reapi::{Directory, Tree};
    let d = dir
        .tree_digest
        .as_ref()
        .ok_or("the output directory names no Tree digest")?;
    let tree = Tree::decode(ledger.blob(d)?)
        .map_err(|e| format!("blob {}/{} is not a Tree: {e}", d.hash, d.size_bytes))?;
    let root = tree.root.as_ref().ok_or("the Tree has no root")?;
    let children: BTreeMap<(String, i64), &Directory> = tree
        .children
        .iter()
        .map(|c| {
            let b = c.encode_to_vec();
            ((hex::encode(sha2::Sha256::digest(&b)), b.len() as i64), c)
        })
        .collect();
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut nodes = 0usize;
    while let Some(dir) = todo.pop() {
        nodes += 1 + dir.files.len();
        if nodes > MAX_TREE_NODES {
            return Err(format!(
                "the Tree has more than {MAX_TREE_NODES} files and directories: not read"
            ));
        }
        for f in &dir.files {
            let fd = f
                .digest
                .as_ref()
                .ok_or_else(|| format!("file {:?} has no digest", f.name))?;
            out.push((fd.hash.clone(), fd.size_bytes));
        }
        for sub in &dir.directories {
            let sd = sub
                .digest
                .as_ref()
                .ok_or_else(|| format!("directory {:?} has no digest", sub.name))?;
            let child = children
                .get(&(sd.hash.clone(), sd.size_bytes))
                .ok_or_else(|| {
                    format!(
                        "directory {:?} ({}/{}) is not among the Tree's children",
                        sub.name, sd.hash, sd.size_bytes
                    )
                })?;
            todo.push(child);
        }
    }
    Ok(out)
}

/// The ActionResult of a done, executed (not cached), successful
/// operation, or why it is not one.
fn executed_result(op: &proof_proto::longrunning::Operation) -> Result<ActionResult, String> {
    if !op.done {
        return Err("not done".to_string());
    }
    let resp = match &op.result {
        Some(operation::Result::Response(r)) if r.type_url.ends_with("ExecuteResponse") => {
            ExecuteResponse::decode(r.value.as_slice())
                .map_err(|e| format!("not an ExecuteResponse: {e}"))?
        }
        _ => return Err("no ExecuteResponse".to_string()),
    };
    if resp.status.as_ref().is_some_and(|s| s.code != 0) {
        return Err("the execution failed".to_string());
    }
    if resp.cached_result {
        return Err("a cached answer, not an execution".to_string());
    }
    let r = resp.result.ok_or("no ActionResult")?;
    if r.exit_code != 0 {
        return Err(format!("exit code {}", r.exit_code));
    }
    Ok(r)
}

/// What a cache hit binds to: (output path, hash, size) of each output
/// file, and ([`STDOUT`], hash, size) of the stdout (a test's `test.log`).
/// A test output's path in the ActionResult also keys as its part from
/// `testlogs/` on (`bazel-out/CFG/testlogs/PKG/NAME/test.xml`).
fn result_keys(r: &ActionResult) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for f in &r.output_files {
        let Some(d) = f.digest.as_ref() else { continue };
        out.push((f.path.clone(), d.hash.clone(), d.size_bytes));
        if let Some(at) = f.path.find("/testlogs/") {
            out.push((f.path[at + 1..].to_string(), d.hash.clone(), d.size_bytes));
        }
    }
    if let Some(d) = &r.stdout_digest {
        out.push((STDOUT.to_string(), d.hash.clone(), d.size_bytes));
    }
    out
}

/// `testlogs/PKG/NAME/` of a main-repository test label (`//PKG:NAME`).
fn testlogs_dir(label: &str) -> Option<String> {
    let rest = label.strip_prefix("//")?;
    let (pkg, name) = rest.split_once(':')?;
    if name.is_empty() || name.contains("..") || pkg.contains("..") {
        return None;
    }
    Some(if pkg.is_empty() {
        format!("testlogs/{name}/")
    } else {
        format!("testlogs/{pkg}/{name}/")
    })
}

/// The keys a stream's output file is looked up by among attested
/// results: its path; a test output's `testlogs/PKG/NAME/FILE` instead,
/// and a `test.log` also the test action's stdout.
fn claimed_keys(f: &FileRef, hash: &str, size: i64) -> Vec<(String, String, i64)> {
    let key = |p: String| (p, hash.to_string(), size);
    match &f.testlogs {
        Some(dir) => {
            let mut out = vec![key(format!("{dir}{}", f.file.name))];
            if f.file.name == "test.log" {
                out.push(key(STDOUT.to_string()));
            }
            out
        }
        None if f.path.is_empty() => Vec::new(),
        None => vec![key(f.path.clone())],
    }
}

/// A key of [`claimed_outputs`] and [`witnessed_results`]: an output
/// file's path (`<stdout>` for a `test.log`), sha256 and size.
pub type OutputKey = (String, String, i64);

/// Every output file (not a source file) of a target the stream reports
/// as built that names a `bytestream://` digest: what the server looks up
/// among the executions it witnessed before (a remote cache hit binds only
/// to one). Undecodable events are skipped; at most [`MAX_SET_FILES`].
pub fn claimed_outputs(events: impl IntoIterator<Item = impl AsRef<[u8]>>) -> BTreeSet<OutputKey> {
    use proof_proto::bep::BuildEvent;
    let mut acc = BindingAccum::default();
    for e in events {
        let Ok(ev) = BuildEvent::decode(e.as_ref()) else {
            continue;
        };
        let id = ev.id.and_then(|i| i.id);
        if let Some(p) = &ev.payload {
            acc.push(id.as_ref(), p);
        }
    }
    let mut out = BTreeSet::new();
    for t in acc.targets.values().filter(|t| t.completed && t.success) {
        let Ok(files) = acc.resolve(t) else { continue };
        for f in files.iter().filter(|f| !f.source) {
            if let Some(proof_proto::bep::file::File::Uri(u)) = &f.file.file {
                if let Some((hash, size)) = bytestream_digest(u) {
                    out.extend(claimed_keys(f, &hash, size));
                }
            }
        }
    }
    out
}

/// The executions in a ledger (`executor.bin` bytes) that a later cache
/// hit may bind to: each done, executed, successful operation of its
/// pages, as an [`AttestedResult`] record, with the keys of its outputs.
/// Earlier attested records in it are not repeated.
pub fn witnessed_results(
    ledger: &[u8],
) -> Result<Vec<(Vec<OutputKey>, AttestedResult)>, crate::EvidenceError> {
    let l = crate::attestation::LedgerAccum::read(ledger)?;
    let invocation_id = l.invocation_id().to_string();
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for page in l.pages().iter().filter(|p| p.status_code == 0) {
        for op in page.response.iter().flat_map(|r| &r.operations) {
            if !names.insert(op.name.clone()) {
                continue;
            }
            let Ok(r) = executed_result(op) else { continue };
            let keys = result_keys(&r);
            if keys.is_empty() {
                continue;
            }
            out.push((
                keys,
                AttestedResult {
                    invocation_id: invocation_id.clone(),
                    instance_name: page.instance_name.clone(),
                    operation: Some(op.clone()),
                },
            ));
        }
    }
    Ok(out)
}

/// Output files (path, hash, size) of the attested earlier executions that
/// may bind a cache hit, each with the invocation that executed it; the
/// records that cannot, and why, go to `refused`.
fn attested_outputs(
    attested: &[AttestedResult],
    instance_names: &[String],
    window: Option<(i128, i128)>,
    refused: &mut Vec<String>,
) -> BTreeMap<(String, String, i64), String> {
    let mut out = BTreeMap::new();
    for a in attested {
        let name = a
            .operation
            .as_ref()
            .map_or("(no operation)", |o| o.name.as_str());
        let why = (|| {
            if !instance_names.contains(&a.instance_name) {
                return Err(format!(
                    "listed under instance {:?}, not one this ledger asked ({instance_names:?})",
                    a.instance_name
                ));
            }
            let r = executed_result(a.operation.as_ref().ok_or("no operation")?)?;
            let end = r
                .execution_metadata
                .as_ref()
                .and_then(|m| nanos(m.worker_completed_timestamp.as_ref(), 0))
                .ok_or("no completion time")?;
            match window {
                None => return Err("the stream states no finish time".to_string()),
                Some((_, to)) if end > to => {
                    return Err("completed after this stream finished".to_string())
                }
                _ => {}
            }
            Ok(r)
        })();
        match why {
            Ok(r) => {
                for key in result_keys(&r) {
                    out.entry(key).or_insert_with(|| a.invocation_id.clone());
                }
            }
            Err(why) => {
                if refused.len() < MAX_NAMED_OUTSIDE {
                    refused.push(format!("{name} (invocation {}): {why}", a.invocation_id));
                }
            }
        }
    }
    out
}

/// What one output file of a target comes to.
enum FileOutcome {
    /// A source file, or Bazel's copy of one.
    Source,
    /// A directory entry whose files are listed (and bind) one by one.
    Skip,
    Bound,
    CachedAttested,
    Unbound(String),
}

/// The lookups a target's files are bound against.
struct Produced<'a> {
    digests: &'a BTreeMap<(String, i64), Seen>,
    cached: &'a BTreeMap<(String, String, i64), String>,
    invocation_id: &'a str,
}

fn uri_digest(f: &FileRef) -> Option<(String, i64)> {
    match &f.file.file {
        Some(proof_proto::bep::file::File::Uri(u)) => bytestream_digest(u),
        _ => None,
    }
}

/// A file naming a `bytestream://` digest: bound to an execution in the
/// window, to an attested earlier one, or why not.
fn digest_outcome(
    f: &FileRef,
    (hash, size): (&String, i64),
    sources: &BTreeSet<(String, i64)>,
    p: &Produced,
) -> FileOutcome {
    use FileOutcome as O;
    if !f.file.digest.is_empty() && f.file.digest != *hash {
        return O::Unbound(format!(
            "File.digest {} disagrees with the URI's digest",
            f.file.digest
        ));
    }
    if f.file.length != 0 && f.file.length != size {
        return O::Unbound(format!(
            "File.length {} disagrees with the URI's size",
            f.file.length
        ));
    }
    if sources.contains(&(hash.clone(), size)) {
        return O::Source;
    }
    let seen = p
        .digests
        .get(&(hash.clone(), size))
        .copied()
        .unwrap_or_default();
    if seen.bound {
        return O::Bound;
    }
    if claimed_keys(f, hash, size)
        .iter()
        .any(|k| p.cached.contains_key(k))
    {
        return O::CachedAttested;
    }
    O::Unbound(if seen.cached {
        "served from the action cache (a remote cache hit), and no execution the server witnessed produced it at this path: not proven".to_string()
    } else if seen.failed {
        "produced only by a failed or unfinished action".to_string()
    } else if seen.outside {
        "produced only by an operation outside the stream's window".to_string()
    } else {
        format!("the executor produced no output with this digest for invocation {}, and no earlier execution the server witnessed produced it at this path (a remote cache hit is proven only by one)", p.invocation_id)
    })
}

/// What the output file `f` (one of `files`) comes to.
fn file_outcome(
    f: &FileRef,
    files: &[FileRef],
    sources: &BTreeSet<(String, i64)>,
    p: &Produced,
) -> FileOutcome {
    use proof_proto::bep::file::File as F;
    use FileOutcome as O;
    if f.source {
        return O::Source;
    }
    match (&f.file.file, uri_digest(f)) {
        (Some(F::Uri(u)), _) if u.starts_with("file://") => {
            O::Unbound("a file:// URI: a local output, not one the executor produced".to_string())
        }
        (Some(F::Contents(_)), _) => O::Unbound("inline contents: no digest to bind".to_string()),
        (Some(F::SymlinkTargetPath(_)), _) => {
            O::Unbound("a symlink: no digest to bind".to_string())
        }
        // A directory (tree artifact) entry: no bytes of its own, its
        // files are listed under it and bind one by one.
        (None, _)
            if files.iter().any(|g| {
                g.path
                    .strip_prefix(f.path.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            }) =>
        {
            O::Skip
        }
        (None, _) => O::Unbound("no URI: no digest to bind".to_string()),
        (Some(F::Uri(_)), None) => O::Unbound(
            "the URI names no bytestream blob digest (bytestream://HOST/blobs/SHA256/SIZE)"
                .to_string(),
        ),
        (Some(F::Uri(_)), Some((hash, size))) => digest_outcome(f, (&hash, size), sources, p),
    }
}

fn bind_files(
    b: &mut TargetBinding,
    files: &[FileRef],
    digests: &BTreeMap<(String, i64), Seen>,
    cached: &BTreeMap<(String, String, i64), String>,
    invocation_id: &str,
) {
    use proof_proto::bep::file::File as F;
    let p = Produced {
        digests,
        cached,
        invocation_id,
    };
    // Digests of the source files listed for this target: an output with
    // one of them is Bazel's copy or symlink of that source.
    let sources: BTreeSet<(String, i64)> = files
        .iter()
        .filter(|f| f.source)
        .filter_map(uri_digest)
        .collect();
    let mut done = BTreeSet::new();
    for f in files {
        if !done.insert((f.path.clone(), format!("{:?}", f.file.file))) {
            continue;
        }
        let why = match file_outcome(f, files, &sources, &p) {
            FileOutcome::Source => {
                b.source_files += 1;
                continue;
            }
            FileOutcome::Skip => continue,
            FileOutcome::Bound => {
                b.files_bound += 1;
                continue;
            }
            FileOutcome::CachedAttested => {
                b.files_cached_attested += 1;
                continue;
            }
            FileOutcome::Unbound(why) => why,
        };
        b.files_unbound += 1;
        if b.unbound.len() < MAX_NAMED_UNBOUND {
            b.unbound.push(UnboundFile {
                file: f.path.clone(),
                uri: match &f.file.file {
                    Some(F::Uri(u)) => u.clone(),
                    _ => String::new(),
                },
                digest: uri_digest(f).map(|(h, s)| format!("{h}/{s}")),
                why,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytestream_uris_name_their_digest() {
        let h = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(
            bytestream_digest(&format!("bytestream://127.0.0.1:50051/blobs/{h}/6")),
            Some((h.to_string(), 6))
        );
        assert_eq!(
            bytestream_digest(&format!("bytestream://host/main/blobs/{h}/6")),
            Some((h.to_string(), 6))
        );
        assert_eq!(bytestream_digest(&format!("file:///x/blobs/{h}/6")), None);
        assert_eq!(bytestream_digest("bytestream://host/blobs/abc/6"), None);
        assert_eq!(
            bytestream_digest(&format!("bytestream://h/blobs/{h}/x")),
            None
        );
        assert_eq!(
            bytestream_digest(&format!("bytestream://h/blobs/{h}/6/7")),
            None
        );
    }
}
