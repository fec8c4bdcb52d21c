//! Trust-posture evidence: who could write the action cache (read-only
//! lanes), where external inputs came from, the gRPC calls Bazel made to the
//! executor (`--experimental_remote_grpc_log`), and the executor's own
//! ActionCache answers for a deterministic sample of the remote actions
//! (corroboration). All derived from raw bytes, like the rest of the
//! evidence; `docs/posture.md` states the rules the policy applies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use proof_proto::corroboration::{corroboration_record, Answer, CorroborationRecord};
use proof_proto::reapi::ActionResult;
use proof_proto::remote_logging::{rpc_call_details, ExecuteResponse, LogEntry};
use proof_stream::delimited::DelimitedReader;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::execlog::ActionDigest;
use crate::EvidenceError;

/// Largest single record of a gRPC log or corroboration file accepted.
pub const MAX_POSTURE_RECORD: usize = 64 * 1024 * 1024;

/// Default number of action digests asked of the executor.
pub const DEFAULT_SAMPLE_SIZE: usize = 16;

/// The registry Bazel uses when no `--registry` is given.
pub const DEFAULT_REGISTRY: &str = "https://bcr.bazel.build";

/// The deterministic corroboration sample: the distinct digests sorted
/// (hash, then size); all of them when there are at most `n`, otherwise the
/// `n` digests at indices `floor(i * len / n)` for `i` in `0..n` (evenly
/// spaced, always including the first).
pub fn sample_digests(candidates: &[ActionDigest], n: usize) -> Vec<ActionDigest> {
    let sorted: Vec<ActionDigest> = candidates
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if sorted.len() <= n {
        return sorted;
    }
    let len = sorted.len();
    (0..n).map(|i| sorted[i * len / n].clone()).collect()
}

/// One BEP Fetch event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRecord {
    pub url: String,
    /// Fetch.success; several events for one URL: any success.
    pub success: bool,
}

/// Where external inputs (repository downloads) came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalInputs {
    /// Every BEP Fetch event (a download Bazel's downloader attempted from
    /// the network), sorted by URL. Inputs served by `--distdir` or the
    /// repository cache produce no Fetch event.
    pub fetches: Vec<FetchRecord>,
    /// `--distdir` / `--experimental_distdir` values, in order.
    pub distdirs: Vec<String>,
    /// Effective `--repository_cache` (`None`: not given, Bazel's default
    /// cache; `Some("")`: disabled).
    pub repository_cache: Option<String>,
    /// Effective `--lockfile_mode` (`None`: not given).
    pub lockfile_mode: Option<String>,
    /// `--registry` values in order (empty: Bazel's default registry).
    pub registries: Vec<String>,
    /// Effective `--repository_disable_download` (7.1+), `None` when not given.
    pub repository_disable_download: Option<bool>,
    /// Successful fetches of registry files while `--lockfile_mode=error`
    /// pins them (URL under a `--registry`, or under the default registry
    /// when none is given).
    pub lockfile_pinned_fetches: Vec<String>,
    /// Successful fetches that are not lockfile-pinned: inputs that came
    /// from the network. `--require-pinned-inputs` fails when non-empty.
    pub network_fetches: Vec<String>,
}

/// Facts about action-cache writes by this lane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWrites {
    /// `ActionCache/UpdateActionResult` calls in the gRPC log (`None`
    /// without a gRPC log in the artifact).
    pub update_action_result_calls: Option<u64>,
    /// Effective `--disk_cache` (a local cache; its writes are not remote
    /// action-cache writes).
    pub disk_cache: Option<String>,
}

/// Summary of Bazel's `--experimental_remote_grpc_log`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcLogSummary {
    /// Log entries (gRPC calls).
    pub calls: u64,
    /// Method name → calls.
    pub methods: BTreeMap<String, u64>,
    /// Calls that closed with a non-OK status.
    pub failed_calls: u64,
    /// `Execution/Execute` calls.
    pub execute_calls: u64,
    /// Action digests of the Execute calls, sorted, distinct.
    pub execute_action_digests: Vec<ActionDigest>,
    /// Instance names of the Execute requests, sorted, distinct.
    pub execute_instance_names: Vec<String>,
    /// Execute responses that said the result came from the cache.
    pub execute_cached_results: u64,
    /// `ActionCache/UpdateActionResult` calls (writes to the remote AC).
    pub update_action_result_calls: u64,
    /// `ActionCache/GetActionResult` calls (remote cache lookups).
    pub get_action_result_calls: u64,
}

/// Where the corroborated action digests came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestSource {
    /// Remote-executed spawns' digests in the execution log (Bazel 6+).
    ExecLog,
    /// Execute calls in the gRPC log (Bazel 4.x, whose exec log has none).
    RemoteGrpcLog,
}

/// A digest of an output, stdout or stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDigest {
    pub path: String,
    pub hash: String,
    pub size_bytes: i64,
}

/// What the executor's ActionCache said about one sampled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorroboratedAction {
    pub action_digest: ActionDigest,
    /// gRPC status code of GetActionResult (0 OK, 5 NOT_FOUND, ...).
    pub status_code: i32,
    /// The status message of a non-OK answer.
    pub status_message: Option<String>,
    /// The executor returned an ActionResult.
    pub found: bool,
    /// ActionResult.exit_code.
    pub exit_code: Option<i32>,
    /// The exit code the stream (exec log or gRPC log) shows for this action.
    pub stream_exit_code: Option<i32>,
    /// Output files and directories (tree digests), sorted by path; stdout
    /// and stderr as paths `<stdout>` / `<stderr>`.
    pub outputs: Vec<OutputDigest>,
    /// ExecutedActionMetadata.worker.
    pub worker: Option<String>,
    pub queued_at: Option<String>,
    pub worker_start_at: Option<String>,
    pub worker_completed_at: Option<String>,
}

/// The executor's answers for the corroboration sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corroboration {
    /// The endpoint that was asked.
    pub executor: String,
    pub instance_name: String,
    /// The requested sample size.
    pub sample_size: u64,
    /// Where the candidate digests came from; `None`: no digests known.
    pub digest_source: Option<DigestSource>,
    /// Distinct remote action digests in the stream.
    pub candidates: u64,
    /// The answered digests are exactly [`sample_digests`] of the
    /// candidates, in that order (the recorder did not pick or skip any).
    pub sample_matches: bool,
    pub sampled: u64,
    pub found: u64,
    pub not_found: u64,
    /// Answers with another non-OK status (or an undecodable result).
    pub errors: u64,
    /// Found results whose exit code differs from the stream's.
    pub exit_code_mismatches: u64,
    /// One entry per answer, in sample order.
    pub results: Vec<CorroboratedAction>,
}

impl ExternalInputs {
    /// No Fetch event and no repository option: omitted from the JSON.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl CacheWrites {
    /// Nothing known: omitted from the JSON.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Default)]
pub(crate) struct GrpcAccum {
    pub(crate) summary: GrpcLogSummary,
    pub(crate) digests: BTreeSet<ActionDigest>,
    pub(crate) instances: BTreeSet<String>,
    /// digest → exit code of the last finished Execute for it.
    pub(crate) exit_codes: BTreeMap<ActionDigest, i32>,
}

impl GrpcAccum {
    pub(crate) fn push(&mut self, log: impl Read) -> Result<(), EvidenceError> {
        for (index, record) in DelimitedReader::with_limit(log, MAX_POSTURE_RECORD).enumerate() {
            let record = record.map_err(EvidenceError::GrpcLogFraming)?;
            let entry = LogEntry::decode(record.as_slice()).map_err(|source| {
                EvidenceError::BadGrpcLog {
                    index: index as u64,
                    source,
                }
            })?;
            let s = &mut self.summary;
            s.calls = s.calls.saturating_add(1);
            *s.methods.entry(entry.method_name.clone()).or_insert(0) += 1;
            if entry.status.as_ref().is_some_and(|st| st.code != 0) {
                s.failed_calls = s.failed_calls.saturating_add(1);
            }
            let method = entry.method_name.rsplit('/').next().unwrap_or_default();
            let details = entry.details.and_then(|d| d.details);
            match (method, details) {
                ("Execute", Some(rpc_call_details::Details::Execute(ex))) => {
                    s.execute_calls = s.execute_calls.saturating_add(1);
                    let Some(req) = ex.request else { continue };
                    self.instances.insert(req.instance_name);
                    let Some(d) = req.action_digest.filter(|d| !d.hash.is_empty()) else {
                        continue;
                    };
                    let digest = ActionDigest {
                        hash: d.hash,
                        size_bytes: d.size_bytes,
                    };
                    self.digests.insert(digest.clone());
                    for op in ex.responses.iter().filter(|o| o.done) {
                        let Some(any) = &op.response else { continue };
                        if !any.type_url.ends_with("ExecuteResponse") {
                            continue;
                        }
                        let Ok(resp) = ExecuteResponse::decode(any.value.as_slice()) else {
                            continue;
                        };
                        if resp.cached_result {
                            s.execute_cached_results = s.execute_cached_results.saturating_add(1);
                        }
                        if let Some(r) = resp.result {
                            self.exit_codes.insert(digest.clone(), r.exit_code);
                        }
                    }
                }
                ("Execute", _) => s.execute_calls = s.execute_calls.saturating_add(1),
                ("UpdateActionResult", _) => {
                    s.update_action_result_calls = s.update_action_result_calls.saturating_add(1);
                }
                ("GetActionResult", _) => {
                    s.get_action_result_calls = s.get_action_result_calls.saturating_add(1);
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> GrpcLogSummary {
        let mut s = self.summary;
        s.execute_action_digests = self.digests.into_iter().collect();
        s.execute_instance_names = self.instances.into_iter().collect();
        s
    }
}

/// The raw corroboration records, decoded.
#[derive(Debug, Default)]
pub(crate) struct CorroborationAccum {
    pub(crate) executor: String,
    pub(crate) instance_name: String,
    pub(crate) sample_size: u64,
    pub(crate) answers: Vec<Answer>,
}

impl CorroborationAccum {
    pub(crate) fn read(input: impl Read) -> Result<Self, EvidenceError> {
        let mut acc = CorroborationAccum::default();
        let mut header = false;
        for (index, record) in DelimitedReader::with_limit(input, MAX_POSTURE_RECORD).enumerate() {
            let record = record.map_err(EvidenceError::CorroborationFraming)?;
            let bad = |what: String| EvidenceError::BadCorroboration {
                index: index as u64,
                what,
            };
            let rec = CorroborationRecord::decode(record.as_slice())
                .map_err(|e| bad(format!("not a CorroborationRecord: {e}")))?;
            match (rec.record, header) {
                (Some(corroboration_record::Record::Header(h)), false) => {
                    acc.executor = h.executor;
                    acc.instance_name = h.instance_name;
                    acc.sample_size = h.sample_size;
                    header = true;
                }
                (Some(corroboration_record::Record::Answer(a)), true) => acc.answers.push(a),
                (Some(corroboration_record::Record::Header(_)), true) => {
                    return Err(bad("a second header".into()))
                }
                (_, false) => return Err(bad("the first record must be the header".into())),
                (None, true) => return Err(bad("an empty record".into())),
            }
        }
        if !header {
            return Err(EvidenceError::BadCorroboration {
                index: 0,
                what: "the file has no header record".into(),
            });
        }
        Ok(acc)
    }

    pub(crate) fn finish(
        self,
        source: Option<DigestSource>,
        candidates: &[ActionDigest],
        stream_exit: &BTreeMap<ActionDigest, i32>,
    ) -> Corroboration {
        let expected = sample_digests(
            candidates,
            usize::try_from(self.sample_size).unwrap_or(usize::MAX),
        );
        let mut results = Vec::with_capacity(self.answers.len());
        let (mut found, mut not_found, mut errors, mut mismatches) = (0u64, 0u64, 0u64, 0u64);
        for a in self.answers {
            let d = a.action_digest.unwrap_or_default();
            let action_digest = ActionDigest {
                hash: d.hash,
                size_bytes: d.size_bytes,
            };
            let stream_exit_code = stream_exit.get(&action_digest).copied();
            let mut r = CorroboratedAction {
                action_digest,
                status_code: a.status_code,
                status_message: Some(a.status_message).filter(|m| !m.is_empty()),
                found: false,
                exit_code: None,
                stream_exit_code,
                outputs: Vec::new(),
                worker: None,
                queued_at: None,
                worker_start_at: None,
                worker_completed_at: None,
            };
            match a.status_code {
                0 => match ActionResult::decode(a.action_result.as_slice()) {
                    Ok(ar) => {
                        found += 1;
                        fill(&mut r, ar);
                        if r.stream_exit_code.is_some_and(|s| Some(s) != r.exit_code) {
                            mismatches += 1;
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        r.status_message =
                            Some(format!("the ActionResult bytes do not decode: {e}"));
                    }
                },
                5 => not_found += 1,
                _ => errors += 1,
            }
            results.push(r);
        }
        let answered: Vec<&ActionDigest> = results.iter().map(|r| &r.action_digest).collect();
        let sample_matches = answered.len() == expected.len()
            && answered.iter().zip(&expected).all(|(a, e)| *a == e);
        Corroboration {
            executor: self.executor,
            instance_name: self.instance_name,
            sample_size: self.sample_size,
            digest_source: source,
            candidates: candidates.len() as u64,
            sample_matches,
            sampled: results.len() as u64,
            found,
            not_found,
            errors,
            exit_code_mismatches: mismatches,
            results,
        }
    }
}

pub(crate) fn ts(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    crate::rfc3339_nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

fn fill(r: &mut CorroboratedAction, ar: ActionResult) {
    r.found = true;
    r.exit_code = Some(ar.exit_code);
    let mut outputs: Vec<OutputDigest> = Vec::new();
    for f in ar.output_files {
        let d = f.digest.unwrap_or_default();
        outputs.push(OutputDigest {
            path: f.path,
            hash: d.hash,
            size_bytes: d.size_bytes,
        });
    }
    for dir in ar.output_directories {
        let d = dir.tree_digest.unwrap_or_default();
        outputs.push(OutputDigest {
            path: dir.path,
            hash: d.hash,
            size_bytes: d.size_bytes,
        });
    }
    outputs.sort_by(|a, b| a.path.cmp(&b.path));
    for (name, d) in [
        ("<stdout>", ar.stdout_digest),
        ("<stderr>", ar.stderr_digest),
    ] {
        if let Some(d) = d.filter(|d| !d.hash.is_empty()) {
            outputs.push(OutputDigest {
                path: name.to_string(),
                hash: d.hash,
                size_bytes: d.size_bytes,
            });
        }
    }
    r.outputs = outputs;
    if let Some(m) = ar.execution_metadata {
        r.worker = Some(m.worker).filter(|w| !w.is_empty());
        r.queued_at = ts(m.queued_timestamp.as_ref());
        r.worker_start_at = ts(m.worker_start_timestamp.as_ref());
        r.worker_completed_at = ts(m.worker_completed_timestamp.as_ref());
    }
}

/// Whether `url` is a registry file URL under one of `registries` (or the
/// default registry when none is given).
pub(crate) fn under_registry(url: &str, registries: &[String]) -> bool {
    let default = [DEFAULT_REGISTRY.to_string()];
    let regs = if registries.is_empty() {
        &default[..]
    } else {
        registries
    };
    regs.iter().any(|r| {
        let r = r.trim_end_matches('/');
        !r.is_empty() && url.starts_with(r) && url[r.len()..].starts_with('/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(h: &str) -> ActionDigest {
        ActionDigest {
            hash: h.to_string(),
            size_bytes: 1,
        }
    }

    #[test]
    fn sample_is_sorted_distinct_and_evenly_spaced() {
        let all: Vec<ActionDigest> = (0..10).rev().map(|i| d(&format!("{i:02}"))).collect();
        let mut with_dup = all.clone();
        with_dup.push(d("03"));
        assert_eq!(sample_digests(&with_dup, 16).len(), 10);
        assert_eq!(sample_digests(&with_dup, 16)[0], d("00"));
        let s: Vec<String> = sample_digests(&all, 4)
            .into_iter()
            .map(|x| x.hash)
            .collect();
        // indices 0, 2, 5, 7 of 00..09
        assert_eq!(s, ["00", "02", "05", "07"]);
        assert!(sample_digests(&all, 0).is_empty());
    }

    #[test]
    fn registry_prefix_needs_a_path_boundary() {
        let none: Vec<String> = Vec::new();
        assert!(under_registry(
            "https://bcr.bazel.build/modules/foo/1.0/MODULE.bazel",
            &none
        ));
        assert!(!under_registry("https://bcr.bazel.build.evil/x", &none));
        let own = vec!["https://reg.example/".to_string()];
        assert!(under_registry(
            "https://reg.example/modules/a/source.json",
            &own
        ));
        assert!(!under_registry("https://bcr.bazel.build/modules/a", &own));
    }
}
