//! Retention (`proof gc`, `proof serve --retention`): removes the journals of finalized
//! invocations older than a limit and keeps a tombstone of each
//! ([`Store::remove_journal`]). Never touches an open or unfinalized invocation, one whose
//! proof is still being signed, or one the caller asked to keep (the invocations whose
//! proofs back a class of the eligibility manifest).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use proof_store::{ListCursor, ListFilter, Store, StoreError};
use serde::Serialize;

use crate::proofs::pending_dir;

/// What one gc run does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Remove journals of invocations received (`created_at_ms`) longer ago than this.
    pub older_than: Duration,
    /// Count what would be removed, remove nothing.
    pub dry_run: bool,
    /// Invocation ids never to remove (the manifest's proofs).
    pub keep: HashSet<String>,
    /// The proofs directory: a proof still pending there (`.pending/ID`) keeps its
    /// journal, and an existing `ID.proof.tar` is named in the tombstone.
    pub proofs_dir: Option<PathBuf>,
    /// "Now", in Unix milliseconds.
    pub now_ms: i64,
}

/// What a gc run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Invocations older than the limit that were looked at.
    pub examined: u64,
    /// Journals removed (would be removed, with `dry_run`).
    pub removed: u64,
    /// Bytes of journal freed (would be freed).
    pub freed_bytes: u64,
    /// Kept: not finalized (open, or never finished).
    pub kept_open: u64,
    /// Kept: its proof backs a class of the manifest.
    pub kept_manifest: u64,
    /// Kept: its proof is still waiting to be signed.
    pub kept_proof_pending: u64,
    /// Kept: another process held its lock (finalizing it); the next run retries.
    pub kept_busy: u64,
    /// Tombstones already.
    pub already_removed: u64,
    /// The ids removed (would be removed).
    pub removed_ids: Vec<String>,
}

/// Runs retention over `store`; `progress` is called after every page of invocations.
pub fn gc(
    store: &dyn Store,
    opts: &GcOptions,
    progress: &mut dyn FnMut(&GcReport),
) -> Result<GcReport, StoreError> {
    let cutoff = opts
        .now_ms
        .saturating_sub(opts.older_than.as_millis().min(i64::MAX as u128) as i64);
    let mut rep = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    // Newest first, strictly older than the cutoff.
    let older = ListFilter {
        limit: 1000,
        cursor: Some(ListCursor {
            created_at_ms: cutoff,
            invocation_id: String::new(),
        }),
        ..ListFilter::default()
    };
    proof_store::for_each_page(store, &older, |page| {
        for rec in page {
            let id = rec.meta.invocation_id.as_str();
            rep.examined += 1;
            if rec.journal_removed.is_some() {
                rep.already_removed += 1;
                continue;
            }
            if !rec.state.finalized {
                rep.kept_open += 1;
                continue;
            }
            if opts.keep.contains(id) {
                rep.kept_manifest += 1;
                continue;
            }
            if proof_pending(opts, id) {
                rep.kept_proof_pending += 1;
                continue;
            }
            if opts.dry_run {
                rep.removed += 1;
                rep.freed_bytes += rec.state.journal_bytes;
                rep.removed_ids.push(id.to_string());
                continue;
            }
            let mut freed = None;
            let got = store.exclusive(id, &mut || {
                // Re-checked under the lock: finalization and the pending marker are
                // written under it.
                match store.state(id)? {
                    Some(st) if st.finalized => {}
                    _ => return Ok(()),
                }
                if proof_pending(opts, id) {
                    return Ok(());
                }
                let proof = opts
                    .proofs_dir
                    .as_ref()
                    .map(|d| d.join(format!("{id}.proof.tar")))
                    .filter(|p| p.is_file())
                    .map(|p| p.display().to_string());
                freed = Some(store.remove_journal(id, proof.as_deref(), opts.now_ms)?);
                Ok(())
            })?;
            match freed {
                Some(n) => {
                    rep.removed += 1;
                    rep.freed_bytes += n;
                    rep.removed_ids.push(id.to_string());
                    tracing::info!(invocation = %id, freed_bytes = n, "retention removed the journal");
                }
                None if !got => rep.kept_busy += 1,
                None => rep.kept_proof_pending += 1,
            }
        }
        progress(&rep);
        Ok(())
    })?;
    Ok(rep)
}

fn proof_pending(opts: &GcOptions, id: &str) -> bool {
    opts.proofs_dir
        .as_ref()
        .is_some_and(|d| pending_dir(d).join(id).exists())
}
