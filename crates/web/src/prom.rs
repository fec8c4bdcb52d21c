//! Prometheus text exposition format 0.0.4 at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use proof_acaudit::watch::Snapshot;
use proof_server::Metrics;

use proof_kpi::fleet::Fleet;

use crate::api::{FleetQuery, FleetView};
use crate::{blocking, Inner, State, WebError, WebMetrics};

/// Invocations the KPI gauges cover (newest first).
pub(crate) const KPI_WINDOW: usize = 100;

/// Escapes a label value (backslash, double quote, newline).
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn counter(&mut self, name: &str, help: &str, c: &AtomicU64) {
        self.head(name, "counter", help);
        let _ = writeln!(self.0, "{name} {}", c.load(Ordering::Relaxed));
    }

    /// A counter with one label: its head, then a sample per label value.
    fn counter_by<K: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (K, u64)>,
    ) {
        self.head(name, "counter", help);
        for (value, n) in values {
            self.sample(name, &[(label, value.as_ref())], n as f64);
        }
    }

    /// A metric with one sample and no labels: its head, then the sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        self.sample(name, &[], v);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The proof server's own counters (`proof_server::Metrics`), section by
/// section: ingest, store commits, finalization, admission, signed proofs.
pub(crate) fn render_server(out: &mut String, m: &Metrics) {
    let mut o = Out(std::mem::take(out));
    server_ingest(&mut o, m);
    server_store_commits(&mut o, m);
    server_finalization(&mut o, m);
    server_admission(&mut o, m);
    server_proofs_signed(&mut o, m);
    *out = o.0;
}

/// BES ingest: events, acks, streams and how they ended.
fn server_ingest(o: &mut Out, m: &Metrics) {
    o.counter(
        "proof_events_ingested_total",
        "BEP events stored for the first time.",
        &m.events_ingested,
    );
    o.counter(
        "proof_events_duplicate_total",
        "BEP events received again (retries) and acked without storing.",
        &m.events_duplicate,
    );
    o.counter("proof_acks_sent_total", "Acks sent to Bazel.", &m.acks_sent);
    o.counter(
        "proof_streams_opened_total",
        "PublishBuildToolEventStream RPCs opened.",
        &m.streams_opened,
    );
    o.counter_by(
        "proof_stream_errors_total",
        "Tool-event RPCs ended with an error status sent by the server, by reason.",
        "reason",
        [
            ("invalid", &m.stream_errors_invalid),
            ("sequence", &m.stream_errors_sequence),
            ("store", &m.stream_errors_store),
            ("idle", &m.stream_errors_idle),
            ("peer_limit", &m.stream_errors_peer_limit),
        ]
        .map(|(reason, c)| (reason, c.load(Ordering::Relaxed))),
    );
    o.counter(
        "proof_streams_broken_total",
        "Tool-event RPCs the client cancelled or broke.",
        &m.streams_broken,
    );
    o.counter(
        "proof_lifecycle_events_total",
        "BES lifecycle events received.",
        &m.lifecycle_events,
    );
}

/// The BES writer's group commits.
fn server_store_commits(o: &mut Out, m: &Metrics) {
    o.counter(
        "proof_store_commits_total",
        "Group commits (one fsync each) of the BES writer.",
        &m.store_commits,
    );
    o.single(
        "proof_store_commit_seconds_total",
        "counter",
        "Total time spent in group commits.",
        m.store_commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
}

/// Invocations finalized.
fn server_finalization(o: &mut Out, m: &Metrics) {
    o.counter(
        "proof_invocations_finalized_total",
        "Invocations finalized.",
        &m.invocations_finalized,
    );
    o.counter(
        "proof_invocations_complete_total",
        "Invocations finalized as complete.",
        &m.invocations_complete,
    );
}

/// Tenant admission: refusals, and what they deleted.
fn server_admission(o: &mut Out, m: &Metrics) {
    o.counter_by(
        "proof_bes_denials_total",
        "BES streams and requests refused by tenant admission, by ErrorInfo reason (docs/tenants.md).",
        "reason",
        m.denials(),
    );
    o.counter(
        "proof_bes_denied_invocations_deleted_total",
        "Invocations deleted because their stream was refused after events were stored.",
        &m.denied_invocations_deleted,
    );
}

/// Proofs this server signed, and the checks they failed.
fn server_proofs_signed(o: &mut Out, m: &Metrics) {
    o.counter_by(
        "proof_proofs_signed_total",
        "Proof artifacts signed by this server, by the verdict of proof verify (its own key, the default policy).",
        "verdict",
        [
            ("pass", &m.proofs_signed_pass),
            ("fail", &m.proofs_signed_fail),
        ]
        .map(|(verdict, c)| (verdict, c.load(Ordering::Relaxed))),
    );
    o.counter_by(
        "proof_proof_check_failures_total",
        "Failed checks of the proofs this server signed, by check (e.g. executor_attested: a forged or unattested build).",
        "check",
        m.proof_check_failures(),
    );
}

/// `GET /metrics`: [`metrics_text`] on the blocking pool.
pub(crate) async fn metrics(AxState(state): AxState<State>) -> Result<Response, WebError> {
    let body = blocking(&state, metrics_text).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// The whole `/metrics` text, section by section: the server's counters,
/// the AC audit, the web's own counters, then the `proof_kpi_*` gauges over
/// the newest [`KPI_WINDOW`] invocations.
fn metrics_text(s: &Inner) -> Result<String, WebError> {
    let view = crate::api::fleet_of(
        s,
        &FleetQuery {
            tenant: None,
            limit: Some(KPI_WINDOW),
        },
    )?;
    let mut text = String::new();
    render_server(&mut text, &s.cfg.metrics);
    let mut o = Out(text);
    render_ac_audit(&mut o, &s.cfg.metrics.ac_audit.snapshot());
    render_web(&mut o, &s.web);
    kpi_proof_states(&mut o, &view);
    kpi_window(&mut o, &view.fleet, view.skipped.len());
    kpi_group_gauges(&mut o, &view.fleet);
    kpi_executor_share(&mut o, &view.fleet);
    kpi_diagnosis_causes(&mut o, &view.fleet);
    kpi_poison(&mut o, &view.fleet);
    Ok(o.0)
}

/// The HTTP server's own counters: requests, store reads, analyses,
/// proof verifications.
fn render_web(o: &mut Out, w: &WebMetrics) {
    o.counter(
        "proof_http_requests_total",
        "HTTP requests that reached a handler.",
        &w.http_requests,
    );
    o.counter(
        "proof_http_errors_total",
        "HTTP requests answered with an error.",
        &w.http_errors,
    );
    o.counter(
        "proof_store_reads_total",
        "Store reads (get, list, read) made by the HTTP server.",
        &w.store_reads,
    );
    o.single(
        "proof_store_read_seconds_total",
        "counter",
        "Time spent in store reads by the HTTP server.",
        w.store_read_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    o.counter(
        "proof_analyses_total",
        "Invocations analyzed (evidence, KPIs, diagnosis derived).",
        &w.analyses,
    );
    o.counter(
        "proof_analysis_cache_hits_total",
        "Analyses served from the cache.",
        &w.analysis_cache_hits,
    );
    o.counter(
        "proof_proof_verifications_total",
        "Signed proof artifacts verified by the HTTP server (cached by sha256).",
        &w.verifications,
    );
    o.counter(
        "proof_proof_verdict_cache_hits_total",
        "Proof verdicts served from the cache.",
        &w.verdict_cache_hits,
    );
}

/// Invocations of the window by tenant and proof state.
fn kpi_proof_states(o: &mut Out, view: &FleetView) {
    o.head(
        "proof_kpi_proof_invocations",
        "gauge",
        "Invocations of the window by tenant and proof state (from the signed proofs).",
    );
    for (tenant, m) in &view.proofs.by_tenant {
        for st in crate::ProofState::ALL {
            o.sample(
                "proof_kpi_proof_invocations",
                &[("tenant", tenant), ("state", st.as_str())],
                crate::api::ProofTally::count(Some(m), st) as f64,
            );
        }
    }
}

/// How many invocations the gauges cover, and how many were skipped.
fn kpi_window(o: &mut Out, fleet: &Fleet, skipped: usize) {
    o.single(
        "proof_kpi_window_invocations",
        "gauge",
        "Invocations the proof_kpi_* gauges cover (newest stored ones).",
        fleet.invocations as f64,
    );
    o.single(
        "proof_kpi_window_skipped",
        "gauge",
        "Invocations of the window that could not be analyzed.",
        skipped as f64,
    );
}

/// The per-tenant ratio and latency gauges (cache hits, remote share,
/// time to first cache hit / remote execution).
fn kpi_group_gauges(o: &mut Out, fleet: &Fleet) {
    type Pick = fn(&proof_kpi::fleet::Group) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 6] = [
        (
            "proof_kpi_remote_cache_hit_ratio",
            "Pooled remote cache hits / cache lookups.",
            |g| g.remote_hit_rate,
        ),
        (
            "proof_kpi_disk_cache_hit_ratio",
            "Pooled disk cache hits / cache lookups.",
            |g| g.disk_hit_rate,
        ),
        (
            "proof_kpi_remote_execution_ratio",
            "Pooled remote executions / cache lookups.",
            |g| g.remote_share,
        ),
        (
            "proof_kpi_ttfch_p50_seconds",
            "Median time to first cache hit.",
            |g| g.ttfch_ms.p50.map(|v| v as f64 / 1000.0),
        ),
        (
            "proof_kpi_ttfch_p90_seconds",
            "p90 time to first cache hit.",
            |g| g.ttfch_ms.p90.map(|v| v as f64 / 1000.0),
        ),
        (
            "proof_kpi_ttfre_p50_seconds",
            "Median time to first remote execution.",
            |g| g.ttfre_ms.p50.map(|v| v as f64 / 1000.0),
        ),
    ];
    for (name, help, pick) in gauges {
        o.head(
            name,
            "gauge",
            &format!("{help} Per tenant over the window; absent when unknown."),
        );
        for (tenant, g) in &fleet.by_tenant {
            if let Some(v) = pick(g) {
                o.sample(name, &[("tenant", tenant)], v);
            }
        }
    }
}

/// The fairness shares of executor time per tenant.
fn kpi_executor_share(o: &mut Out, fleet: &Fleet) {
    o.head(
        "proof_kpi_executor_share",
        "gauge",
        "Share of executor time (or of remote executions) per tenant over the window.",
    );
    for (tenant, v) in &fleet.fairness.shares {
        o.sample(
            "proof_kpi_executor_share",
            &[("tenant", tenant), ("basis", &fleet.fairness.basis)],
            *v,
        );
    }
}

/// Invocations by dominant diagnosis cause.
fn kpi_diagnosis_causes(o: &mut Out, fleet: &Fleet) {
    o.head(
        "proof_kpi_diagnosis_invocations",
        "gauge",
        "Invocations of the window by dominant diagnosis cause.",
    );
    for (cause, n) in &fleet.overall.causes {
        o.sample(
            "proof_kpi_diagnosis_invocations",
            &[("cause", cause.as_str())],
            *n as f64,
        );
    }
}

/// Poisoned-cache suspects of the window.
fn kpi_poison(o: &mut Out, fleet: &Fleet) {
    o.single(
        "proof_kpi_poison_divergent_actions",
        "gauge",
        "Action digests with different outputs across invocations of the window.",
        fleet.poison.divergent_outputs.len() as f64,
    );
    o.single(
        "proof_kpi_poison_failing_cached_results",
        "gauge",
        "Cached results that failed in at least two invocations of the window.",
        fleet.poison.failing_cached_results.len() as f64,
    );
}

/// The audit's metrics, when the continuous audit is enabled.
fn render_ac_audit(o: &mut Out, s: &Snapshot) {
    if !s.enabled {
        return;
    }
    o.single(
        "proof_ac_entries_audited_total",
        "counter",
        "ActionCache entries behind executor-attested proofs read and compared by the continuous audit.",
        s.entries_audited_total as f64,
    );
    o.head(
        "proof_ac_poison_suspects",
        "gauge",
        "AC entries the last audit found changed or written by an unattested writer, by REAPI instance name.",
    );
    for (instance, n) in s.suspects_by_instance() {
        o.sample(
            "proof_ac_poison_suspects",
            &[("instance_name", &instance)],
            n as f64,
        );
    }
    o.single(
        "proof_ac_audit_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last audit run that read every entry (0: none yet).",
        s.last_success_unix.unwrap_or(0.0),
    );
    o.head(
        "proof_ac_audit_runs_total",
        "counter",
        "Audit runs, by outcome (failed: the executor or an entry could not be read).",
    );
    let ok = s.runs_total.saturating_sub(s.failed_runs_total);
    o.sample("proof_ac_audit_runs_total", &[("outcome", "ok")], ok as f64);
    o.sample(
        "proof_ac_audit_runs_total",
        &[("outcome", "failed")],
        s.failed_runs_total as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_counters_render_in_text_format() {
        let m = Metrics::default();
        Metrics::add(&m.events_ingested, 81);
        Metrics::add(&m.stream_errors_sequence, 2);
        Metrics::add(&m.store_commit_micros, 1_500_000);
        let mut s = String::new();
        render_server(&mut s, &m);
        assert!(s.contains(
            "# TYPE proof_events_ingested_total counter\nproof_events_ingested_total 81\n"
        ));
        assert!(s.contains("proof_stream_errors_total{reason=\"sequence\"} 2\n"));
        assert!(s.contains("proof_stream_errors_total{reason=\"store\"} 0\n"));
        assert!(s.contains("proof_store_commit_seconds_total 1.5\n"));
        for line in s.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("proof_"), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
