//! `proof ingest | list | show | export`.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use std::sync::Arc;

use proof_store::{FsStore, InvocationRecord, ListFilter, RecordKind, Store, StoreError};
use serde_json::{json, Value};

use crate::EXIT_OK;

/// The `postgres://` URL `--store` names, if it names one.
fn pg_url(spec: &Path) -> Option<&str> {
    spec.to_str().filter(|s| proof_store_pg::is_pg_url(s))
}

/// Whether `--store` names a PostgreSQL database rather than a directory.
pub fn is_pg_store(spec: &Path) -> bool {
    pg_url(spec).is_some()
}

/// The PostgreSQL store: the same for writers and readers (the database serializes them).
fn open_pg(url: &str) -> Result<Arc<dyn Store>> {
    let store = proof_store_pg::PgStore::connect(url).with_context(|| {
        format!(
            "cannot open the PostgreSQL store {}",
            proof_store_pg::redact(url)
        )
    })?;
    Ok(Arc::new(store))
}

/// Opens the store `--store` names, for writing (`proof serve`, `proof ingest`; one writer
/// per directory): a `postgres://USER[:PASSWORD]@HOST:PORT/DB` URL is
/// the PostgreSQL store (docs/store.md), anything else the embedded store's directory.
pub fn open_store(spec: &Path) -> Result<Arc<dyn Store>> {
    if let Some(url) = pg_url(spec) {
        return open_pg(url);
    }
    let store = FsStore::open(spec)
        .with_context(|| format!("cannot open the store at {} for writing", spec.display()))?;
    let rep = store.recovery_report();
    if !rep.is_clean() {
        eprintln!("proof: store recovery: {rep:?}");
    }
    Ok(Arc::new(store))
}

/// `proof migrate`: brings a PostgreSQL store's schema up to date.
pub fn migrate(spec: &Path) -> Result<u8> {
    let Some(url) = pg_url(spec) else {
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
        outln!("schema version {version}: up to date");
    } else {
        outln!("schema version {version}: applied migration(s) {done:?}");
    }
    Ok(EXIT_OK)
}

/// `--store` as shown to people (a URL without its password).
pub fn store_display(spec: &Path) -> String {
    match pg_url(spec) {
        Some(url) => proof_store_pg::redact(url),
        None => spec.display().to_string(),
    }
}

/// Opens the store for reading (`list`, `show`, `export`, `explain`): works beside a
/// running `proof serve` and sees what it has acked; never writes or repairs. A
/// `postgres://` URL reads the shared database.
pub fn open_reader(spec: &Path) -> Result<Arc<dyn Store>> {
    if let Some(url) = pg_url(spec) {
        return open_pg(url);
    }
    let store = FsStore::open_read_only(spec).map_err(|e| match e {
        // Already names the directory and what to do.
        StoreError::NoStore { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot read the store at {}", spec.display())),
    })?;
    Ok(Arc::new(store))
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
    let mut v = v;
    if let Some(t) = &rec.journal_removed {
        // A tombstone: the events are gone, the outcome and the proof stay.
        v["journal"] = json!("journal removed by retention");
        v["journal_removed_at_ms"] = json!(t.at_ms);
        v["journal_freed_bytes"] = json!(t.freed_bytes);
        v["proof_file"] = json!(t.proof_file);
    }
    Ok(v)
}

/// Prints the fields of a JSON BEP file that did not fit the schema (their
/// events were kept without them) on stderr.
pub fn print_warnings(file: &Path, warnings: &[proof_stream::bepfile::ConversionWarning]) {
    for w in warnings {
        eprintln!("proof: warning: {}: {w}", file.display());
    }
}

pub fn ingest(file: &Path, dir: &Path, json: bool) -> Result<u8> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let store = open_store(dir).map_err(|e| {
        if matches!(e.downcast_ref(), Some(StoreError::Locked { .. })) {
            e.context(format!(
                "a running `proof serve` owns the store; send the file to it instead: \
                 proof replay {} --to grpc://ADDR",
                file.display()
            ))
        } else {
            e
        }
    })?;
    let mut last_report = std::time::Instant::now();
    let progress = |p: proof_ingest::Progress| {
        if last_report.elapsed().as_secs() >= 2 {
            last_report = std::time::Instant::now();
            eprintln!(
                "proof: ingest: {} events, {} of {} bytes",
                p.events, p.bytes, size
            );
        }
    };
    let (format, fin) = proof_ingest::ingest_file(
        store.as_ref(),
        BufReader::with_capacity(64 << 10, f),
        now_ms(),
        progress,
    )
    .with_context(|| format!("cannot ingest {}", file.display()))?;
    print_warnings(file, &fin.warnings);
    let rec = store
        .get(&fin.invocation_id)?
        .context("the invocation vanished after ingest")?;
    if json {
        let mut v = record_json(store.as_ref(), &rec)?;
        v["format"] = json!(format);
        v["warnings"] = json!(fin.warnings);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
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
    if pg_url(dir).is_none() && !dir.exists() {
        // Nothing was ever stored there: say so the way an empty store does.
        if json {
            outln!("[]");
        } else {
            outln!("no invocations in {} (no store there yet)", dir.display());
        }
        return Ok(EXIT_OK);
    }
    let store = open_reader(dir)?;
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
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    if recs.is_empty() {
        outln!("no invocations in {}", store_display(dir));
    }
    for r in &recs {
        let v = record_json(store.as_ref(), r)?;
        outln!(
            "{}  {:<6} {:<5} {:>7} events  {:<10}  {}{}",
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
            if r.journal_removed.is_some() {
                "  (journal removed by retention)"
            } else {
                ""
            },
        );
    }
    Ok(EXIT_OK)
}

pub fn show(dir: &Path, id: &str, json: bool, tenant: Option<&str>) -> Result<u8> {
    let store = open_reader(dir)?;
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
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, val) in v.as_object().into_iter().flatten() {
            if k != "lifecycle" {
                outln!(
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
    let store = open_reader(dir)?;
    if store.state(id)?.is_none() {
        bail!("no invocation {id} in {}", store_display(dir));
    }
    let mut buf = Vec::new();
    let mut w: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::BufWriter::new(crate::out::Stdout))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        ))
    };
    for rec in store.read(id)? {
        let rec = rec?;
        if crate::out::closed() {
            break; // `proof export ID -o - | head -c N`: the reader has gone.
        }
        if rec.kind == RecordKind::BepEvent {
            buf.clear();
            proof_stream::delimited::write_delimited(&mut buf, &rec.payload);
            w.write_all(&buf)?;
        }
    }
    w.flush()?;
    Ok(EXIT_OK)
}
