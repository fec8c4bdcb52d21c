//! Fleet views over many invocations: per tenant (repository) and per
//! target class, fairness of executor time, and poison signals.
//!
//! Feed one [`FleetEntry`] per invocation to [`FleetBuilder::push`]; only
//! aggregates and the per-digest output fingerprints are kept.

use std::collections::{BTreeMap, BTreeSet};

use proof_evidence::Evidence;
use serde::{Deserialize, Serialize};

use crate::{round4, Cause, Kpis};

/// Version of the [`Fleet`] JSON shape.
pub const FLEET_VERSION: &str = "1";

/// Tenant used when neither the store nor `REPO` build metadata name one.
pub const NO_TENANT: &str = "(none)";
/// Target class of invocations no mapping rule matched.
pub const UNCLASSIFIED: &str = "(unclassified)";

/// Maps target patterns to classes: the first rule whose prefix starts one
/// of the invocation's patterns wins, e.g. `("//services/", "services")`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetClassMap {
    pub rules: Vec<(String, String)>,
}

impl TargetClassMap {
    /// Parses `PREFIX=CLASS,PREFIX=CLASS`.
    pub fn parse(spec: &str) -> Option<Self> {
        let mut rules = Vec::new();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (prefix, class) = part.split_once('=')?;
            rules.push((prefix.trim().to_string(), class.trim().to_string()));
        }
        Some(TargetClassMap { rules })
    }

    pub fn classify(&self, patterns: &[String]) -> String {
        for (prefix, class) in &self.rules {
            if patterns.iter().any(|p| p.starts_with(prefix.as_str())) {
                return class.clone();
            }
        }
        UNCLASSIFIED.to_string()
    }
}

/// One invocation's contribution.
#[derive(Debug, Clone, Copy)]
pub struct FleetEntry<'a> {
    /// The store's tenant; falls back to `REPO` build metadata.
    pub tenant: Option<&'a str>,
    pub kpis: &'a Kpis,
    pub evidence: &'a Evidence,
    pub cause: Option<Cause>,
}

/// p50/p90 of a millisecond KPI (nearest rank).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Invocations where the KPI was present.
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
}

fn percentiles(mut v: Vec<u64>) -> Percentiles {
    v.sort_unstable();
    let rank = |p: f64| -> Option<u64> {
        if v.is_empty() {
            return None;
        }
        let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[idx])
    };
    Percentiles {
        count: v.len() as u64,
        p50: rank(0.5),
        p90: rank(0.9),
    }
}

/// Aggregates of one group (tenant or target class).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub invocations: u64,
    /// Invocations with process counts.
    pub with_counts: u64,
    pub lookups: u64,
    pub remote_executions: u64,
    pub remote_cache_hits: u64,
    pub disk_cache_hits: u64,
    pub local: u64,
    /// Pooled: Σ hits / Σ lookups.
    pub remote_hit_rate: Option<f64>,
    pub disk_hit_rate: Option<f64>,
    pub remote_share: Option<f64>,
    pub ttfch_ms: Percentiles,
    pub ttfre_ms: Percentiles,
    /// Σ execution_wall_ms of remote spawns (exec logs with metrics only).
    pub executor_ms: Option<u64>,
    /// Dominant diagnosis cause → invocations.
    pub causes: BTreeMap<Cause, u64>,
}

#[derive(Debug, Default)]
struct GroupAcc {
    g: Group,
    ttfch: Vec<u64>,
    ttfre: Vec<u64>,
}

impl GroupAcc {
    fn push(&mut self, e: &FleetEntry<'_>) {
        let g = &mut self.g;
        g.invocations += 1;
        if let Some(m) = &e.kpis.process_mix {
            g.with_counts += 1;
            g.lookups += m.lookups();
            g.remote_executions += m.remote_execution;
            g.remote_cache_hits += m.remote_cache_hit;
            g.disk_cache_hits += m.disk_cache_hit;
            g.local += m.local + m.worker;
        }
        if let Some(ms) = e.kpis.time_to_first_cache_hit.ms {
            self.ttfch.push(ms);
        }
        if let Some(ms) = e.kpis.time_to_first_remote_execution.ms {
            self.ttfre.push(ms);
        }
        if let Some(r) = &e.kpis.remote_time {
            *g.executor_ms.get_or_insert(0) += r.execution_wall_ms;
        }
        if let Some(c) = e.cause {
            *g.causes.entry(c).or_insert(0) += 1;
        }
    }

    fn finish(mut self) -> Group {
        let g = &mut self.g;
        let r = |n: u64| (g.lookups > 0).then(|| round4(n as f64 / g.lookups as f64));
        g.remote_hit_rate = r(g.remote_cache_hits);
        g.disk_hit_rate = r(g.disk_cache_hits);
        g.remote_share = r(g.remote_executions);
        g.ttfch_ms = percentiles(std::mem::take(&mut self.ttfch));
        g.ttfre_ms = percentiles(std::mem::take(&mut self.ttfre));
        self.g
    }
}

/// Share of executor time (or, without spawn metrics, of remote
/// executions) per tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    /// `"execution_wall_ms"` when every tenant's executor time is known from
    /// exec-log metrics, else `"remote_executions"`.
    pub basis: String,
    pub shares: BTreeMap<String, f64>,
    /// Largest share / fair share (1 / tenants); 1.0 is perfectly even.
    pub max_over_fair: Option<f64>,
}

/// The same action digest produced different outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergentAction {
    pub digest: String,
    pub target_label: String,
    pub mnemonic: String,
    /// Distinct output fingerprints seen.
    pub distinct_outputs: u64,
    pub invocations: Vec<String>,
}

/// A cached result that keeps failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingCachedResult {
    /// Action digest (exec log) or test label (BEP).
    pub key: String,
    pub kind: String,
    pub invocations: Vec<String>,
}

/// Poison signals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Poison {
    /// Invocations whose exec log gave action digests.
    pub invocations_with_digests: u64,
    /// Invocations without an exec log or whose log has no digests (all
    /// Bazel 4.x logs): digest-based checks cannot see them.
    pub invocations_without_digests: u64,
    pub actions_checked: u64,
    pub divergent_outputs: Vec<DivergentAction>,
    pub failing_cached_results: Vec<FailingCachedResult>,
}

/// The fleet view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub fleet_version: String,
    pub invocations: u64,
    pub overall: Group,
    pub by_tenant: BTreeMap<String, Group>,
    pub by_target_class: BTreeMap<String, Group>,
    pub fairness: Fairness,
    pub poison: Poison,
}

#[derive(Debug, Default)]
struct DigestAcc {
    label: String,
    mnemonic: String,
    outputs: BTreeSet<String>,
    invocations: BTreeSet<String>,
    failing_hits: BTreeSet<String>,
}

/// Accumulates a [`Fleet`].
#[derive(Debug, Default)]
pub struct FleetBuilder {
    classes: TargetClassMap,
    overall: GroupAcc,
    tenants: BTreeMap<String, GroupAcc>,
    class_groups: BTreeMap<String, GroupAcc>,
    tenant_remote: BTreeMap<String, (u64, Option<u64>)>,
    digests: BTreeMap<String, DigestAcc>,
    failing_tests: BTreeMap<String, BTreeSet<String>>,
    with_digests: u64,
    without_digests: u64,
}

impl FleetBuilder {
    pub fn new(classes: TargetClassMap) -> Self {
        FleetBuilder {
            classes,
            ..FleetBuilder::default()
        }
    }

    /// The tenant an entry counts under.
    pub fn tenant_of(e: &FleetEntry<'_>) -> String {
        e.tenant
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .or_else(|| e.kpis.repo.clone())
            .unwrap_or_else(|| NO_TENANT.to_string())
    }

    pub fn push(&mut self, e: FleetEntry<'_>) {
        let tenant = Self::tenant_of(&e);
        let class = self.classes.classify(&e.evidence.patterns);
        self.overall.push(&e);
        self.tenants.entry(tenant.clone()).or_default().push(&e);
        self.class_groups.entry(class).or_default().push(&e);
        let slot = self.tenant_remote.entry(tenant).or_insert((0, Some(0)));
        slot.0 += e
            .kpis
            .process_mix
            .as_ref()
            .map_or(0, |m| m.remote_execution);
        slot.1 = match (slot.1, &e.kpis.remote_time) {
            (Some(a), Some(r)) => Some(a + r.execution_wall_ms),
            // Remote executions without metrics make the time unknown.
            (Some(a), None)
                if e.kpis
                    .process_mix
                    .as_ref()
                    .is_none_or(|m| m.remote_execution == 0) =>
            {
                Some(a)
            }
            _ => None,
        };

        let id = &e.kpis.invocation_id;
        if e.kpis.actions.is_empty() {
            self.without_digests += 1;
        } else {
            self.with_digests += 1;
        }
        for a in &e.kpis.actions {
            let d = self.digests.entry(a.digest.clone()).or_default();
            if d.label.is_empty() {
                d.label = a.target_label.clone();
                d.mnemonic = a.mnemonic.clone();
            }
            d.invocations.insert(id.clone());
            if a.exit_code == 0 {
                if let Some(o) = &a.outputs {
                    d.outputs.insert(o.clone());
                }
            }
            if a.cache_hit && a.exit_code != 0 {
                d.failing_hits.insert(id.clone());
            }
        }
        for (label, t) in &e.evidence.tests {
            let failed = matches!(t.status.as_str(), "FAILED" | "FLAKY" | "TIMEOUT");
            if failed && (t.cached_remotely || t.cached_locally) {
                self.failing_tests
                    .entry(label.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
    }

    pub fn finish(self) -> Fleet {
        let invocations = self.overall.g.invocations;
        let all_ms = self.tenant_remote.values().all(|(_, ms)| ms.is_some());
        let (basis, values): (&str, BTreeMap<String, u64>) = if all_ms {
            (
                "execution_wall_ms",
                self.tenant_remote
                    .iter()
                    .map(|(t, (_, ms))| (t.clone(), ms.unwrap_or(0)))
                    .collect(),
            )
        } else {
            (
                "remote_executions",
                self.tenant_remote
                    .iter()
                    .map(|(t, (n, _))| (t.clone(), *n))
                    .collect(),
            )
        };
        let total: u64 = values.values().sum();
        let shares: BTreeMap<String, f64> = if total > 0 {
            values
                .iter()
                .map(|(t, v)| (t.clone(), round4(*v as f64 / total as f64)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let max_over_fair = values
            .values()
            .max()
            .filter(|_| total > 0)
            .map(|m| round4(*m as f64 / total as f64 * values.len() as f64));

        let mut poison = Poison {
            invocations_with_digests: self.with_digests,
            invocations_without_digests: self.without_digests,
            actions_checked: self.digests.len() as u64,
            ..Poison::default()
        };
        for (digest, d) in &self.digests {
            if d.outputs.len() > 1 {
                poison.divergent_outputs.push(DivergentAction {
                    digest: digest.clone(),
                    target_label: d.label.clone(),
                    mnemonic: d.mnemonic.clone(),
                    distinct_outputs: d.outputs.len() as u64,
                    invocations: d.invocations.iter().cloned().collect(),
                });
            }
            if d.failing_hits.len() >= 2 {
                poison.failing_cached_results.push(FailingCachedResult {
                    key: digest.clone(),
                    kind: "action_cache_hit".into(),
                    invocations: d.failing_hits.iter().cloned().collect(),
                });
            }
        }
        for (label, ids) in self.failing_tests {
            if ids.len() >= 2 {
                poison.failing_cached_results.push(FailingCachedResult {
                    key: label,
                    kind: "cached_test_result".into(),
                    invocations: ids.into_iter().collect(),
                });
            }
        }
        Fleet {
            fleet_version: FLEET_VERSION.to_string(),
            invocations,
            overall: self.overall.finish(),
            by_tenant: self
                .tenants
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
            by_target_class: self
                .class_groups
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
            fairness: Fairness {
                basis: basis.to_string(),
                shares,
                max_over_fair,
            },
            poison,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles(vec![50, 10, 40, 20, 30, 60, 70, 80, 90, 100]);
        assert_eq!((p.count, p.p50, p.p90), (10, Some(50), Some(90)));
        let p = percentiles(vec![7]);
        assert_eq!((p.p50, p.p90), (Some(7), Some(7)));
        assert_eq!(percentiles(vec![]).p50, None);
    }

    #[test]
    fn class_map_first_prefix_wins() {
        let m = TargetClassMap::parse("//svc/=services, //=all").unwrap();
        assert_eq!(m.classify(&["//svc/api:all".into()]), "services");
        assert_eq!(m.classify(&["//lib:x".into()]), "all");
        assert_eq!(
            TargetClassMap::default().classify(&["//x".into()]),
            UNCLASSIFIED
        );
        assert_eq!(TargetClassMap::parse("nonsense"), None);
    }
}
