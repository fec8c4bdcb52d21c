//! Writes the signed proof artifact when a complete invocation ends: the
//! stream's events, who sent them (the authenticated tenant, or
//! "unauthenticated"), and, with an executor ledger, what the executor
//! itself recorded for the invocation.
//!
//! [`ProofQueue`] keeps that work (the executor may be slow, dead or
//! hostile) off the server's blocking pool: finalization only records a
//! durable pending marker and queues the invocation; a few threads of its
//! own sign, each ledger query within its [`Budget`]. Markers left by a
//! crash are queued again when the server starts.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use proof_artifact::{RecordError, RecordOutcome, SigningKey};
use proof_evidence::binding::{claimed_outputs, OutputKey};
use proof_evidence::{EvidenceBuilder, Origin};
use proof_executor::{Budget, ExecutorLedger, LedgerQuery, Retry};
use proof_ingest::Finalized;
use proof_store::{RecordKind, Store, StoreError};
use thiserror::Error;

use crate::bes::OnFinalized;
use crate::Metrics;

/// Asks the executor about every finalized invocation.
pub struct LedgerConfig {
    pub ledger: Arc<dyn ExecutorLedger>,
    /// Instance names to ask under; empty: the stream's
    /// `--remote_instance_name` (unset: "").
    pub instance_names: Vec<String>,
    /// Other endpoints of the same executor (the address Bazel clients
    /// use), recorded in the ledger so `--remote_executor` can be compared.
    pub endpoint_aliases: Vec<String>,
    /// How long to retry an unreachable executor before the proof says so.
    pub retry: Retry,
    /// Bounds on one query (operations, bytes, pages, wall time).
    pub budget: Budget,
}

/// `DIR/ID.proof.tar` → `DIR/ID.tlog.json`: where a proof's inclusion proof travels.
pub fn tlog_sidecar(artifact: &Path) -> PathBuf {
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".proof.tar").unwrap_or(&name);
    artifact.with_file_name(format!("{stem}{}", proof_tlog::SIDECAR_SUFFIX))
}

type Verdict = Result<proof_artifact::Report, proof_artifact::VerifyError>;

/// Why no proof was written for an invocation.
#[derive(Debug, Error)]
pub enum ProofError {
    #[error("cannot read invocation {id} for its proof: {source}")]
    Store {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Records `DIR/INVOCATION_ID.proof.tar` for every complete invocation.
/// Incomplete streams get no proof.
pub struct ProofWriter {
    pub key: SigningKey,
    pub dir: PathBuf,
    /// `Some`: every proof carries the executor's ledger (`proof serve --executor`).
    pub executor: Option<LedgerConfig>,
    /// `Some`: every signed proof is verified as `proof verify` does (the
    /// server's own key, the default policy) and its verdict counted here.
    pub metrics: Option<Arc<Metrics>>,
    /// `Some`: every signed proof also gets its SLSA verification summary,
    /// `DIR/INVOCATION_ID.vsa.dsse.json` (`proof serve` always sets it).
    pub vsa: Option<crate::vsa::VsaConfig>,
    /// `Some`: every signed proof's statement is appended to this
    /// transparency log and its inclusion proof written beside it as
    /// `DIR/INVOCATION_ID.tlog.json` (docs/proof-format.md §9).
    pub log: Option<Arc<proof_tlog::Published>>,
}

impl ProofWriter {
    fn events<'a>(
        store: &'a dyn Store,
        id: &str,
    ) -> Result<impl Iterator<Item = Result<Vec<u8>, StoreError>> + 'a, StoreError> {
        Ok(store.read(id)?.filter_map(|r| match r {
            Ok(rec) if rec.kind == RecordKind::BepEvent => Some(Ok(rec.payload.to_vec())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    /// Verifies the artifact just written, as `proof verify --key <the
    /// server's public key>` does, and counts its verdict and failed checks.
    fn count_verdict(&self, metrics: &Metrics, id: &str, verdict: &Verdict) {
        match verdict {
            Ok(report) => {
                let failed: Vec<&str> = report
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.name.as_str())
                    .collect();
                tracing::info!(invocation = %id, pass = report.ok, failed = ?failed, "proof verdict");
                metrics.proof_signed(report.ok, failed);
            }
            Err(e) => {
                tracing::error!(invocation = %id, error = %e, "the proof just written cannot be verified");
                metrics.proof_signed(false, ["unreadable"]);
            }
        }
    }

    /// Verifies the artifact just written, as `proof verify --key <the
    /// server's public key>` does (the default policy).
    fn verdict(&self, path: &Path) -> Verdict {
        let trusted = [self.key.verifying_key()];
        proof_artifact::verify_path(path, &trusted, &proof_artifact::Policy::default())
    }

    /// Appends the artifact's statement to the transparency log (when
    /// configured) and writes its inclusion sidecar.
    fn log_proof(&self, id: &str, artifact: &Path) {
        let Some(log) = &self.log else { return };
        let statement = std::fs::File::open(artifact)
            .ok()
            .and_then(|f| proof_artifact::vsa::read_statement(std::io::BufReader::new(f)));
        let Some(statement) = statement else {
            tracing::error!(invocation = %id, "cannot read the statement of the proof just written; it is not logged");
            return;
        };
        let side = tlog_sidecar(artifact);
        let marker = pending_dir(&self.dir).join(id);
        let who = id.to_string();
        // Group commit: the committer syncs this leaf with others, signs a
        // checkpoint after the sync, then writes the sidecar and only then
        // removes the pending marker, so a crash before the sync leaves the
        // marker and the proof is logged at the next start.
        log.submit(
            id,
            statement,
            Box::new(move |result| {
                let written = result.and_then(|inc| {
                    // Not synced: the leaf is, and a lost sidecar is written
                    // again or fetched with `proof log inclusion`.
                    proof_tlog::write_replace(&side, &inc.to_bytes(), false)
                        .map(|()| inc)
                        .map_err(|e| format!("cannot write {}: {e}", side.display()))
                });
                match written {
                    Ok(inc) => {
                        tracing::info!(invocation = %who, leaf_index = inc.leaf_index, tree_size = inc.tree_size, "proof logged");
                        if let Err(e) = std::fs::remove_file(&marker) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::warn!(invocation = %who, error = %e, "cannot remove the pending-proof marker");
                            }
                        }
                    }
                    Err(e) => tracing::error!(invocation = %who, error = %e, "cannot log the proof in the transparency log; it is logged at the next start"),
                }
            }),
        );
    }

    /// The pending marker of `id` is removed by the log's committer once
    /// the proof is logged, not by the queue.
    pub fn marker_deferred(&self, id: &str) -> bool {
        self.log.as_ref().is_some_and(|l| l.in_flight(id))
    }

    /// Writes the verdict's VSA beside the artifact (when configured).
    fn write_vsa(&self, id: &str, artifact: &Path, verdict: &Verdict) {
        let Some(cfg) = &self.vsa else { return };
        let Ok(report) = verdict else { return };
        match crate::vsa::write(cfg, &self.key, id, artifact, report) {
            Ok(path) => {
                tracing::info!(invocation = %id, path = %path.display(), pass = report.ok, "verification summary written")
            }
            Err(e) => {
                tracing::error!(invocation = %id, error = %e, "cannot write the verification summary (VSA)")
            }
        }
    }

    /// One streaming pass over the journal of `id` (bounded memory, however
    /// long the stream): the stream's own `--remote_instance_name` when the
    /// operator named no instance (`""` when it names none or the journal
    /// cannot be read to the end), and the outputs it claims, for the
    /// attested-results lookup. The artifact is written by a second pass.
    fn scan(
        &self,
        cfg: &LedgerConfig,
        store: &dyn Store,
        id: &str,
    ) -> (Vec<String>, BTreeSet<OutputKey>) {
        let Ok(events) = Self::events(store, id) else {
            return (or_stream_instance(cfg, None), BTreeSet::new());
        };
        // The stream's own --remote_instance_name: where its Execute calls
        // went. A lying client only sends us to an instance where the
        // executor ran nothing for this invocation.
        let mut b = cfg.instance_names.is_empty().then(EvidenceBuilder::new);
        let mut whole = true;
        let claimed = claimed_outputs(events.map_while(|e| match e {
            Ok(e) => {
                if let Some(builder) = b.as_mut() {
                    if builder.push_event(&e).is_err() {
                        b = None;
                        whole = false;
                    }
                }
                Some(e)
            }
            Err(_) => {
                whole = false;
                None
            }
        }));
        let instance = b
            .filter(|_| whole)
            .and_then(|b| b.finish().ok())
            .and_then(|ev| ev.executor.remote_instance_name);
        (or_stream_instance(cfg, instance), claimed)
    }

    /// The executor's ledger for the invocation asked under
    /// `instance_names` (never fails: an unreachable executor is recorded
    /// as such).
    fn ledger(&self, cfg: &LedgerConfig, instance_names: Vec<String>, id: &str) -> Vec<u8> {
        let q = LedgerQuery {
            invocation_id: id.to_string(),
            instance_names,
            endpoint_aliases: cfg.endpoint_aliases.clone(),
            budget: cfg.budget,
        };
        proof_executor::fetch_with_retry(cfg.ledger.as_ref(), &q, cfg.retry)
    }

    /// Where the proof of `id` is written.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.proof.tar"))
    }

    /// Signs the proof of the stored invocation `id` (asking the executor
    /// first, when configured). Only when the stream's BuildStarted names
    /// `id` itself, and never over an existing artifact.
    pub fn sign(&self, store: &dyn Store, id: &str) -> Result<RecordOutcome, ProofError> {
        let err = |source| ProofError::Store {
            id: id.to_string(),
            source,
        };
        if self.path(id).exists() {
            return Err(RecordError::Exists(self.path(id)).into());
        }
        let record = store.get(id).map_err(err)?;
        let signed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let origin = Origin {
            recorded_by: "proof serve".into(),
            tenant: record.as_ref().and_then(|r| r.meta.tenant.clone()),
            // The window the executor's operations must lie in (issue 27):
            // what this server saw, not what the client stamped.
            opened_at_ms: record.as_ref().map(|r| r.meta.created_at_ms),
            signed_at_ms: Some(signed_at_ms),
        };
        let Some(cfg) = &self.executor else {
            // No executor to ask: the journal is streamed into the artifact.
            let events = Self::events(store, id).map_err(err)?;
            return Ok(self.record(events, None, &origin, id)?);
        };
        // With an executor the journal is read twice, streamed both times: a
        // scan for the instance name and the claimed outputs, then the
        // artifact. Never held whole in memory (a stream can be millions of
        // events).
        let (instance_names, claimed) = self.scan(cfg, store, id);
        let index = crate::attested::AttestedIndex::new(&self.dir);
        let ledger = self.ledger(cfg, instance_names, id);
        // Outputs served from the remote cache bind only to executions
        // this server witnessed before: copy them into the ledger.
        let attested = index.lookup(&claimed);
        tracing::info!(invocation = %id, outputs = claimed.len(), attested = attested.len(), "attested results looked up");
        let ledger = crate::attested::append(ledger, attested);
        let events = Self::events(store, id).map_err(err)?;
        let out = self.record(events, Some(&ledger), &origin, id)?;
        // What this invocation's executions produced may serve later
        // builds from the cache.
        match index.add(&ledger) {
            Ok(n) => {
                tracing::info!(invocation = %id, outputs = n, "executions indexed as attested results")
            }
            Err(e) => {
                tracing::warn!(invocation = %id, error = %e, "indexing the executions as attested results failed; later cache hits on them stay unbound")
            }
        }
        Ok(out)
    }

    /// Writes the artifact of `id` from `events`, with the executor's `ledger` if any.
    fn record(
        &self,
        events: impl IntoIterator<Item = Result<Vec<u8>, StoreError>>,
        ledger: Option<&[u8]>,
        origin: &Origin,
        id: &str,
    ) -> Result<RecordOutcome, RecordError> {
        let inputs = proof_artifact::RecordInputs {
            executor_ledger: ledger,
            origin: Some(origin),
            expect_invocation_id: Some(id),
            exclusive: true,
            ..Default::default()
        };
        proof_artifact::record_with(events, &inputs, &self.key, &self.dir)
    }

    fn sign_and_log(&self, store: &dyn Store, id: &str) -> Result<(), ProofError> {
        match self.sign(store, id) {
            Ok(out) => {
                tracing::info!(
                    invocation = %id,
                    path = %out.path.display(),
                    remote_executions = ?out.evidence.processes.remote_executions,
                    attested_executions = ?out.evidence.attestation.as_ref().map(|a| a.executed),
                    tenant = ?out.evidence.origin.as_ref().and_then(|o| o.tenant.as_deref()),
                    "proof artifact written"
                );
                self.log_proof(id, &out.path);
                if self.metrics.is_some() || self.vsa.is_some() {
                    let verdict = self.verdict(&out.path);
                    if let Some(m) = &self.metrics {
                        self.count_verdict(m, id, &verdict);
                    }
                    self.write_vsa(id, &out.path, &verdict);
                }
                Ok(())
            }
            Err(ProofError::Record(RecordError::Exists(path))) => {
                tracing::info!(invocation = %id, path = %path.display(), "the proof was already written");
                // A crash between the proof and its log entry or summary:
                // log it and write the summary now (appending is idempotent).
                if self.log.is_some() {
                    self.log_proof(id, &path);
                }
                if self.vsa.is_some() && !crate::vsa::path(&path).exists() {
                    let verdict = self.verdict(&path);
                    self.write_vsa(id, &path, &verdict);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(invocation = %id, error = %e, "writing the proof artifact failed");
                Err(e)
            }
        }
    }
}

impl OnFinalized for ProofWriter {
    /// Signs in place, on the finalizing thread (see [`ProofQueue`] for the
    /// server's way).
    fn on_finalized(&self, store: &dyn Store, f: &Finalized) {
        if !f.complete {
            tracing::info!(invocation = %f.invocation_id, reason = ?f.reason, "no proof for an incomplete stream");
            return;
        }
        let _ = self.sign_and_log(store, &f.invocation_id);
    }
}

/// Bounds of the [`ProofQueue`].
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Proofs signed at once (each may wait on the executor).
    pub workers: usize,
    /// Invocations held in memory; beyond it they wait on disk (their
    /// pending marker) and are picked up when the queue has room.
    pub capacity: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 2,
            capacity: 1024,
        }
    }
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Markers were left on disk for lack of room.
    overflowed: bool,
    running: usize,
}

/// Signs proofs on threads of its own, never on the pool that stores and
/// acks events: finalization writes a pending marker
/// (`PROOFS/.pending/ID`, synced) and queues the id; a worker signs and
/// then removes the marker. At start every marker is queued again, so a
/// proof pending at a crash is still signed.
pub struct ProofQueue {
    writer: Arc<ProofWriter>,
    store: Arc<dyn Store>,
    cfg: QueueConfig,
    state: Mutex<QueueState>,
    wake: Condvar,
    idle: Condvar,
}

/// An id that can name a file: what `proof_artifact` accepts as an
/// invocation id (a Bazel UUID is).
fn file_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The pending markers' directory of a proofs directory.
pub fn pending_dir(proofs: &Path) -> PathBuf {
    proofs.join(".pending")
}

impl ProofQueue {
    /// Starts `cfg.workers` threads and queues the proofs left pending by an
    /// earlier run.
    pub fn start(
        writer: Arc<ProofWriter>,
        store: Arc<dyn Store>,
        cfg: QueueConfig,
    ) -> std::io::Result<Arc<ProofQueue>> {
        std::fs::create_dir_all(pending_dir(&writer.dir))?;
        let q = Arc::new(ProofQueue {
            writer,
            store,
            cfg: QueueConfig {
                workers: cfg.workers.max(1),
                capacity: cfg.capacity.max(1),
            },
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let n = q.refill();
        if n > 0 {
            tracing::info!(proofs = n, "proofs left pending by an earlier run queued");
        }
        for i in 0..q.cfg.workers {
            let q = q.clone();
            std::thread::Builder::new()
                .name(format!("proof-{i}"))
                .spawn(move || q.work())?;
        }
        Ok(q)
    }

    fn marker(&self, id: &str) -> PathBuf {
        pending_dir(&self.writer.dir).join(id)
    }

    /// Queues `id` if there is room; returns whether it is queued.
    fn enqueue(&self, id: &str) -> bool {
        let mut st = self.state.lock().expect("proof queue lock");
        if st.queued.contains(id) {
            return true;
        }
        if st.queue.len() >= self.cfg.capacity {
            st.overflowed = true;
            return false;
        }
        st.queued.insert(id.to_string());
        st.queue.push_back(id.to_string());
        self.wake.notify_one();
        true
    }

    /// Queues pending markers found on disk while there is room; returns
    /// how many were queued.
    fn refill(&self) -> usize {
        self.state.lock().expect("proof queue lock").overflowed = false;
        let Ok(dir) = std::fs::read_dir(pending_dir(&self.writer.dir)) else {
            return 0;
        };
        let mut n = 0;
        for e in dir.flatten() {
            let Some(id) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !file_safe(&id) {
                continue;
            }
            if !self.enqueue(&id) {
                break;
            }
            n += 1;
        }
        n
    }

    fn work(&self) {
        loop {
            let id = {
                let mut st = self.state.lock().expect("proof queue lock");
                loop {
                    if let Some(id) = st.queue.pop_front() {
                        st.running += 1;
                        break id;
                    }
                    if st.overflowed {
                        drop(st);
                        self.refill();
                        st = self.state.lock().expect("proof queue lock");
                        continue;
                    }
                    st = self.wake.wait(st).expect("proof queue lock");
                }
            };
            let outcome = self.writer.sign_and_log(self.store.as_ref(), &id);
            // Kept for a retry at the next start only when the artifact
            // could not be written; any other outcome is final.
            let retry = matches!(
                &outcome,
                Err(ProofError::Store { .. })
                    | Err(ProofError::Record(
                        RecordError::Io { .. } | RecordError::Tar(_)
                    ))
            );
            if !retry && !self.writer.marker_deferred(&id) {
                if let Err(e) = std::fs::remove_file(self.marker(&id)) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(invocation = %id, error = %e, "cannot remove the pending-proof marker");
                    }
                }
            }
            let mut st = self.state.lock().expect("proof queue lock");
            st.queued.remove(&id);
            st.running -= 1;
            if st.queue.is_empty() && st.running == 0 && !st.overflowed {
                self.idle.notify_all();
            }
        }
    }

    /// Proofs queued or being signed.
    pub fn pending(&self) -> usize {
        let st = self.state.lock().expect("proof queue lock");
        st.queue.len() + st.running
    }

    /// Waits until nothing is queued or being signed, at most `timeout`;
    /// returns whether the queue is idle.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let st = self.state.lock().expect("proof queue lock");
        let (st, _) = self
            .idle
            .wait_timeout_while(st, timeout, |st| {
                !(st.queue.is_empty() && st.running == 0 && !st.overflowed)
            })
            .expect("proof queue lock");
        st.queue.is_empty() && st.running == 0 && !st.overflowed
    }
}

impl OnFinalized for ProofQueue {
    /// Runs under the invocation's lock before its outcome is recorded:
    /// writes the pending marker (synced, so a crash after the outcome is
    /// recorded still leaves it) and queues the invocation. Never waits on
    /// the executor.
    fn on_finalized(&self, _store: &dyn Store, f: &Finalized) {
        if !f.complete {
            tracing::info!(invocation = %f.invocation_id, reason = ?f.reason, "no proof for an incomplete stream");
            return;
        }
        let id = &f.invocation_id;
        // An id that cannot name a file gets no proof (the artifact is
        // named by it too).
        if !file_safe(id) {
            tracing::error!(invocation = %id, "no proof: the invocation id cannot name a file");
            return;
        }
        let marker = self.marker(id);
        let written = std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::File::open(pending_dir(&self.writer.dir))?.sync_all());
        if let Err(e) = written {
            tracing::error!(invocation = %id, path = %marker.display(), error = %e, "cannot record the pending proof; it is signed now, if this server does not stop first");
        }
        if !self.enqueue(id) {
            tracing::warn!(invocation = %id, capacity = self.cfg.capacity, "the proof queue is full; this proof waits on disk");
        }
    }
}

/// The instance names the executor is asked under: the operator's
/// (`--executor-instance`), else the stream's own `--remote_instance_name`
/// (`""` when it names none).
fn or_stream_instance(cfg: &LedgerConfig, stream: Option<String>) -> Vec<String> {
    if cfg.instance_names.is_empty() {
        vec![stream.unwrap_or_default()]
    } else {
        cfg.instance_names.clone()
    }
}
