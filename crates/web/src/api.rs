//! JSON API (`/api/v1/...`).

use axum::extract::{Path, Query, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use proof_kpi::fleet::{Fleet, FleetBuilder, FleetEntry};
use proof_store::{InvocationRecord, ListFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{blocking, Inner, State, WebError};

/// Default and largest page size.
pub(crate) const DEFAULT_LIMIT: usize = 50;
pub(crate) const MAX_LIMIT: usize = 1000;
/// Invocations a fleet view covers by default.
pub(crate) const FLEET_DEFAULT: usize = 200;

pub(crate) fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub tenant: Option<String>,
    pub build_id: Option<String>,
    pub complete: Option<bool>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl ListQuery {
    pub(crate) fn filter(&self) -> Result<ListFilter, WebError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(WebError::BadRequest(format!(
                "limit={limit} is out of range; use 1..={MAX_LIMIT}"
            )));
        }
        Ok(ListFilter {
            tenant: self.tenant.clone().filter(|t| !t.is_empty()),
            build_id: self.build_id.clone().filter(|t| !t.is_empty()),
            complete: self.complete,
            limit,
            offset: self.offset.unwrap_or(0),
            cursor: None,
        })
    }
}

/// The list/detail row of one invocation.
pub(crate) fn row(rec: &InvocationRecord) -> Value {
    let s = rec.summary.as_ref();
    let get = |k: &str| s.and_then(|s| s.get(k)).cloned().unwrap_or(Value::Null);
    json!({
        "invocation_id": rec.meta.invocation_id,
        "build_id": rec.meta.build_id,
        "tenant": rec.meta.tenant,
        "instance": rec.meta.instance,
        "source": rec.meta.source.as_str(),
        "received_at_ms": rec.meta.created_at_ms,
        "finalized": rec.state.finalized,
        "complete": rec.state.complete,
        "incomplete_reason": rec.state.incomplete_reason,
        "event_count": rec.state.event_count,
        "command": get("command"),
        "patterns": get("patterns"),
        "bazel_version": get("bazel_version"),
        "exit_code": get("exit_code"),
        "started_at": get("started_at"),
        "finished_at": get("finished_at"),
        "links": {
            "self": format!("/api/v1/invocations/{}", rec.meta.invocation_id),
            "page": format!("/invocations/{}", rec.meta.invocation_id),
        },
    })
}

pub(crate) async fn list(
    AxState(state): AxState<State>,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let filter = q.filter()?;
    let v = blocking(&state, move |s| {
        let recs = s.list(&filter)?;
        let next = (recs.len() == filter.limit).then(|| filter.offset + recs.len());
        Ok(json!({
            "invocations": recs.iter().map(row).collect::<Vec<_>>(),
            "offset": filter.offset,
            "limit": filter.limit,
            "next_offset": next,
        }))
    })
    .await?;
    Ok(json_response(&v))
}

pub(crate) async fn one(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let v = blocking(&state, move |s| {
        let rec = s.get(&id)?;
        let mut v = row(&rec);
        v["lifecycle"] = serde_json::to_value(&rec.lifecycle).unwrap_or(Value::Null);
        v["state"] = serde_json::to_value(&rec.state).unwrap_or(Value::Null);
        for (k, p) in [
            ("evidence", "evidence"),
            ("proof", "proof"),
            ("kpis", "kpis"),
            ("diagnosis", "diagnosis"),
        ] {
            v["links"][k] = json!(format!("/api/v1/invocations/{id}/{p}"));
        }
        Ok(v)
    })
    .await?;
    Ok(json_response(&v))
}

async fn analysis_part(
    state: State,
    id: String,
    part: fn(&proof_kpi::Analysis) -> Value,
) -> Result<Response, WebError> {
    let v = blocking(&state, move |s| {
        let rec = s.get(&id)?;
        let a = s.analysis(&rec)?;
        Ok(part(&a))
    })
    .await?;
    Ok(json_response(&v))
}

pub(crate) async fn evidence(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    analysis_part(state, id, |a| {
        serde_json::to_value(&a.evidence).unwrap_or(Value::Null)
    })
    .await
}

pub(crate) async fn kpis(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    analysis_part(state, id, |a| {
        serde_json::to_value(&a.kpis).unwrap_or(Value::Null)
    })
    .await
}

pub(crate) async fn diagnosis(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    analysis_part(state, id, |a| {
        serde_json::to_value(&a.diagnosis).unwrap_or(Value::Null)
    })
    .await
}

/// Policy checks of the default rbe-proof policy on the evidence.
pub(crate) fn proof_json(a: &proof_kpi::Analysis) -> Value {
    let checks = proof_artifact::Policy::default().evaluate(&a.evidence);
    json!({
        "proven_remote": checks.iter().all(|c| c.ok),
        "complete": a.evidence.complete,
        "checks": checks,
    })
}

pub(crate) async fn proof(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    analysis_part(state, id, proof_json).await
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FleetQuery {
    pub tenant: Option<String>,
    pub limit: Option<usize>,
}

/// Fleet view over the newest `limit` invocations (optionally one tenant).
pub(crate) fn fleet_of(s: &Inner, q: &FleetQuery) -> Result<(Fleet, Vec<Value>), WebError> {
    let limit = q.limit.unwrap_or(FLEET_DEFAULT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(WebError::BadRequest(format!(
            "limit={limit} is out of range; use 1..={MAX_LIMIT}"
        )));
    }
    let recs = s.list(&ListFilter {
        tenant: q.tenant.clone().filter(|t| !t.is_empty()),
        limit,
        ..ListFilter::default()
    })?;
    let mut b = FleetBuilder::new(s.cfg.classes.clone());
    let mut skipped = Vec::new();
    for rec in &recs {
        match s.analysis(rec) {
            Ok(a) => b.push(FleetEntry {
                tenant: rec.meta.tenant.as_deref(),
                kpis: &a.kpis,
                evidence: &a.evidence,
                cause: Some(a.diagnosis.dominant_cause),
            }),
            Err(e @ WebError::Unanalyzable { .. }) => skipped.push(json!({
                "invocation_id": rec.meta.invocation_id,
                "reason": e.to_string(),
            })),
            Err(e) => return Err(e),
        }
    }
    Ok((b.finish(), skipped))
}

pub(crate) async fn fleet(
    AxState(state): AxState<State>,
    Query(q): Query<FleetQuery>,
) -> Result<Response, WebError> {
    let v = blocking(&state, move |s| {
        let (fleet, skipped) = fleet_of(s, &q)?;
        let mut v = serde_json::to_value(&fleet).map_err(|e| WebError::Internal(e.to_string()))?;
        v["skipped"] = json!(skipped);
        Ok(v)
    })
    .await?;
    Ok(json_response(&v))
}
