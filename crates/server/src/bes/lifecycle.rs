//! The end of a stream: held events at the end of an RPC, the deletion of a
//! denied invocation, the abandon sweep, draining and finalization.

use super::*;

impl Inner {
    /// The refusal of an RPC that ended while its gate still held events.
    pub(super) async fn held_at_end(&self, rpc: &mut Rpc) -> Option<Status> {
        if rpc.held.is_empty() {
            return None;
        }
        let (Some(id), Some(gate)) = (rpc.invocation_id.clone(), rpc.admitted.as_ref()) else {
            return None;
        };
        let r = gate.not_ready(rpc.held.len(), true);
        rpc.held.clear();
        let slot = self.slot(&id);
        let _guard = slot.lock().await;
        Some(
            self.discard(&id, rpc.principal.clone(), r, rpc.deletable())
                .await,
        )
    }

    /// Deletes an invocation whose stream was denied after some of its events
    /// were stored, remembers the denial for retries, and returns the status
    /// to answer with. The caller holds the invocation's slot. `delete`:
    /// `Some(tenant)` when the denied RPC may delete the invocation
    /// ([`Rpc::deletable`]); it is deleted only if it belongs to that tenant.
    pub(super) async fn discard(
        &self,
        id: &str,
        principal: Option<String>,
        r: Refusal,
        delete: Option<Option<String>>,
    ) -> Status {
        self.metrics.denied(r.reason);
        let sid = id.to_string();
        let res = self
            .blocking(move |s| {
                let Some(tenant) = delete else {
                    return Ok(false);
                };
                match s.get(&sid)? {
                    Some(rec) if rec.meta.tenant == tenant => {
                        s.delete(&sid)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await;
        match res {
            Ok(true) => Metrics::add(&self.metrics.denied_invocations_deleted, 1),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(invocation = %id, error = %e, "deleting a denied invocation failed")
            }
        }
        self.denied
            .lock()
            .expect("denied lock")
            .remember(id, principal, r.clone());
        r.status
    }

    /// One abandon sweep (blocking): see [`BesService::sweep_abandoned`].
    pub(super) fn sweep(&self, after: Duration) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut done = 0;
        let unfinished = proof_store::ListFilter {
            complete: Some(false),
            limit: 1000,
            ..Default::default()
        };
        proof_store::for_each_page(self.store.as_ref(), &unfinished, |page| {
            for rec in page.iter().filter(|r| !r.state.finalized) {
                let id = &rec.meta.invocation_id;
                let hook = self.on_finalized.as_deref();
                if rec.state.saw_stream_finished {
                    // Finished, never finalized: whoever acked the finish died before
                    // finalizing (another replica, or this process before a restart).
                    if let Some(f) = finalize_once(self.store.as_ref(), id, hook)? {
                        self.activity.lock().expect("activity lock").remove(id);
                        Metrics::add(&self.metrics.invocations_finalized, 1);
                        if f.complete {
                            Metrics::add(&self.metrics.invocations_complete, 1);
                        }
                        tracing::info!(invocation = %id, complete = f.complete, "finalized a finished stream");
                        done += 1;
                    }
                    continue;
                }
                // Progress made through another replica (a shared store) counts as activity.
                let moved = {
                    let mut progress = self.progress.lock().expect("progress lock");
                    let prev = progress.insert(id.clone(), rec.state.last_seq);
                    prev.is_some_and(|p| p != rec.state.last_seq)
                };
                if moved {
                    self.activity
                        .lock()
                        .expect("activity lock")
                        .insert(id.clone(), now);
                    continue;
                }
                let seen = self
                    .activity
                    .lock()
                    .expect("activity lock")
                    .get(id)
                    .copied();
                let idle = now.duration_since(seen.unwrap_or(self.started));
                let open = self.slots.lock().expect("slots lock").contains_key(id);
                if idle < after || open {
                    continue;
                }
                let Some(f) = finalize_once(self.store.as_ref(), id, hook)? else {
                    continue;
                };
                self.activity.lock().expect("activity lock").remove(id);
                self.progress.lock().expect("progress lock").remove(id);
                Metrics::add(&self.metrics.invocations_finalized, 1);
                tracing::info!(invocation = %id, complete = f.complete, reason = ?f.reason, "abandoned stream finalized");
                done += 1;
            }
            Ok(())
        })?;
        Ok(done)
    }

    /// New RPCs are refused once the drain began (the client retries elsewhere).
    pub(super) fn refuse_if_draining(&self) -> Result<(), Status> {
        match &self.drain {
            Some(d) if d.phase() != crate::drain::Phase::Serving => Err(Status::unavailable(
                "this proof serve replica is shutting down; retry on another replica",
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn spawn_finalize(self: &Arc<Self>, id: String) {
        self.activity.lock().expect("activity lock").remove(&id);
        let inner = self.clone();
        let tracked = self.drain.as_ref().map(|d| d.track_finalization());
        tokio::task::spawn_blocking(move || {
            let _tracked = tracked;
            let hook = inner.on_finalized.as_deref();
            match finalize_once(inner.store.as_ref(), &id, hook) {
                Ok(Some(f)) => {
                    Metrics::add(&inner.metrics.invocations_finalized, 1);
                    if f.complete {
                        Metrics::add(&inner.metrics.invocations_complete, 1);
                    }
                    tracing::info!(invocation = %id, complete = f.complete, reason = ?f.reason, events = f.summary.event_count, "invocation finalized");
                }
                Ok(None) => {
                    tracing::debug!(invocation = %id, "already finalized, or being finalized elsewhere")
                }
                Err(e) => tracing::error!(invocation = %id, error = %e, "finalizing failed"),
            }
        });
    }
}
