//! Server-rendered HTML pages. Every interpolated string goes through
//! [`esc`]; no JavaScript.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State as AxState};
use axum::response::{Html, IntoResponse, Redirect, Response};
use proof_evidence::Evidence;
use proof_kpi::{Analysis, Diagnosis, Kpis};
use proof_store::InvocationRecord;
use serde_json::Value;

use crate::api::{client_claims_json, FleetQuery, ListQuery, ProofTally};
use crate::verdict::{ProofState, Verdict};
use crate::{blocking, State, WebError};

/// HTML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a path segment or query value.
fn url_enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// UTC `YYYY-MM-DD HH:MM:SS` of Unix milliseconds.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1a202c;background:#f7fafc}\
header{background:#1a365d;color:#fff;padding:10px 24px}header a{color:#fff;margin-right:16px;text-decoration:none}\
main{padding:16px 24px;max-width:1200px}table{border-collapse:collapse;background:#fff;width:100%}\
td,th{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}th{background:#edf2f7}\
code{font:12px ui-monospace,monospace}.ok{color:#276749;font-weight:600}.bad{color:#c53030;font-weight:600}\
.box{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:10px 14px;margin:12px 0}\
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}\
.g{background:#2f855a}.r{background:#c53030}.y{background:#b7791f}.n{background:#4a5568}.muted{color:#718096}\
.claims{border-style:dashed;background:#fdfdfe}\
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}.legend span{margin-right:12px}\
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}";

pub(crate) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style></head><body>\
<header><a href=\"/invocations\"><b>rbe-proof</b></a><a href=\"/invocations\">Invocations</a>\
<a href=\"/fleet\">Fleet</a><a href=\"/metrics\">Metrics</a></header><main>{body}</main></body></html>",
        esc(title)
    ))
}

pub(crate) async fn root() -> Redirect {
    Redirect::to("/invocations")
}

fn summary_str(rec: &InvocationRecord, key: &str) -> String {
    match rec.summary.as_ref().and_then(|s| s.get(key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn status_cell(rec: &InvocationRecord) -> String {
    let exit = rec
        .summary
        .as_ref()
        .and_then(|s| s.get("exit_code"))
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let (cls, text) = if !rec.state.finalized {
        ("y", "streaming".to_string())
    } else if rec.state.complete {
        (if exit == "SUCCESS" { "g" } else { "r" }, exit.to_string())
    } else {
        ("r", "incomplete".to_string())
    };
    format!("<span class=\"badge {cls}\">{}</span>", esc(&text))
}

/// The badge of a proof state (`data-proof` holds the state's API name).
fn proof_badge(st: ProofState) -> String {
    let (cls, text) = match st {
        ProofState::Proven => ("g", "PROVEN REMOTE"),
        ProofState::NotProven => ("r", "NOT PROVEN"),
        ProofState::Pending => ("y", "PENDING"),
        ProofState::NoProof => ("n", "NO PROOF"),
    };
    format!(
        "<span class=\"badge {cls}\" data-proof=\"{}\">{text}</span>",
        esc(st.as_str())
    )
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The proof status of one listed invocation, from its signed proof: the
/// state, and what the signed evidence counts (the executor's own count when
/// the proof carries its ledger) or which checks failed, or why there is
/// no verdict yet.
fn proof_cell(s: &crate::Inner, rec: &InvocationRecord) -> String {
    let v = s.verdict(rec);
    let mut notes = Vec::new();
    if let Some(a) = &v.artifact {
        if let Some(n) = a.attested_executions {
            notes.push(format!("the executor attests {n}"));
        }
        notes.push(a.remote_executions.map_or_else(
            || "remote executions unknown".to_string(),
            |n| format!("{} claimed", plural(n, "remote execution")),
        ));
    }
    match v.state {
        ProofState::Proven => {}
        ProofState::NotProven => notes.push(format!("failed: {}", v.failed().join(", "))),
        ProofState::Pending | ProofState::NoProof => notes.push(v.reason.clone()),
    }
    format!(
        "{} <span class=\"muted\">{}</span>",
        proof_badge(v.state),
        esc(&notes.join("; "))
    )
}

pub(crate) async fn list_page(
    AxState(state): AxState<State>,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let filter = q.filter()?;
    let tenant = q.tenant.clone().unwrap_or_default();
    let recs = blocking(&state, move |s| {
        let recs = s.list(&filter)?;
        let proofs = recs.iter().map(|r| proof_cell(s, r)).collect::<Vec<_>>();
        Ok(recs.into_iter().zip(proofs).collect::<Vec<_>>())
    })
    .await?;
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Invocations</h1><form method=\"get\" action=\"/invocations\">Tenant \
<input name=\"tenant\" value=\"{}\"> <button>Filter</button></form><table id=\"invocations\">\
<tr><th>Invocation</th><th>Received (UTC)</th><th>Command</th><th>Patterns</th><th>Tenant</th>\
<th>Events</th><th>Status</th><th>Proof</th></tr>",
        esc(&tenant)
    );
    for (r, proof) in &recs {
        let id = &r.meta.invocation_id;
        let _ = write!(
            b,
            "<tr><td><a class=\"inv\" href=\"/invocations/{}\"><code>{}</code></a></td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"proof\">{proof}</td></tr>",
            url_enc(id),
            esc(id),
            esc(&utc(r.meta.created_at_ms)),
            esc(&summary_str(r, "command")),
            esc(&summary_str(r, "patterns")),
            esc(r.meta.tenant.as_deref().unwrap_or("")),
            r.state.event_count,
            status_cell(r)
        );
    }
    b.push_str("</table>");
    if recs.is_empty() {
        b.push_str("<p class=\"muted\">No invocations stored yet. Point Bazel's --bes_backend at this server.</p>");
    }
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(crate::api::DEFAULT_LIMIT);
    b.push_str("<p>");
    if offset > 0 {
        let _ = write!(
            b,
            "<a href=\"/invocations?tenant={}&amp;limit={limit}&amp;offset={}\">&larr; newer</a> ",
            url_enc(&tenant),
            offset.saturating_sub(limit)
        );
    }
    if recs.len() == limit {
        let _ = write!(
            b,
            "<a href=\"/invocations?tenant={}&amp;limit={limit}&amp;offset={}\">older &rarr;</a>",
            url_enc(&tenant),
            offset + limit
        );
    }
    b.push_str("</p>");
    Ok(page("rbe-proof: invocations", &b).into_response())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(
        || "<span class=\"muted\">absent</span>".to_string(),
        |v| esc(&v.to_string()),
    )
}

fn pct(v: Option<f64>) -> String {
    opt(v.map(|v| format!("{:.1}%", v * 100.0)))
}

fn ms(v: Option<u64>) -> String {
    opt(v.map(|v| format!("{v} ms")))
}

/// A horizontal stacked bar with a legend; segments with 0 are skipped.
pub fn stacked_bar(title: &str, segments: &[(&str, f64, &str)], unit: &str) -> String {
    let total: f64 = segments.iter().map(|(_, v, _)| v.max(0.0)).sum();
    let mut s = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
width=\"520\" height=\"26\" viewBox=\"0 0 520 26\" role=\"img\" aria-label=\"{}\">\
<rect x=\"0\" y=\"0\" width=\"520\" height=\"26\" fill=\"#edf2f7\"/>",
        esc(title),
        esc(title)
    );
    let mut legend = String::from("<div class=\"legend\">");
    if total > 0.0 {
        let mut x = 0.0;
        for (name, v, color) in segments {
            if *v <= 0.0 {
                continue;
            }
            let w = v / total * 520.0;
            let _ = write!(
                s,
                "<rect x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"26\" fill=\"{color}\"><title>{}: {} {}</title></rect>",
                esc(name),
                v,
                esc(unit)
            );
            x += w;
            let _ = write!(
                legend,
                "<span><i class=\"sw\" style=\"background:{color}\"></i>{} {} {}</span>",
                esc(name),
                v,
                esc(unit)
            );
        }
    } else {
        legend.push_str("<span class=\"muted\">no data</span>");
    }
    legend.push_str("</div>");
    s.push_str("</svg>");
    s.push_str(&legend);
    s.push_str("</figure>");
    s
}

fn process_chart(k: &Kpis) -> String {
    match &k.process_mix {
        Some(m) => stacked_bar(
            &format!("Process mix (source: {})", source_name(&m.source)),
            &[
                ("remote", m.remote_execution as f64, "#2b6cb0"),
                ("remote cache hit", m.remote_cache_hit as f64, "#2f855a"),
                ("disk cache hit", m.disk_cache_hit as f64, "#68d391"),
                ("local", m.local as f64, "#dd6b20"),
                ("worker", m.worker as f64, "#d69e2e"),
                ("internal", m.internal.unwrap_or(0) as f64, "#a0aec0"),
                ("unknown", m.unknown as f64, "#4a5568"),
            ],
            "",
        ),
        None => "<p class=\"muted\">Process mix: the stream has no process counts.</p>".into(),
    }
}

fn source_name<T: serde::Serialize>(s: &T) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn time_chart(k: &Kpis) -> String {
    if let Some(r) = &k.remote_time {
        let other = r
            .total_ms
            .saturating_sub(r.queue_ms + r.fetch_ms + r.upload_ms + r.execution_wall_ms);
        return stacked_bar(
            &format!("Remote time split over {} spawns (execution log)", r.spawns),
            &[
                ("queue", r.queue_ms as f64, "#c53030"),
                ("upload", r.upload_ms as f64, "#805ad5"),
                ("execution", r.execution_wall_ms as f64, "#2b6cb0"),
                ("fetch", r.fetch_ms as f64, "#38b2ac"),
                ("other", other as f64, "#a0aec0"),
            ],
            "ms",
        );
    }
    if let Some(cp) = k
        .critical_path
        .as_ref()
        .filter(|c| !c.breakdown_pct.is_empty())
    {
        let colors = [
            ("queue", "#c53030"),
            ("setup", "#d69e2e"),
            ("upload", "#805ad5"),
            ("network", "#3182ce"),
            ("process", "#2b6cb0"),
            ("fetch", "#38b2ac"),
            ("parse", "#718096"),
            ("processOutputs", "#9f7aea"),
            ("retry", "#e53e3e"),
            ("other", "#a0aec0"),
        ];
        let segs: Vec<(&str, f64, &str)> = colors
            .iter()
            .filter_map(|(n, c)| cp.breakdown_pct.get(*n).map(|v| (*n, *v, *c)))
            .collect();
        return stacked_bar(
            "Critical-path time split (\"critical path\" tool log; no spawn metrics in the execution log)",
            &segs,
            "%",
        );
    }
    "<p class=\"muted\">Time split: no spawn metrics and no critical-path breakdown in this stream.</p>".into()
}

fn timing(t: &proof_kpi::Timing) -> String {
    match (t.ms, t.source) {
        (Some(v), Some(src)) => format!(
            "{} <span class=\"muted\">({})</span>",
            esc(&format!("{v} ms")),
            esc(&source_name(&src))
        ),
        (v, _) => ms(v),
    }
}

fn kpi_table(k: &Kpis) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Wall time", ms(k.wall_time_ms)),
        (
            "Time to first cache hit",
            timing(&k.time_to_first_cache_hit),
        ),
        (
            "Time to first remote execution",
            timing(&k.time_to_first_remote_execution),
        ),
        ("Remote cache hit rate", pct(k.cache.remote_hit_rate)),
        ("Disk cache hit rate", pct(k.cache.disk_hit_rate)),
        (
            "Local action cache hit rate",
            pct(k.cache.local_action_cache.as_ref().and_then(|l| l.hit_rate)),
        ),
        (
            "Remote share of spawns",
            pct(k.process_mix.as_ref().and_then(|m| m.remote_share)),
        ),
        (
            "Queue share of remote time",
            pct(k.remote_time.as_ref().and_then(|r| r.queue_share)),
        ),
        (
            "Critical path",
            ms(k.critical_path.as_ref().and_then(|c| c.ms)),
        ),
        (
            "Remote input bytes (CAS)",
            opt(k.cas.as_ref().and_then(|c| c.remote_input_bytes)),
        ),
        (
            "Cache-hit output bytes",
            opt(k.cas.as_ref().and_then(|c| c.cache_hit_output_bytes)),
        ),
        (
            "Analysis cache fully reused",
            opt(k.analysis_cache.fully_reused),
        ),
    ];
    if let Some(n) = k.spawns_without_digest.filter(|n| *n > 0) {
        rows.push(("Spawns without action digest", esc(&n.to_string())));
    }
    let mut s = String::from("<table id=\"kpis\">");
    for (name, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{v}</td></tr>", esc(name));
    }
    s.push_str("</table>");
    s
}

/// The "Proof status" box: the signed proof's verdict, every check, its
/// sha256 and a download link.
fn proof_box(id: &str, v: &Verdict) -> String {
    let mut b = format!(
        "<div class=\"box\" id=\"proof\"><h2>Proof status: {}</h2><p class=\"reason\">{}</p>",
        proof_badge(v.state),
        esc(&v.reason)
    );
    if let Some(a) = &v.artifact {
        let _ = write!(
            b,
            "<p>Signed proof <a id=\"artifact\" href=\"/api/v1/invocations/{}/artifact\" download=\"{}.proof.tar\">{}.proof.tar</a> \
&middot; sha256 <code class=\"sha256\">{}</code></p>",
            url_enc(id),
            esc(id),
            esc(id),
            esc(&a.sha256)
        );
    }
    if !v.checks.is_empty() {
        b.push_str("<table id=\"signed-checks\">");
        for c in &v.checks {
            let _ = write!(
                b,
                "<tr><td class=\"{}\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                if c.ok { "ok" } else { "bad" },
                if c.ok { "pass" } else { "fail" },
                esc(&c.name),
                esc(&c.detail)
            );
        }
        b.push_str("</table><p class=\"muted\">The checks of <code>proof verify</code> with this server's public key, \
and that the proof is this stored invocation's (<code>matches_store</code>).</p>");
    }
    b.push_str("</div>");
    b
}

/// The invocation page, section by section: header, proof status (the
/// signed proof's verdict), the client's claims, the diagnosis, KPIs and
/// charts, the evidence table.
fn invocation_body(rec: &InvocationRecord, a: &Analysis, verdict: &Verdict) -> String {
    let id = &rec.meta.invocation_id;
    let mut b = String::new();
    invocation_header(&mut b, rec, a);
    b.push_str(&proof_box(id, verdict));
    claims_box(&mut b, a);
    diagnosis_box(&mut b, &a.diagnosis);
    kpi_grid(&mut b, &a.kpis);
    evidence_box(&mut b, id, &a.evidence);
    b
}

/// The title line: id, command, patterns, Bazel version, tenant, received.
fn invocation_header(b: &mut String, rec: &InvocationRecord, a: &Analysis) {
    let ev = &a.evidence;
    let k = &a.kpis;
    let id = &rec.meta.invocation_id;
    let _ = write!(
        b,
        "<h1>Invocation <code>{}</code></h1><p>{} {} &middot; Bazel {} &middot; tenant {} &middot; received {} UTC &middot; \
<a href=\"/api/v1/invocations/{}\">JSON</a></p>",
        esc(id),
        esc(&ev.command),
        esc(&ev.patterns.join(" ")),
        esc(ev.bazel_version.as_deref().unwrap_or("unknown")),
        esc(rec.meta.tenant.as_deref().or(k.repo.as_deref()).unwrap_or("none")),
        esc(&utc(rec.meta.created_at_ms)),
        url_enc(id)
    );
}

/// The default policy's checks on the client's own account (they decide
/// nothing), and whether the stream is complete.
fn claims_box(b: &mut String, a: &Analysis) {
    let ev = &a.evidence;
    let claims = client_claims_json(a);
    b.push_str(
        "<div class=\"box claims\" id=\"claims\"><h2>Client's view: what the stream claims</h2>\
<p class=\"muted\">The default policy's checks on the client's own account of the build, checked by no one. \
They decide nothing: the proof status above does.</p><table>",
    );
    for c in claims["checks"].as_array().into_iter().flatten() {
        let ok = c["ok"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<tr><td class=\"{}\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
            if ok { "ok" } else { "bad" },
            if ok { "claims pass" } else { "claims fail" },
            esc(c["name"].as_str().unwrap_or("")),
            esc(c["detail"].as_str().unwrap_or(""))
        );
    }
    b.push_str("</table>");
    if !ev.complete {
        b.push_str("<p class=\"bad\">The stream is not complete (no BuildFinished or last_message yet).</p>");
    }
    b.push_str("</div>");
}

/// The diagnosis: dominant cause, the other findings, its facts and what is
/// not known.
fn diagnosis_box(b: &mut String, d: &Diagnosis) {
    let _ = write!(
        b,
        "<div class=\"box claims\" id=\"diagnosis\"><h2>Diagnosis (client's view): <code class=\"cause\">{}</code></h2><p>{}</p>",
        esc(d.dominant_cause.as_str()),
        esc(&d.summary)
    );
    if d.findings.len() > 1 {
        b.push_str("<p>Also matched:</p><ul>");
        for f in &d.findings[1..] {
            let _ = write!(
                b,
                "<li><code>{}</code>: {}</li>",
                esc(f.cause.as_str()),
                esc(&f.summary)
            );
        }
        b.push_str("</ul>");
    }
    if !d.evidence.is_empty() {
        b.push_str("<details><summary>Evidence</summary><ul>");
        for f in &d.evidence {
            let _ = write!(
                b,
                "<li><code>{}</code> = <code>{}</code> <span class=\"muted\">({})</span></li>",
                esc(&f.fact),
                esc(&f.value.to_string()),
                esc(&f.source)
            );
        }
        b.push_str("</ul></details>");
    }
    for m in &d.missing {
        let _ = write!(b, "<p class=\"muted\">Not known: {}</p>", esc(m));
    }
    b.push_str("</div>");
}

/// The KPI table and the process and time charts.
fn kpi_grid(b: &mut String, k: &Kpis) {
    let _ = write!(
        b,
        "<div class=\"grid\"><div class=\"box claims\"><h2>KPIs (client's view)</h2>{}</div><div class=\"box claims\"><h2>Charts (client's view)</h2>{}{}</div></div>",
        kpi_table(k),
        process_chart(k),
        time_chart(k)
    );
}

/// The evidence table (the client's view) and the JSON links.
fn evidence_box(b: &mut String, id: &str, ev: &Evidence) {
    b.push_str(
        "<div class=\"box claims\" id=\"evidence\"><h2>Evidence (client's view)</h2><table>",
    );
    for (n, v) in evidence_rows(ev) {
        let _ = write!(b, "<tr><th>{}</th><td>{v}</td></tr>", esc(n));
    }
    let _ = write!(
        b,
        "</table><p><a href=\"/api/v1/invocations/{0}/evidence\">evidence JSON</a> &middot; \
<a href=\"/api/v1/invocations/{0}/kpis\">KPIs JSON</a> &middot; <a href=\"/api/v1/invocations/{0}/diagnosis\">diagnosis JSON</a></p></div>",
        url_enc(id)
    );
}

/// The rows of the evidence table: label, HTML-escaped value.
fn evidence_rows(ev: &Evidence) -> Vec<(&'static str, String)> {
    let ex = &ev.executor;
    vec![
        ("Remote executor", opt(ex.remote_executor.as_deref())),
        ("Forced remote", esc(&ex.forced.to_string())),
        ("Not forced because", esc(&ex.not_forced_reasons.join("; "))),
        (
            "Remote executions",
            format!(
                "{}{}",
                opt(ev.processes.remote_executions),
                ev.processes
                    .source
                    .map(|s| format!(
                        " <span class=\"muted\">(per {})</span>",
                        esc(&source_name(&s))
                    ))
                    .unwrap_or_default()
            ),
        ),
        ("Remote cache hits", opt(ev.processes.remote_cache_hits)),
        (
            "Worker images",
            esc(&ev
                .worker_images
                .iter()
                .map(|w| {
                    format!(
                        "{}{}",
                        w.image,
                        if w.pinned {
                            " (pinned)"
                        } else {
                            " (NOT pinned)"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")),
        ),
        (
            "Exit code",
            opt(ev
                .exit_code
                .as_ref()
                .map(|c| format!("{} ({})", c.name, c.code))),
        ),
        ("Started", opt(ev.started_at.as_deref())),
        ("Finished", opt(ev.finished_at.as_deref())),
        ("Events", esc(&ev.event_count.to_string())),
        ("Targets", esc(&ev.targets.len().to_string())),
        (
            "Tests",
            esc(&ev
                .tests
                .iter()
                .map(|(l, t)| {
                    format!(
                        "{l}: {} ({})",
                        t.status,
                        t.strategy.as_deref().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")),
        ),
    ]
}

/// The page of an invocation that cannot be analyzed: its title, the proof
/// status (a proof may exist all the same) and `note` (HTML) on why.
fn unanalyzed_body(id: &str, verdict: &Verdict, note: &str) -> String {
    format!(
        "<h1>Invocation <code>{}</code></h1>{}{note}",
        esc(id),
        proof_box(id, verdict)
    )
}

pub(crate) async fn invocation_page(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let out = blocking(&state, move |s| {
        let rec = s.get(&id)?;
        let verdict = s.verdict(&rec);
        let body = match s.analysis(&rec) {
            Ok(a) => invocation_body(&rec, &a, &verdict),
            Err(WebError::Gone { message, .. }) => unanalyzed_body(
                &id,
                &verdict,
                &format!(
                    "<p>Journal removed by retention: {}</p><p>{} events were stored.</p>",
                    esc(&message),
                    rec.state.event_count
                ),
            ),
            Err(WebError::Unanalyzable { message, .. }) => unanalyzed_body(
                &id,
                &verdict,
                &format!(
                    "<p class=\"bad\">Cannot be analyzed yet: {}</p><p>{} events stored.</p>",
                    esc(&message),
                    rec.state.event_count
                ),
            ),
            Err(e) => return Err(e),
        };
        Ok(page(&format!("rbe-proof: {id}"), &body))
    })
    .await;
    match out {
        Ok(p) => Ok(p.into_response()),
        Err(WebError::NotFound(id)) => Ok((
            axum::http::StatusCode::NOT_FOUND,
            page(
                "rbe-proof: not found",
                &format!(
                    "<h1>Not found</h1><p>No invocation <code>{}</code> is stored. It may still be uploading; \
<a href=\"/invocations\">all invocations</a>.</p>",
                    esc(&id)
                ),
            ),
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

pub(crate) async fn fleet_page(
    AxState(state): AxState<State>,
    Query(q): Query<FleetQuery>,
) -> Result<Response, WebError> {
    let view = blocking(&state, move |s| crate::api::fleet_of(s, &q)).await?;
    let (fleet, skipped, proofs) = (&view.fleet, &view.skipped, &view.proofs);
    let n = |m, st| ProofTally::count(m, st);
    let mut b = format!(
        "<h1>Fleet</h1><p>{} invocations ({} could not be analyzed); by their signed proofs: \
<span id=\"fleet-proven\">{} proven</span>, {} not proven, {} pending, {} without a proof. \
<a href=\"/api/v1/fleet\">JSON</a></p>\
<table id=\"tenants\"><tr><th>Tenant</th><th>Invocations</th><th>Proven (signed)</th><th>Not proven</th>\
<th>Remote hit rate</th><th>Disk hit rate</th>\
<th>Remote share</th><th>TTFCH p50 / p90</th><th>Executor share</th></tr>",
        fleet.invocations,
        skipped.len(),
        n(Some(&proofs.overall), ProofState::Proven),
        n(Some(&proofs.overall), ProofState::NotProven),
        n(Some(&proofs.overall), ProofState::Pending),
        n(Some(&proofs.overall), ProofState::NoProof),
    );
    for (t, g) in &fleet.by_tenant {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(t),
            g.invocations,
            n(proofs.by_tenant.get(t), ProofState::Proven),
            n(proofs.by_tenant.get(t), ProofState::NotProven),
            pct(g.remote_hit_rate),
            pct(g.disk_hit_rate),
            pct(g.remote_share),
            ms(g.ttfch_ms.p50),
            ms(g.ttfch_ms.p90),
            pct(fleet.fairness.shares.get(t).copied())
        );
    }
    let _ = write!(
        b,
        "</table><div class=\"box\"><h2>Poison signals</h2><p>{} action digests checked over {} invocations with digests; \
{} invocations had none (no execution log, or a Bazel 4.x log).</p><ul>",
        fleet.poison.actions_checked,
        fleet.poison.invocations_with_digests,
        fleet.poison.invocations_without_digests
    );
    for d in &fleet.poison.divergent_outputs {
        let _ = write!(
            b,
            "<li>{} <code>{}</code> ({}) gave {} different outputs</li>",
            esc(&d.mnemonic),
            esc(&d.digest),
            esc(&d.target_label),
            d.distinct_outputs
        );
    }
    for f in &fleet.poison.failing_cached_results {
        let _ = write!(
            b,
            "<li>cached {} <code>{}</code> failed in {} invocations</li>",
            esc(&f.kind),
            esc(&f.key),
            f.invocations.len()
        );
    }
    b.push_str("</ul></div>");
    Ok(page("rbe-proof: fleet", &b).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_dates() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_enc("a b/c"), "a%20b%2Fc");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_735_791_048), "2026-11-26 23:29:51");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn bar_widths_add_up_and_labels_are_escaped() {
        let s = stacked_bar(
            "<mix>",
            &[
                ("a<b", 3.0, "#000"),
                ("zero", 0.0, "#111"),
                ("c", 1.0, "#222"),
            ],
            "",
        );
        assert!(s.contains("width=\"390.00\""), "{s}");
        assert!(s.contains("x=\"390.00\" y=\"0\" width=\"130.00\""), "{s}");
        assert!(!s.contains("zero"));
        assert!(s.contains("&lt;mix&gt;") && s.contains("a&lt;b"));
        assert!(!s.contains("<mix>"));
    }
}
