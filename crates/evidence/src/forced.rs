//! Is remote execution forced? One function per rule that says it is not
//! (`Executor::not_forced_reasons`); `executor.forced` is true when none
//! of them gives a reason. Pure: reads the effective options and the
//! process counts only.

use crate::options::Options;
use crate::{Executor, Processes};

/// Every reason the options leave a spawn free to run off the remote
/// executor, in the order the rules are checked. `local_remotable` is the
/// execution log's count of remotable spawns that ran locally, when an
/// execution log was read.
pub(crate) fn not_forced_reasons(
    o: &Options,
    ex: &Executor,
    local_remotable: Option<u64>,
    processes: &Processes,
) -> Vec<String> {
    let mut reasons = Vec::new();
    reasons.extend(remote_executor_rule(o, ex));
    reasons.extend(spawn_strategy_rule(ex));
    reasons.extend(strategy_rule(ex));
    reasons.extend(strategy_regexp_rule(ex));
    reasons.extend(local_fallback_rule(ex, local_remotable, processes));
    reasons
}

/// A comma-separated strategy list that names `remote`.
fn has_remote(list: &str) -> bool {
    list.split(',').any(|s| s.trim() == "remote")
}

/// `--remote_executor` unset, or set to an empty value.
fn remote_executor_rule(o: &Options, ex: &Executor) -> Option<String> {
    if ex.remote_executor.is_some() {
        return None;
    }
    Some(match o.last("remote_executor") {
        Some(_) => "--remote_executor is set to an empty value, which disables remote execution"
            .to_string(),
        None => {
            "--remote_executor is not set, so no spawn can run on a remote executor".to_string()
        }
    })
}

/// `--spawn_strategy` without `remote`.
fn spawn_strategy_rule(ex: &Executor) -> Option<String> {
    let s = ex.spawn_strategy.as_ref()?;
    if has_remote(s) {
        return None;
    }
    Some(format!(
        "--spawn_strategy={s} does not include remote, so spawns run on the Bazel host"
    ))
}

/// `--strategy=[MNEMONIC=]LIST` without `remote`; the last value per
/// mnemonic wins.
fn strategy_rule(ex: &Executor) -> Vec<String> {
    let mut per_mnemonic: Vec<(&str, &str)> = Vec::new();
    for v in &ex.strategies {
        let (mnemonic, list) = v.split_once('=').unwrap_or(("", v.as_str()));
        per_mnemonic.retain(|(m, _)| *m != mnemonic);
        per_mnemonic.push((mnemonic, list));
    }
    per_mnemonic
        .into_iter()
        .filter(|(_, list)| !list.is_empty() && !has_remote(list))
        .map(|(mnemonic, list)| {
            if mnemonic.is_empty() {
                format!("--strategy={list} makes {list} the default strategy, without remote")
            } else {
                format!("--strategy={mnemonic}={list} runs {mnemonic} actions with {list}, not remotely")
            }
        })
        .collect()
}

/// `--strategy_regexp=REGEX=LIST` without `remote` (strategy names never
/// contain '=').
fn strategy_regexp_rule(ex: &Executor) -> Vec<String> {
    ex.strategy_regexps
        .iter()
        .filter_map(|v| v.rsplit_once('='))
        .filter(|(_, list)| !list.is_empty() && !has_remote(list))
        .map(|(regex, list)| {
            format!(
                "--strategy_regexp={regex}={list} runs actions matching {regex} with {list}, not remotely"
            )
        })
        .collect()
}

/// `--remote_local_fallback` with spawns that did run locally. The
/// execution log tells remotable spawns that ran locally apart from spawns
/// that were never allowed remotely; without it, any local process counts.
fn local_fallback_rule(
    ex: &Executor,
    local_remotable: Option<u64>,
    processes: &Processes,
) -> Option<String> {
    if ex.remote_local_fallback != Some(true) {
        return None;
    }
    if let Some(n) = local_remotable {
        return (n > 0).then(|| {
            format!(
                "--remote_local_fallback is set and the execution log shows {n} remotable spawn(s) that ran locally"
            )
        });
    }
    let from_counts = processes
        .sources
        .first()
        .map(|f| {
            f.by_class
                .iter()
                .filter(|(c, _)| c.is_local())
                .map(|(_, n)| *n)
                .fold(0u64, u64::saturating_add)
        })
        .filter(|n| *n > 0)?;
    Some(format!(
        "--remote_local_fallback is set and {from_counts} process(es) ran locally"
    ))
}
