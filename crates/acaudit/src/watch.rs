//! The continuous audit's shared state (`proof serve --audit-interval`):
//! the last run's report, when an audit last succeeded, and when each
//! current suspect was first seen. Written by the audit thread, read by
//! `/metrics` and the web page. No I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::report::AuditReport;

#[derive(Debug, Default)]
struct Inner {
    last: Option<AuditReport>,
    last_success_unix: Option<f64>,
    last_error: Option<String>,
    /// (instance, action digest) -> first seen, for the current suspects.
    first_seen: BTreeMap<(String, String), String>,
}

/// What the metrics and the web page show.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub enabled: bool,
    pub last: Option<AuditReport>,
    pub last_success_unix: Option<f64>,
    pub last_error: Option<String>,
    pub entries_audited_total: u64,
    pub runs_total: u64,
    pub failed_runs_total: u64,
}

impl Snapshot {
    /// Poison suspects of the last run, by instance name (every instance the
    /// last run audited is named, zeros included).
    pub fn suspects_by_instance(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Some(r) = &self.last {
            for e in &r.entries {
                *out.entry(e.instance_name.clone()).or_insert(0) +=
                    u64::from(e.verdict.is_suspect());
            }
        }
        out
    }
}

/// The continuous audit's state; `Default` is "not enabled".
#[derive(Debug, Default)]
pub struct AuditStatus {
    enabled: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    entries_audited_total: AtomicU64,
    runs_total: AtomicU64,
    failed_runs_total: AtomicU64,
}

impl AuditStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the continuous audit as configured (metrics are exported).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// When an earlier run first flagged this entry.
    pub fn first_seen(&self, instance: &str, digest: &str) -> Option<String> {
        self.lock()
            .first_seen
            .get(&(instance.to_string(), digest.to_string()))
            .cloned()
    }

    /// A finished run. It counts as a success unless the executor left an
    /// entry unreachable.
    pub fn record(&self, report: AuditReport, now_unix: f64) {
        self.runs_total.fetch_add(1, Ordering::Relaxed);
        self.entries_audited_total
            .fetch_add(report.entries_audited, Ordering::Relaxed);
        let unreachable = report.counts.get("unreachable").copied().unwrap_or(0);
        let mut g = self.lock();
        g.first_seen = report
            .suspects
            .iter()
            .map(|s| {
                (
                    (s.instance_name.clone(), s.action_digest.clone()),
                    s.first_seen.clone(),
                )
            })
            .collect();
        if unreachable == 0 {
            g.last_success_unix = Some(now_unix);
            g.last_error = None;
        } else {
            self.failed_runs_total.fetch_add(1, Ordering::Relaxed);
            g.last_error = Some(format!(
                "{unreachable} AC entr{} could not be read",
                if unreachable == 1 { "y" } else { "ies" }
            ));
        }
        g.last = Some(report);
    }

    /// A run that could not be done at all (executor unreachable, proofs
    /// unreadable): the last report and its suspects stay shown.
    pub fn record_failure(&self, why: String) {
        self.runs_total.fetch_add(1, Ordering::Relaxed);
        self.failed_runs_total.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some(why);
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            enabled: self.enabled.load(Ordering::Relaxed),
            last: g.last.clone(),
            last_success_unix: g.last_success_unix,
            last_error: g.last_error.clone(),
            entries_audited_total: self.entries_audited_total.load(Ordering::Relaxed),
            runs_total: self.runs_total.load(Ordering::Relaxed),
            failed_runs_total: self.failed_runs_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{ledger, op, result};
    use crate::report::{finish, plan, ProofInput};
    use crate::{read_ledger, Current, TargetOutputs};

    #[test]
    fn first_seen_survives_runs_and_clears_with_the_suspect() {
        let p = plan(&[ProofInput {
            proof: "a.proof.tar".into(),
            invocation_id: "i".into(),
            classes: vec![],
            tenant: None,
            ledger: read_ledger(&ledger(
                "main",
                vec![op("o", "aa", result("bot", "h", "11"), false)],
            ))
            .unwrap(),
            outputs: TargetOutputs::default(),
        }]);
        let st = AuditStatus::default();
        let bad = [Current::Found(Box::new(result("bot", "h", "22")))];
        let run = |t: &str, answers: &[Current]| {
            finish(&p, answers, "grpc://x", t, vec![], &|i, d| {
                st.first_seen(i, d)
            })
        };
        st.record(run("T1", &bad), 1.0);
        st.record(run("T2", &bad), 2.0);
        let s = st.snapshot();
        assert_eq!(s.last.as_ref().unwrap().suspects[0].first_seen, "T1");
        assert_eq!(s.suspects_by_instance()["main"], 1);
        assert_eq!(s.entries_audited_total, 2);
        assert_eq!(s.last_success_unix, Some(2.0));
        st.record(run("T3", &[Current::NotFound]), 3.0);
        assert_eq!(st.first_seen("main", "aa/140"), None);
        assert_eq!(st.snapshot().suspects_by_instance()["main"], 0);
        st.record(run("T4", &[Current::Unusable("down".into())]), 4.0);
        let s = st.snapshot();
        assert_eq!(s.last_success_unix, Some(3.0));
        assert_eq!(s.failed_runs_total, 1);
        st.record_failure("unreachable".into());
        assert_eq!(st.snapshot().last_error.as_deref(), Some("unreachable"));
    }
}
