//! JSON API (`/api/v1/...`).

use axum::extract::{Path, Query, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use proof_kpi::fleet::{Fleet, FleetBuilder, FleetEntry, NO_TENANT};
use proof_store::{InvocationRecord, ListFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::verdict::{ProofState, Verdict};
use crate::{blocking, Inner, State, WebError, FLEET_MAX_LIMIT};

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

/// The list/detail row of one invocation, with its proof state (`checks`
/// only when `with_checks`).
pub(crate) fn row(rec: &InvocationRecord, verdict: &Verdict, with_checks: bool) -> Value {
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
        "proof": verdict.json(&rec.meta.invocation_id, with_checks),
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
            "invocations": recs.iter().map(|r| row(r, &s.verdict(r), false)).collect::<Vec<_>>(),
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
        let mut v = row(&rec, &s.verdict(&rec), true);
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

/// The client's view: the default policy's checks on what the stream
/// claims. Not a verdict: only the signed proof decides (see `verdict`).
pub(crate) fn client_claims_json(a: &proof_kpi::Analysis) -> Value {
    let checks = proof_artifact::Policy::default().evaluate(&a.evidence);
    json!({
        "note": "what the stream claims under the default policy, checked by no one; the signed proof's verdict is the proof state",
        "claims_pass": checks.iter().all(|c| c.ok),
        "complete": a.evidence.complete,
        "checks": checks,
    })
}

/// The proof state from the signed artifact, with every check, and the
/// client's claims beside it (null when the stream cannot be analyzed).
pub(crate) async fn proof(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let v = blocking(&state, move |s| {
        let rec = s.get(&id)?;
        let mut v = s.verdict(&rec).json(&id, true);
        v["client_claims"] = match s.analysis(&rec) {
            Ok(a) => client_claims_json(&a),
            Err(WebError::Unanalyzable { .. } | WebError::Gone { .. }) => Value::Null,
            Err(e) => return Err(e),
        };
        Ok(v)
    })
    .await?;
    Ok(json_response(&v))
}

/// The signed proof artifact itself (`<id>.proof.tar`).
pub(crate) async fn artifact(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (path, name) = blocking(&state, move |s| {
        let rec = s.get(&id)?;
        let Some(cfg) = &s.cfg.proofs else {
            return Err(WebError::NoArtifact(format!(
                "this server reads no proofs directory, so it has no proof of invocation {id}"
            )));
        };
        let name = format!("{id}.proof.tar");
        let path = cfg.dir.join(&name);
        if !path.is_file() {
            let v = s.verdict(&rec);
            return Err(WebError::NoArtifact(format!(
                "invocation {id} has no signed proof: its proof state is \"{}\" ({})",
                v.state.as_str(),
                v.reason
            )));
        }
        Ok((path, name))
    })
    .await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| WebError::Internal(format!("cannot read {}: {e}", path.display())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FleetQuery {
    pub tenant: Option<String>,
    pub limit: Option<usize>,
}

/// Invocations by proof state (from the signed proofs), overall and per
/// tenant (the fleet's tenant of each invocation).
#[derive(Debug, Default)]
pub(crate) struct ProofTally {
    pub overall: BTreeMap<ProofState, u64>,
    pub by_tenant: BTreeMap<String, BTreeMap<ProofState, u64>>,
}

impl ProofTally {
    fn push(&mut self, tenant: String, state: ProofState) {
        *self.overall.entry(state).or_default() += 1;
        *self
            .by_tenant
            .entry(tenant)
            .or_default()
            .entry(state)
            .or_default() += 1;
    }

    pub fn count(m: Option<&BTreeMap<ProofState, u64>>, state: ProofState) -> u64 {
        m.and_then(|m| m.get(&state)).copied().unwrap_or(0)
    }

    pub fn json(&self) -> Value {
        let obj = |m: Option<&BTreeMap<ProofState, u64>>| {
            let mut o = serde_json::Map::new();
            for st in ProofState::ALL {
                o.insert(st.as_str().to_string(), json!(Self::count(m, st)));
            }
            Value::Object(o)
        };
        let mut by_tenant = serde_json::Map::new();
        for (t, m) in &self.by_tenant {
            by_tenant.insert(t.clone(), obj(Some(m)));
        }
        json!({ "overall": obj(Some(&self.overall)), "by_tenant": by_tenant })
    }
}

/// A fleet view: the KPI aggregates, the unanalyzable invocations, the proof states.
pub(crate) struct FleetView {
    pub fleet: Fleet,
    pub skipped: Vec<Value>,
    pub proofs: ProofTally,
}

/// Fleet view over the newest `limit` invocations (optionally one tenant).
pub(crate) fn fleet_of(s: &Inner, q: &FleetQuery) -> Result<FleetView, WebError> {
    let limit = q.limit.unwrap_or(FLEET_DEFAULT);
    if limit == 0 || limit > FLEET_MAX_LIMIT {
        return Err(WebError::BadRequest(format!(
            "limit={limit} is out of range for a fleet view; use 1..={FLEET_MAX_LIMIT}"
        )));
    }
    let recs = s.list(&ListFilter {
        tenant: q.tenant.clone().filter(|t| !t.is_empty()),
        limit,
        ..ListFilter::default()
    })?;
    let mut b = FleetBuilder::new(s.cfg.classes.clone());
    let mut skipped = Vec::new();
    let mut proofs = ProofTally::default();
    for rec in &recs {
        let state = s.verdict(rec).state;
        match s.analysis(rec) {
            Ok(a) => {
                let entry = FleetEntry {
                    tenant: rec.meta.tenant.as_deref(),
                    kpis: &a.kpis,
                    evidence: &a.evidence,
                    cause: Some(a.diagnosis.dominant_cause),
                };
                proofs.push(FleetBuilder::tenant_of(&entry), state);
                b.push(entry);
            }
            Err(e @ (WebError::Unanalyzable { .. } | WebError::Gone { .. })) => {
                let tenant = rec.meta.tenant.as_deref().filter(|t| !t.is_empty());
                proofs.push(tenant.unwrap_or(NO_TENANT).to_string(), state);
                skipped.push(json!({
                    "invocation_id": rec.meta.invocation_id,
                    "reason": e.to_string(),
                }));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(FleetView {
        fleet: b.finish(),
        skipped,
        proofs,
    })
}

pub(crate) async fn fleet(
    AxState(state): AxState<State>,
    Query(q): Query<FleetQuery>,
) -> Result<Response, WebError> {
    let v = blocking(&state, move |s| {
        let view = fleet_of(s, &q)?;
        let mut v =
            serde_json::to_value(&view.fleet).map_err(|e| WebError::Internal(e.to_string()))?;
        v["skipped"] = json!(view.skipped);
        v["proofs"] = view.proofs.json();
        Ok(v)
    })
    .await?;
    Ok(json_response(&v))
}
