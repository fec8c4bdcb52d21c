//! Writes the signed proof artifact when a complete invocation ends: the
//! stream's events, who sent them (the authenticated tenant, or
//! "unauthenticated"), and, with an executor ledger, what the executor
//! itself recorded for the invocation.

use std::path::PathBuf;
use std::sync::Arc;

use proof_artifact::SigningKey;
use proof_evidence::{EvidenceBuilder, Origin};
use proof_executor::{Budget, ExecutorLedger, LedgerQuery, Retry};
use proof_ingest::Finalized;
use proof_store::{RecordKind, Store, StoreError};

use crate::bes::OnFinalized;

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

/// Records `DIR/INVOCATION_ID.proof.tar` for every complete invocation.
/// Incomplete streams get no proof.
pub struct ProofWriter {
    pub key: SigningKey,
    pub dir: PathBuf,
    /// `Some`: every proof carries the executor's ledger (`proof serve --executor`).
    pub executor: Option<LedgerConfig>,
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

    /// The executor's ledger for the invocation (never fails: an
    /// unreachable executor is recorded as such).
    fn ledger(&self, cfg: &LedgerConfig, store: &dyn Store, id: &str) -> Vec<u8> {
        let mut instance_names = cfg.instance_names.clone();
        if instance_names.is_empty() {
            // The stream's own --remote_instance_name: where its Execute
            // calls went. A lying client only sends us to an instance where
            // the executor ran nothing for this invocation.
            let mut b = EvidenceBuilder::new();
            let instance = Self::events(store, id)
                .ok()
                .and_then(|events| {
                    for e in events {
                        b.push_event(&e.ok()?).ok()?;
                    }
                    b.finish().ok()
                })
                .and_then(|ev| ev.executor.remote_instance_name)
                .unwrap_or_default();
            instance_names.push(instance);
        }
        let q = LedgerQuery {
            invocation_id: id.to_string(),
            instance_names,
            endpoint_aliases: cfg.endpoint_aliases.clone(),
            budget: cfg.budget,
        };
        proof_executor::fetch_with_retry(cfg.ledger.as_ref(), &q, cfg.retry)
    }
}

impl OnFinalized for ProofWriter {
    fn on_finalized(&self, store: &dyn Store, f: &Finalized) {
        if !f.complete {
            tracing::info!(invocation = %f.invocation_id, reason = ?f.reason, "no proof for an incomplete stream");
            return;
        }
        let tenant = match store.get(&f.invocation_id) {
            Ok(rec) => rec.and_then(|r| r.meta.tenant),
            Err(e) => {
                tracing::error!(invocation = %f.invocation_id, error = %e, "cannot read the invocation for the proof");
                return;
            }
        };
        let origin = Origin {
            recorded_by: "proof serve".into(),
            tenant,
        };
        let ledger = self
            .executor
            .as_ref()
            .map(|cfg| self.ledger(cfg, store, &f.invocation_id));
        let events = match Self::events(store, &f.invocation_id) {
            Ok(it) => it,
            Err(e) => {
                tracing::error!(invocation = %f.invocation_id, error = %e, "cannot read the journal for the proof");
                return;
            }
        };
        let inputs = proof_artifact::RecordInputs {
            executor_ledger: ledger.as_deref(),
            origin: Some(&origin),
            ..Default::default()
        };
        match proof_artifact::record_with(events, &inputs, &self.key, &self.dir) {
            Ok(out) => tracing::info!(
                invocation = %f.invocation_id,
                path = %out.path.display(),
                remote_executions = ?out.evidence.processes.remote_executions,
                attested_executions = ?out.evidence.attestation.as_ref().map(|a| a.executed),
                tenant = ?origin.tenant,
                "proof artifact written"
            ),
            Err(e) => {
                tracing::error!(invocation = %f.invocation_id, error = %e, "writing the proof artifact failed")
            }
        }
    }
}
