//! The continuous AC audit (`proof serve --audit-interval`): the suspects page `/ac-audit` and `/api/v1/ac-audit` (docs/ac-authority.md).

use std::fmt::Write as _;

use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use proof_acaudit::watch::Snapshot;

use crate::html::esc;
use crate::State;

/// The tenant of the request (tenants configured), if any.
fn request_tenant() -> Option<String> {
    crate::REQUEST_TENANT.try_with(Clone::clone).ok().flatten()
}

/// What `tenant` may see of the last report's suspects: those its own
/// proofs relied on, with only its own proofs named.
fn tenant_suspects(s: &Snapshot, tenant: &str) -> Vec<proof_acaudit::Suspect> {
    s.last
        .iter()
        .flat_map(|r| &r.suspects)
        .filter_map(|x| x.for_tenant(tenant))
        .collect()
}

/// `/api/v1/ac-audit`: the last report, or why there is none. With
/// tenants, a tenant sees only the suspects its own proofs relied on.
pub(crate) async fn api(AxState(state): AxState<State>) -> Response {
    let s = state.cfg.metrics.ac_audit.snapshot();
    if let Some(t) = request_tenant() {
        return axum::Json(serde_json::json!({
            "enabled": s.enabled,
            "last_success_unix": s.last_success_unix,
            "tenant": t,
            "suspects": tenant_suspects(&s, &t),
        }))
        .into_response();
    }
    axum::Json(serde_json::json!({
        "enabled": s.enabled,
        "last_success_unix": s.last_success_unix,
        "last_error": s.last_error,
        "report": s.last,
    }))
    .into_response()
}

/// `/ac-audit`: the suspects of the last run.
pub(crate) async fn page(AxState(state): AxState<State>) -> Response {
    let s = state.cfg.metrics.ac_audit.snapshot();
    let mut b = String::from("<h1>Action-cache audit</h1>");
    if !s.enabled {
        b.push_str("<p class=\"muted\">The continuous audit is off: start <code>proof serve</code> with <code>--executor URL --audit-interval 5m</code> (docs/ac-authority.md).</p>");
        return crate::html::page("AC audit", &b).into_response();
    }
    if let Some(e) = &s.last_error {
        let _ = write!(
            b,
            "<p class=\"bad\" id=\"ac-error\">Last run: {}</p>",
            esc(e)
        );
    }
    let tenant = request_tenant();
    let scoped;
    let last = match (&s.last, &tenant) {
        (Some(r), Some(t)) => {
            // A tenant sees its own proofs' suspects, not the fleet's.
            scoped = proof_acaudit::AuditReport {
                summary: format!(
                    "Last audit at {}: suspects among the AC entries tenant {t}'s proofs relied on.",
                    r.audited_at
                ),
                suspects: tenant_suspects(&s, t),
                entries: Vec::new(),
                ..r.clone()
            };
            Some(&scoped)
        }
        (r, _) => r.as_ref(),
    };
    match last {
        None => b.push_str("<p class=\"muted\">No audit has finished yet.</p>"),
        Some(r) => {
            let _ = write!(
                b,
                "<p id=\"ac-summary\">{} <a href=\"/api/v1/ac-audit\">JSON</a></p>",
                esc(&r.summary)
            );
            if r.suspects.is_empty() {
                b.push_str("<p class=\"ok\" id=\"ac-clean\">No poison suspects.</p>");
            } else {
                let _ = write!(
                    b,
                    "<p class=\"bad\">{} poison suspect(s): quarantine each with the runbook of docs/ac-authority.md.</p>\
<table id=\"ac-suspects\"><tr><th>Verdict</th><th>Instance</th><th>Action</th><th>Targets</th><th>Classes</th>\
<th>Proofs</th><th>Writer</th><th>First seen</th><th>Attested result</th><th>Current result</th></tr>",
                    r.suspects.len()
                );
                for x in &r.suspects {
                    let _ = write!(
                        b,
                        "<tr><td class=\"bad\">{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td>\
<td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                        x.verdict.as_str(),
                        esc(&x.instance_name),
                        esc(&x.action_digest),
                        esc(&x.targets.join(", ")),
                        esc(&x.classes.join(", ")),
                        esc(&x.proofs.join(", ")),
                        esc(&x.writer),
                        esc(&x.first_seen),
                        esc(&x.attested_result_digests.join(", ")),
                        esc(&x.current_result_digest)
                    );
                }
                b.push_str("</table>");
            }
        }
    }
    crate::html::page("AC audit", &b).into_response()
}
