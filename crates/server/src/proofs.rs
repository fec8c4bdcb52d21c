//! Writes the signed proof artifact when a complete invocation ends.

use std::path::PathBuf;

use proof_artifact::SigningKey;
use proof_ingest::Finalized;
use proof_store::{RecordKind, Store, StoreError};

use crate::bes::OnFinalized;

/// Records `DIR/INVOCATION_ID.proof.tar` for every complete invocation.
/// Incomplete streams get no proof.
pub struct ProofWriter {
    pub key: SigningKey,
    pub dir: PathBuf,
}

impl OnFinalized for ProofWriter {
    fn on_finalized(&self, store: &dyn Store, f: &Finalized) {
        if !f.complete {
            tracing::info!(invocation = %f.invocation_id, reason = ?f.reason, "no proof for an incomplete stream");
            return;
        }
        let events = match store.read(&f.invocation_id) {
            Ok(it) => it.filter_map(|r| match r {
                Ok(rec) if rec.kind == RecordKind::BepEvent => Some(Ok(rec.payload.to_vec())),
                Ok(_) => None,
                Err(e) => Some(Err::<Vec<u8>, StoreError>(e)),
            }),
            Err(e) => {
                tracing::error!(invocation = %f.invocation_id, error = %e, "cannot read the journal for the proof");
                return;
            }
        };
        match proof_artifact::record(events, None, &self.key, &self.dir) {
            Ok(out) => tracing::info!(
                invocation = %f.invocation_id,
                path = %out.path.display(),
                remote_executions = ?out.evidence.processes.remote_executions,
                "proof artifact written"
            ),
            Err(e) => {
                tracing::error!(invocation = %f.invocation_id, error = %e, "writing the proof artifact failed")
            }
        }
    }
}
