//! `proof promote`, `proof report` and `proof verify --manifest` (the PR
//! check): thin wrappers around proof-manifest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_artifact::Policy;
use proof_manifest::{
    check_manifest, io::promote_file, parse_manifest, render, scan_proofs, ArtifactFacts,
    CheckOptions, Mode, PromoteError, PromoteRequest,
};

use crate::signing::load_verifying_keys;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE};

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The proof artifact (INVOCATION_ID.proof.tar).
    artifact: PathBuf,
    /// The manifest (config/rbe-target-eligibility.json); edited in place.
    #[arg(long)]
    manifest: PathBuf,
    /// The target class to promote.
    #[arg(long)]
    class: String,
    /// Trusted public key(s) (SPKI PEM); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Target mode: executor-backed (default, or the class's mode if higher) or default.
    #[arg(long)]
    mode: Option<Mode>,
    /// Where the artifact is kept, as recorded in the manifest (a URL, or a
    /// path relative to the --proofs directory of the PR check).
    /// Default: the artifact's file name.
    #[arg(long)]
    location: Option<String>,
    /// The tenants file of the server that signed the artifact: the tenant
    /// that submitted the build must own the class's repo (docs/tenants.md).
    #[arg(long, value_name = "FILE")]
    tenants: Option<PathBuf>,
}

pub fn promote(a: PromoteArgs) -> Result<u8> {
    let keys = load_verifying_keys(&a.keys)?;
    let report = match proof_artifact::verify_path(&a.artifact, &keys, &Policy::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("proof: {e}");
            return Ok(EXIT_UNUSABLE);
        }
    };
    let name = a.artifact.display().to_string();
    let facts = ArtifactFacts::from_report(name, &report, &keys);
    let location = a.location.clone().unwrap_or_else(|| {
        a.artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let req = PromoteRequest {
        class: a.class.clone(),
        mode: a.mode,
        location,
        owners: match &a.tenants {
            Some(p) => Some(crate::tenants::load(p)?),
            None => None,
        },
    };
    match promote_file(&a.manifest, &facts, &req) {
        Ok(p) => {
            if p.changed {
                eprintln!(
                    "promoted {} to {} in {}; commit it with:",
                    a.class,
                    p.mode.as_str(),
                    a.manifest.display()
                );
            } else {
                eprintln!(
                    "{} already records this artifact at {}; the manifest is unchanged",
                    a.class,
                    p.mode.as_str()
                );
            }
            out!("{}", p.commit_message);
            Ok(EXIT_OK)
        }
        Err(e @ (PromoteError::Io { .. } | PromoteError::Manifest(_))) => {
            eprintln!("proof: {e}");
            Ok(EXIT_UNUSABLE)
        }
        Err(e) => {
            eprintln!("proof: promotion refused: {e}");
            Ok(EXIT_FAILED)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    Md,
}

/// `proof verify --manifest FILE --proofs DIR --key PUB`.
pub fn verify_manifest(
    manifest: &Path,
    proofs: Option<&Path>,
    keys: &[PathBuf],
    max_age: Option<u64>,
    format: CheckFormat,
    tenants: Option<&Path>,
    base_manifest: Option<&Path>,
) -> Result<u8> {
    let Some(proofs) = proofs else {
        bail!(
            "--manifest needs --proofs DIR: the directory holding the manifest's proof artifacts"
        );
    };
    let keys = load_verifying_keys(keys)?;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read the manifest {}", manifest.display()))?;
    if !proofs.is_dir() {
        bail!("--proofs {} is not a directory", proofs.display());
    }
    let base_allow_unauthenticated = match base_manifest {
        None => None,
        Some(p) => {
            let base = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the base manifest {}", p.display()))?;
            let base = proof_manifest::parse_manifest(&base).map_err(|e| {
                anyhow::anyhow!(
                    "the base manifest {} does not parse: {}; pass the manifest of the PR's base revision (git show BASE:PATH)",
                    p.display(),
                    e.problems().join("; ")
                )
            })?;
            Some(base.allow_unauthenticated_proofs)
        }
    };
    let dir = scan_proofs(proofs, &keys)
        .with_context(|| format!("cannot read the proofs directory {}", proofs.display()))?;
    let report = check_manifest(
        &text,
        &dir,
        &CheckOptions {
            max_age_days: max_age,
            now: time::OffsetDateTime::now_utc(),
            owners: match tenants {
                Some(p) => Some(crate::tenants::load(p)?),
                None => None,
            },
            base_allow_unauthenticated,
        },
    );
    let name = manifest.display().to_string();
    match format {
        CheckFormat::Text => out!("{}", render::check_text(&report, &name)),
        CheckFormat::Md => out!("{}", render::check_md(&report, &name)),
        CheckFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.ok { EXIT_OK } else { EXIT_FAILED })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The manifest (config/rbe-target-eligibility.json).
    #[arg(long)]
    manifest: PathBuf,
    /// Verify the recorded proofs against the artifacts in this directory.
    #[arg(long)]
    proofs: Option<PathBuf>,
    /// Trusted public key(s), needed with --proofs.
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    format: ReportFormat,
    /// Signed `proof probe-ac --out` results (verified with --key): the E2
    /// section shows each lane's write posture as probed; repeatable.
    #[arg(long = "ac-probe", value_name = "FILE")]
    ac_probes: Vec<PathBuf>,
    /// The last `proof audit --format json` output: the E2 section shows
    /// its figures.
    #[arg(long = "ac-audit", value_name = "FILE")]
    ac_audit: Option<PathBuf>,
}

pub fn report(a: ReportArgs) -> Result<u8> {
    let text = std::fs::read_to_string(&a.manifest)
        .with_context(|| format!("cannot read the manifest {}", a.manifest.display()))?;
    let m = parse_manifest(&text)?;
    let dir = match &a.proofs {
        Some(p) => {
            if a.keys.is_empty() {
                bail!("--proofs needs --key PUBLIC to verify the artifacts");
            }
            let keys = load_verifying_keys(&a.keys)?;
            Some(
                scan_proofs(p, &keys)
                    .with_context(|| format!("cannot read the proofs directory {}", p.display()))?,
            )
        }
        None => None,
    };
    let r = proof_manifest::build_report(&m, dir.as_ref());
    let e2 = if a.ac_probes.is_empty() && a.ac_audit.is_none() {
        None
    } else {
        if !a.ac_probes.is_empty() && a.keys.is_empty() {
            bail!("--ac-probe needs --key PUBLIC to verify the signed probe results");
        }
        let keys = load_verifying_keys(&a.keys)?;
        Some(crate::acaudit::e2_section(
            &a.ac_probes,
            a.ac_audit.as_deref(),
            &keys,
        )?)
    };
    match a.format {
        ReportFormat::Md => {
            out!("{}", render::report_md(&r));
            if let Some(e2) = &e2 {
                out!("{}", proof_acaudit::e2::render_md(e2));
            }
        }
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&r)?;
            if let (Some(e2), Some(o)) = (&e2, v.as_object_mut()) {
                o.insert("e2".into(), serde_json::to_value(e2)?);
            }
            outln!("{}", serde_json::to_string_pretty(&v)?)
        }
    }
    Ok(EXIT_OK)
}
