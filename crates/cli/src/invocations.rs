//! `proof ingest | list | show | export`.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use std::sync::Arc;

use proof_store::{FsStore, InvocationRecord, ListFilter, RecordKind, Store};
use serde_json::{json, Value};

use crate::EXIT_OK;

/// Opens the store `--store` names: a `postgres://USER[:PASSWORD]@HOST:PORT/DB` URL is
/// the PostgreSQL store (docs/store.md), anything else the embedded store's directory.
pub fn open_store(spec: &Path) -> Result<Arc<dyn Store>> {
    if let Some(url) = spec.to_str().filter(|s| proof_store_pg::is_pg_url(s)) {
        let store = proof_store_pg::PgStore::connect(url).with_context(|| {
            format!(
                "cannot open the PostgreSQL store {}",
                proof_store_pg::redact(url)
            )
        })?;
        return Ok(Arc::new(store));
    }
    let store = FsStore::open(spec)
        .with_context(|| format!("cannot open the store at {}", spec.display()))?;
    let rep = store.recovery_report();
    if !rep.is_clean() {
        eprintln!("proof: store recovery: {rep:?}");
    }
    Ok(Arc::new(store))
}

/// `proof migrate`: brings a PostgreSQL store's schema up to date.
pub fn migrate(spec: &Path) -> Result<u8> {
    let Some(url) = spec.to_str().filter(|s| proof_store_pg::is_pg_url(s)) else {
        bail!(
            "{} is not a postgres:// URL; the embedded store needs no migration",
            spec.display()
        );
    };
    let (done, version) = proof_store_pg::PgStore::migrate_url(url).with_context(|| {
        format!(
            "cannot migrate the PostgreSQL store {}",
            proof_store_pg::redact(url)
        )
    })?;
    if done.is_empty() {
        println!("schema version {version}: up to date");
    } else {
        println!("schema version {version}: applied migration(s) {done:?}");
    }
    Ok(EXIT_OK)
}

/// `--store` as shown to people (a URL without its password).
pub fn store_display(spec: &Path) -> String {
    match spec.to_str().filter(|s| proof_store_pg::is_pg_url(s)) {
        Some(url) => proof_store_pg::redact(url),
        None => spec.display().to_string(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The JSON view of one invocation: the summary derived from its events,
/// completeness and where it came from.
pub fn record_json(store: &dyn Store, rec: &InvocationRecord) -> Result<Value> {
    let id = &rec.meta.invocation_id;
    let (summary, complete, reason) = match (&rec.summary, rec.state.finalized) {
        (Some(s), true) => (
            s.clone(),
            rec.state.complete,
            rec.state.incomplete_reason.clone(),
        ),
        _ => {
            // Still streaming (or never finished): derive it now.
            let (s, finished) = proof_ingest::summarize(store, id)?;
            let reason = proof_ingest::incomplete_reason(&s, rec.meta.source, finished)
                .map(|r| format!("{r} (the stream is still open or was abandoned)"));
            (
                serde_json::to_value(&s)?,
                false,
                reason.or(Some("not finalized".into())),
            )
        }
    };
    let v = json!({
        "invocation_id": summary.get("invocation_id").cloned().filter(|v| !v.is_null()).unwrap_or_else(|| json!(id)),
        "bazel_version": summary.get("bazel_version"),
        "command": summary.get("command"),
        "patterns": summary.get("patterns"),
        "exit_code": summary.get("exit_code"),
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "event_count": summary.get("event_count"),
        "complete": complete,
        "incomplete_reason": reason,
        "stream_sha256": summary.get("stream_sha256"),
        "source": rec.meta.source.as_str(),
        "build_id": rec.meta.build_id,
        "tenant": rec.meta.tenant,
        "instance": rec.meta.instance,
        "received_at_ms": rec.meta.created_at_ms,
        "lifecycle": rec.lifecycle,
    });
    Ok(v)
}

pub fn ingest(file: &Path, dir: &Path, json: bool) -> Result<u8> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let store = open_store(dir)?;
    let mut last_report = std::time::Instant::now();
    let (format, fin) = proof_ingest::ingest_file(
        store.as_ref(),
        BufReader::with_capacity(1 << 20, f),
        now_ms(),
        |p| {
            if last_report.elapsed().as_secs() >= 2 {
                last_report = std::time::Instant::now();
                eprintln!(
                    "proof: ingest: {} events, {} of {} bytes",
                    p.events, p.bytes, size
                );
            }
        },
    )
    .with_context(|| format!("cannot ingest {}", file.display()))?;
    let rec = store
        .get(&fin.invocation_id)?
        .context("the invocation vanished after ingest")?;
    if json {
        let mut v = record_json(store.as_ref(), &rec)?;
        v["format"] = json!(format);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "ingested {} ({:?}): {} events, {}",
            fin.invocation_id,
            format,
            fin.summary.event_count,
            if fin.complete {
                "complete".to_string()
            } else {
                format!("incomplete: {}", fin.reason.unwrap_or_default())
            }
        );
    }
    Ok(EXIT_OK)
}

pub fn list(dir: &Path, json: bool, limit: usize, tenant: Option<String>) -> Result<u8> {
    let store = open_store(dir)?;
    let recs = store.list(&ListFilter {
        limit,
        tenant,
        ..ListFilter::default()
    })?;
    if json {
        let v: Vec<Value> = recs
            .iter()
            .map(|r| record_json(store.as_ref(), r))
            .collect::<Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    if recs.is_empty() {
        println!("no invocations in {}", store_display(dir));
    }
    for r in &recs {
        let v = record_json(store.as_ref(), r)?;
        println!(
            "{}  {:<6} {:<5} {:>7} events  {:<10}  {}",
            r.meta.invocation_id,
            v["command"].as_str().unwrap_or("?"),
            r.meta.source.as_str(),
            v["event_count"],
            if v["complete"] == json!(true) {
                "complete"
            } else {
                "incomplete"
            },
            v["exit_code"]["name"].as_str().unwrap_or("-"),
        );
    }
    Ok(EXIT_OK)
}

pub fn show(dir: &Path, id: &str, json: bool, tenant: Option<&str>) -> Result<u8> {
    let store = open_store(dir)?;
    // Another tenant's invocation is reported exactly like a missing one.
    let found = store
        .get(id)?
        .filter(|r| tenant.is_none() || r.meta.tenant.as_deref() == tenant);
    let Some(rec) = found else {
        bail!(
            "no invocation {id} in {}; `proof list` shows what is stored",
            store_display(dir)
        );
    };
    let v = record_json(store.as_ref(), &rec)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, val) in v.as_object().into_iter().flatten() {
            if k != "lifecycle" {
                println!(
                    "{k:>18}: {}",
                    match val {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                );
            }
        }
    }
    Ok(EXIT_OK)
}

pub fn export(dir: &Path, id: &str, out: &Path) -> Result<u8> {
    let store = open_store(dir)?;
    if store.state(id)?.is_none() {
        bail!("no invocation {id} in {}", store_display(dir));
    }
    let mut buf = Vec::new();
    let mut w: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        ))
    };
    for rec in store.read(id)? {
        let rec = rec?;
        if rec.kind == RecordKind::BepEvent {
            buf.clear();
            proof_stream::delimited::write_delimited(&mut buf, &rec.payload);
            w.write_all(&buf)?;
        }
    }
    w.flush()?;
    Ok(EXIT_OK)
}
