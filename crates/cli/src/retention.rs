//! `proof gc`: retention on either store (docs/operations.md).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use proof_server::retention::{gc, GcOptions, GcReport};
use proof_store::StoreError;

use crate::invocations::{is_pg_store, now_ms, open_store, store_display};
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct GcArgs {
    /// Remove the journals of finalized invocations received longer ago than this
    /// (e.g. 90d, 12h, 30m; 0s: every finalized one).
    #[arg(long = "older-than", value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    #[command(flatten)]
    pub store: crate::StoreArg,
    /// Show what would be removed and the bytes it would free; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep every invocation whose proof a class of this RBE eligibility manifest
    /// records (repeatable).
    #[arg(long = "keep-manifest")]
    pub keep_manifest: Vec<PathBuf>,
    /// The proofs directory of `proof serve` (default: STORE/proofs for a directory store):
    /// a proof still pending there keeps its journal, and the tombstone names the proof.
    #[arg(long)]
    pub proofs: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The invocation ids whose proofs the manifest records, in every class.
pub fn manifest_ids(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let m = proof_manifest::parse_manifest(&text)
        .with_context(|| format!("cannot parse the manifest {}", path.display()))?;
    Ok(m.classes
        .values()
        .flat_map(|c| c.proofs.iter().map(|p| p.invocation_id.clone()))
        .collect())
}

pub fn run(a: GcArgs) -> Result<u8> {
    let mut keep = HashSet::new();
    for m in &a.keep_manifest {
        keep.extend(manifest_ids(m)?);
    }
    let proofs = a
        .proofs
        .clone()
        .or_else(|| (!is_pg_store(&a.store.store)).then(|| a.store.store.join("proofs")));
    let store = open_store(&a.store.store).map_err(|e| {
        if matches!(e.downcast_ref(), Some(StoreError::Locked { .. })) {
            e.context(
                "a running `proof serve` owns this store: give it `--retention DURATION` \
                 instead, or stop it first",
            )
        } else {
            e
        }
    })?;
    let opts = GcOptions {
        older_than: a.older_than,
        dry_run: a.dry_run,
        keep,
        proofs_dir: proofs,
        now_ms: now_ms(),
    };
    let started = std::time::Instant::now();
    let rep = gc(store.as_ref(), &opts, &mut |r: &GcReport| {
        eprintln!(
            "proof: gc: {} examined, {} {}, {} bytes freed",
            r.examined,
            r.removed,
            if r.dry_run {
                "would be removed"
            } else {
                "removed"
            },
            r.freed_bytes
        );
    })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(EXIT_OK);
    }
    for id in &rep.removed_ids {
        outln!(
            "{} {id}",
            if rep.dry_run {
                "would remove"
            } else {
                "removed"
            }
        );
    }
    outln!(
        "{}: {} of {} invocations older than {} {}, {} bytes {}; kept {} open/unfinalized, {} in the manifest, {} with a proof pending, {} busy; {} already removed ({:.1}s)",
        store_display(&a.store.store),
        rep.removed,
        rep.examined,
        humantime::format_duration(a.older_than),
        if rep.dry_run { "would be removed" } else { "removed" },
        rep.freed_bytes,
        if rep.dry_run { "would be freed" } else { "freed" },
        rep.kept_open,
        rep.kept_manifest,
        rep.kept_proof_pending,
        rep.kept_busy,
        rep.already_removed,
        started.elapsed().as_secs_f64()
    );
    Ok(EXIT_OK)
}

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Where to write the copy: a new (or empty) directory.
    pub dest: PathBuf,
    #[command(flatten)]
    pub store: crate::StoreArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `proof backup DEST`: a consistent online copy of a directory store, beside a running
/// `proof serve` (docs/operations.md).
pub fn backup(a: BackupArgs) -> Result<u8> {
    if is_pg_store(&a.store.store) {
        anyhow::bail!(
            "{} is a PostgreSQL store: back it up with pg_dump (docs/operations.md, \"Backup and restore\"); `proof backup` copies directory stores",
            store_display(&a.store.store)
        );
    }
    let started = std::time::Instant::now();
    let store = proof_store::FsStore::open_read_only(&a.store.store)?;
    eprintln!(
        "proof: backup: copying {} to {} (a snapshot of the index, then each journal up to it)",
        a.store.store.display(),
        a.dest.display()
    );
    let rep = store.backup_to(&a.dest).with_context(|| {
        format!(
            "cannot back up {} to {}",
            a.store.store.display(),
            a.dest.display()
        )
    })?;
    drop(store);
    // The copy is a store whose recovery finds nothing to repair.
    let copy = proof_store::FsStore::open(&a.dest)
        .with_context(|| format!("the backup in {} does not open", a.dest.display()))?;
    let recovery = copy.recovery_report().clone();
    drop(copy);
    if !recovery.is_clean() {
        anyhow::bail!(
            "the backup in {} is not clean: its recovery repaired {recovery:?}; take it again",
            a.dest.display()
        );
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(EXIT_OK);
    }
    outln!(
        "backup of {} in {}: {} invocations ({} journals, {} bytes; {} tombstones), {} proof files, {} key files; verified (opens clean) in {:.1}s{}",
        a.store.store.display(),
        a.dest.display(),
        rep.invocations,
        rep.journals,
        rep.journal_bytes,
        rep.tombstones,
        rep.proof_files,
        rep.key_files,
        started.elapsed().as_secs_f64(),
        if rep.vanished.is_empty() {
            String::new()
        } else {
            format!(
                "; {} journal(s) deleted or removed meanwhile: {:?}",
                rep.vanished.len(),
                rep.vanished
            )
        }
    );
    Ok(EXIT_OK)
}
