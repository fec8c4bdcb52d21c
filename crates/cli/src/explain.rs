//! `proof explain`: KPIs and the rule-based diagnosis of one stored
//! invocation (docs/kpis.md).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use proof_kpi::{Analysis, Analyzer, Kpis};
use proof_store::{RecordKind, Store};
use serde_json::json;

use crate::invocations::open_reader;
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The invocation id (see `proof list`).
    invocation_id: String,
    /// Store: a directory, or a postgres://USER[:PASSWORD]@HOST:PORT/DB URL.
    #[arg(long, env = "PROOF_STORE", default_value = "proof-store")]
    store: PathBuf,
    /// The execution log of the same command (--execution_log_binary_file or
    /// --execution_log_compact_file): adds start times, time split, CAS traffic.
    #[arg(long)]
    execlog: Option<PathBuf>,
    /// Print the diagnosis JSON (docs/kpis.md) with the KPIs under "kpis".
    #[arg(long)]
    json: bool,
}

fn analyze(store: &dyn Store, id: &str, execlog: Option<&PathBuf>) -> Result<Analysis> {
    let mut a = Analyzer::new();
    for rec in store.read(id)? {
        let rec = rec?;
        if rec.kind == RecordKind::BepEvent {
            a.push_event(&rec.payload)?;
        }
    }
    if let Some(p) = execlog {
        a.push_exec_log(|| std::fs::File::open(p).map(std::io::BufReader::new))
            .with_context(|| format!("cannot read the execution log {}", p.display()))?;
    }
    Ok(a.finish()?)
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| format!("{v} ms"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn kpi_lines(k: &Kpis) -> Vec<String> {
    let mut out = vec![
        format!(
            "time to first cache hit: {}; to first remote execution: {}",
            ms(k.time_to_first_cache_hit.ms),
            ms(k.time_to_first_remote_execution.ms)
        ),
        format!(
            "remote cache hit rate: {}; disk: {}; local action cache: {}",
            pct(k.cache.remote_hit_rate),
            pct(k.cache.disk_hit_rate),
            pct(k.cache.local_action_cache.as_ref().and_then(|l| l.hit_rate))
        ),
    ];
    if let Some(m) = &k.process_mix {
        out.push(format!(
            "processes: {} remote, {} remote cache hit, {} disk cache hit, {} local, {} worker (remote share {})",
            m.remote_execution,
            m.remote_cache_hit,
            m.disk_cache_hit,
            m.local,
            m.worker,
            pct(m.remote_share)
        ));
    }
    if let Some(r) = &k.remote_time {
        out.push(format!(
            "remote time over {} spawns: queue {} ms, upload {} ms, execution {} ms, fetch {} ms of {} ms (queue share {})",
            r.spawns,
            r.queue_ms,
            r.upload_ms,
            r.execution_wall_ms,
            r.fetch_ms,
            r.total_ms,
            pct(r.queue_share)
        ));
    }
    if let Some(c) = &k.critical_path {
        out.push(format!("critical path: {}", ms(c.ms)));
    }
    out
}

pub fn explain(a: ExplainArgs) -> Result<u8> {
    let store = open_reader(&a.store)?;
    if store.state(&a.invocation_id)?.is_none() {
        bail!(
            "no invocation {} in {}; `proof list` shows what is stored",
            a.invocation_id,
            crate::invocations::store_display(&a.store)
        );
    }
    let an = analyze(store.as_ref(), &a.invocation_id, a.execlog.as_ref())
        .with_context(|| format!("cannot analyze invocation {}", a.invocation_id))?;
    let d = &an.diagnosis;
    if a.json {
        let mut v = serde_json::to_value(d)?;
        v["kpis"] = json!(an.kpis);
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    outln!("invocation {}", d.invocation_id);
    outln!("dominant cause: {}", d.dominant_cause.as_str());
    outln!("  {}", d.summary);
    for f in &d.evidence {
        outln!("  evidence: {} = {} ({})", f.fact, f.value, f.source);
    }
    for f in d.findings.iter().skip(1) {
        outln!("also: {}: {}", f.cause.as_str(), f.summary);
    }
    for line in kpi_lines(&an.kpis) {
        outln!("{line}");
    }
    for m in &d.missing {
        outln!("not known: {m}");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(scenario: &str, file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bazel-4.2.3")
            .join(scenario)
            .join(file)
    }

    #[test]
    fn explains_a_stored_invocation_with_and_without_its_exec_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::invocations::open_store(dir.path()).unwrap();
        let bep = std::fs::File::open(fixture("failing-build", "bep.bin")).unwrap();
        let (_, fin) =
            proof_ingest::ingest_file(store.as_ref(), std::io::BufReader::new(bep), 0, |_| {})
                .unwrap();
        let id = fin.invocation_id;

        // The BEP alone: 4.2.3's process stats leave the failed remote spawn out.
        let a = analyze(store.as_ref(), &id, None).unwrap();
        assert_eq!(a.kpis.process_mix.as_ref().unwrap().remote_execution, 0);
        assert_eq!(a.kpis.signals.failed_spawns, None);

        // With the execution log the failed remote spawn is counted.
        let log = fixture("failing-build", "execution_log.bin");
        let a = analyze(store.as_ref(), &id, Some(&log)).unwrap();
        assert_eq!(a.kpis.process_mix.as_ref().unwrap().remote_execution, 1);
        assert_eq!(a.kpis.signals.failed_remote_spawns, Some(1));
        assert_eq!(a.diagnosis.dominant_cause, proof_kpi::Cause::None);
        let lines = kpi_lines(&a.kpis);
        assert!(lines[0].contains("first cache hit: absent"), "{lines:?}");
        assert!(
            lines.iter().any(|l| l == "critical path: 440 ms"),
            "{lines:?}"
        );

        // A log that is not an execution log is refused with a reason.
        let err = analyze(
            store.as_ref(),
            &id,
            Some(&fixture("failing-build", "bep.bin")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot read the execution log"), "{err}");
    }
}
