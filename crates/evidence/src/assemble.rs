//! The steps of [`EvidenceBuilder::finish`]: one function per part of the
//! predicate it assembles (the stream's start, posture inputs, worker
//! images, execution-log summary, test outcomes). Pure, like the rest of
//! the crate.

use std::collections::BTreeMap;

use crate::options::{self, Opt};
use crate::posture::{self, Corroboration, DigestSource, GrpcLogSummary};
use crate::{
    candidates, test_status_name, EvidenceBuilder, EvidenceError, ExecLogFormat, ExecLogSummary,
    ExecutorAttestation, ImageSource, Started, TestOutcome, WorkerImage,
};

impl EvidenceBuilder {
    /// The BuildStarted event, required, and the rule that the execution
    /// log (when one was read and names an invocation) is of the same
    /// invocation.
    pub(crate) fn checked_start(&mut self) -> Result<Started, EvidenceError> {
        let Some(started) = self.started.take() else {
            return Err(EvidenceError::NoBuildStarted {
                events: self.events,
            });
        };
        if let Some(log_id) = self.exec.as_ref().and_then(|e| e.invocation_id.as_ref()) {
            if *log_id != started.uuid {
                return Err(EvidenceError::InvocationMismatch {
                    bep: started.uuid,
                    exec_log: log_id.clone(),
                });
            }
        }
        Ok(started)
    }

    /// The corroboration (the executor's ActionCache answers checked
    /// against the logs' digests and exit codes) and the gRPC log summary.
    /// Takes both accumulators and the gRPC log.
    pub(crate) fn corroboration_and_grpc_log(
        &mut self,
    ) -> (Option<Corroboration>, Option<GrpcLogSummary>) {
        let grpc = self.grpc.take();
        let exit_by_digest = self
            .exec
            .as_ref()
            .map(|e| e.exit_by_digest.clone())
            .unwrap_or_default();
        let (source, candidates) = candidates(self.exec.as_ref(), grpc.as_ref());
        let corroboration = self.corroboration.take().map(|c| {
            let stream_exit = match source {
                Some(DigestSource::RemoteGrpcLog) => grpc
                    .as_ref()
                    .map(|g| g.exit_codes.clone())
                    .unwrap_or_default(),
                _ => exit_by_digest,
            };
            c.finish(source, &candidates, &stream_exit)
        });
        (corroboration, grpc.map(posture::GrpcAccum::finish))
    }

    /// The worker images. With a ledger that shows executions, the
    /// executor's images are the only ones: the client's claim never stands
    /// in for them, even when the executor names none. (With none executed,
    /// the client's claim is shown, as before; image_pinned never reads it
    /// then.)
    pub(crate) fn attested_or_claimed_images(
        &self,
        attestation: Option<&ExecutorAttestation>,
        executor: &crate::Executor,
    ) -> Vec<WorkerImage> {
        match attestation.filter(|a| a.executed > 0) {
            Some(a) => a
                .images
                .iter()
                .map(|i| WorkerImage {
                    image: i.image.clone(),
                    pinned: i.pinned,
                    source: ImageSource::Executor,
                    remote_spawns: Some(i.executed_actions),
                    cache_hit_spawns: None,
                })
                .collect(),
            None => self.worker_images(executor),
        }
    }

    /// The execution log's summary, when one was read. Takes it.
    pub(crate) fn exec_log_summary(&mut self) -> Option<ExecLogSummary> {
        self.exec.take().map(|e| ExecLogSummary {
            format: e.format.unwrap_or(ExecLogFormat::Binary),
            invocation_id: e.invocation_id,
            hash_function: e.hash_function,
            spawns: e.spawns,
            runners: e.runners,
            failed_spawns: e.failed,
            remote_action_digests: e.digests.into_iter().collect(),
            remote_metrics: e.sums,
        })
    }

    /// One outcome per test label, from its TestResult and TestSummary
    /// events. Takes them.
    pub(crate) fn test_outcomes(&mut self) -> BTreeMap<String, TestOutcome> {
        std::mem::take(&mut self.tests)
            .into_iter()
            .map(|(label, acc)| {
                let strategy = if acc.strategies.len() == 1 {
                    acc.strategies.iter().next().cloned()
                } else {
                    None
                };
                let attempts = acc.attempts;
                (
                    label,
                    TestOutcome {
                        status: test_status_name(acc.summary_status.unwrap_or(acc.last_status)),
                        strategy,
                        strategies: acc.strategies.into_iter().collect(),
                        cached_locally: attempts > 0 && acc.all_cached_locally,
                        cached_remotely: attempts > 0 && acc.all_cached_remotely,
                        attempts,
                    },
                )
            })
            .collect()
    }
}

/// The options of BuildStarted's `options_description`, the last resort
/// among the option sources; `None` when it is blank.
pub(crate) fn description_options(started: &Started) -> Option<Vec<Opt>> {
    if started.options_description.trim().is_empty() {
        return None;
    }
    Some(
        options::shell_words(&started.options_description)
            .iter()
            .filter_map(|w| options::parse_flag(w))
            .collect(),
    )
}

/// `all_remote_images_pinned`. With executions attested: every executed
/// action ran on a pinned image (an action without one, or whose image
/// could not be read, is not). Otherwise: every image known for remote
/// executions is pinned; `None` when none is known.
pub(crate) fn all_remote_images_pinned(
    attestation: Option<&ExecutorAttestation>,
    worker_images: &[WorkerImage],
) -> Option<bool> {
    let remote_images: Vec<&WorkerImage> = worker_images
        .iter()
        .filter(|i| {
            i.source == ImageSource::DefaultExecProperties || i.remote_spawns.unwrap_or(0) > 0
        })
        .collect();
    match attestation {
        Some(a) if a.executed > 0 => Some(
            a.images
                .iter()
                .filter(|i| i.pinned)
                .map(|i| i.executed_actions)
                .sum::<u64>()
                == a.executed,
        ),
        _ if remote_images.is_empty() => None,
        _ => Some(remote_images.iter().all(|i| i.pinned)),
    }
}
