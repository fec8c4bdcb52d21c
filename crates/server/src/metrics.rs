//! Counters of the BES backend. Plain atomics: cheap on the hot path, read
//! by the `/metrics` endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    /// BEP events stored for the first time.
    pub events_ingested: AtomicU64,
    /// Events received again (retries) and acked without storing.
    pub events_duplicate: AtomicU64,
    /// Acks sent.
    pub acks_sent: AtomicU64,
    /// Tool-event RPCs opened.
    pub streams_opened: AtomicU64,
    /// RPCs ended with an error status we sent, by reason.
    pub stream_errors_invalid: AtomicU64,
    pub stream_errors_sequence: AtomicU64,
    pub stream_errors_store: AtomicU64,
    /// RPCs closed because they sent nothing for the idle bound.
    pub stream_errors_idle: AtomicU64,
    /// RPCs refused because their peer had too many open.
    pub stream_errors_peer_limit: AtomicU64,
    /// RPCs the client cancelled or broke.
    pub streams_broken: AtomicU64,
    pub lifecycle_events: AtomicU64,
    /// Group commits and their total duration.
    pub store_commits: AtomicU64,
    pub store_commit_micros: AtomicU64,
    pub invocations_finalized: AtomicU64,
    pub invocations_complete: AtomicU64,
    /// Streams and requests refused by admission (tenancy), by reason
    /// (`ErrorInfo.reason`, e.g. "CREDENTIAL_UNKNOWN").
    pub denials: Mutex<BTreeMap<&'static str, u64>>,
    /// Invocations deleted because their stream was denied after events were stored.
    pub denied_invocations_deleted: AtomicU64,
    /// Proof artifacts signed whose verification (`proof verify`'s, with the
    /// server's own key and the default policy) passed / failed.
    pub proofs_signed_pass: AtomicU64,
    pub proofs_signed_fail: AtomicU64,
    /// Failed checks of the signed proofs, by check name.
    pub proof_check_failures: Mutex<BTreeMap<String, u64>>,
    /// The replica is draining (SIGTERM): `/readyz` answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    /// The continuous AC audit (`proof serve --audit-interval`), shown by
    /// `/metrics` and `/ac-audit`.
    pub ac_audit: proof_acaudit::watch::AuditStatus,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one denial with this reason.
    pub fn denied(&self, reason: &'static str) {
        *self
            .denials
            .lock()
            .expect("denials lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts one signed proof: its verdict and each check that failed.
    pub fn proof_signed<'a>(&self, passed: bool, failed_checks: impl IntoIterator<Item = &'a str>) {
        Self::add(
            if passed {
                &self.proofs_signed_pass
            } else {
                &self.proofs_signed_fail
            },
            1,
        );
        let mut m = self
            .proof_check_failures
            .lock()
            .expect("proof check failures lock");
        for name in failed_checks {
            *m.entry(name.to_string()).or_default() += 1;
        }
    }

    /// Failed checks of the signed proofs so far, by check name, sorted.
    pub fn proof_check_failures(&self) -> Vec<(String, u64)> {
        let m = self
            .proof_check_failures
            .lock()
            .expect("proof check failures lock");
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Denials so far, by reason, sorted by reason.
    pub fn denials(&self) -> Vec<(&'static str, u64)> {
        let m = self.denials.lock().expect("denials lock");
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
