//! `proof`: rbe-proof's command line. Thin: parse arguments, call a crate,
//! print. Exit codes (one place): 0 success / every check passed, 1 a check
//! failed, 2 unusable input or a usage error.
//!
//! Standard output goes through `out!`/`outln!` (module `out`): a closed pipe
//! (`proof list | head`) ends output quietly instead of panicking.

#![deny(clippy::print_stdout)]

#[macro_use]
mod out;

mod acaudit;
mod explain;
mod invocations;
mod log;
mod manifest;
mod proofs;
mod retention;
mod serve;
mod signing;
mod tenants;
mod vsa;

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: a file import allocates and frees one buffer per event, and a server many
/// more; glibc's allocator spent several percent of an import in malloc and free, and
/// returned memory to the kernel only to fault it back in for the next batch.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Exit code when every check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code when a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for unusable input.
pub const EXIT_UNUSABLE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "proof",
    version,
    about = "Signed, verifiable proof that a Bazel build ran on a remote executor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StoreArg {
    /// Store: a directory (journals + SQLite index, created if missing) or
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB (shared by replicas; docs/store.md).
    #[arg(long, env = "PROOF_STORE", default_value = "proof-store")]
    store: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Build Event Service backend (point Bazel's --bes_backend at it).
    Serve(Box<serve::ServeArgs>),
    /// Import a --build_event_binary_file or --build_event_json_file (format detected).
    Ingest {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List stored invocations, newest first.
    List {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        json: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this tenant's invocations (docs/tenants.md).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one stored invocation.
    Show {
        invocation_id: String,
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        json: bool,
        /// Refuse (as not found) unless the invocation belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Write a stored invocation's events as a --build_event_binary_file.
    Export {
        invocation_id: String,
        #[command(flatten)]
        store: StoreArg,
        /// Output file ("-" for stdout).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Retention: remove the journals of old finalized invocations, keeping tombstones and proofs.
    Gc(retention::GcArgs),
    /// A consistent copy of a directory store, taken beside a running `proof serve`.
    Backup(retention::BackupArgs),
    /// Apply the PostgreSQL store's pending schema migrations (`proof serve` also does at start).
    Migrate {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Push a recorded BEP file to a BES backend the way Bazel does (with optional faults).
    Replay(serve::ReplayArgs),
    /// Generate an ed25519 signing key: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Record a signed proof artifact from a BEP file (and its execution log), offline.
    Record(proofs::RecordArgs),
    /// Verify proof artifacts: signature, digests, re-derived evidence, policy.
    Verify(proofs::VerifyArgs),
    /// The transparency log of signed proofs: inclusion, consistency, monitor.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Check a SLSA verification summary (ID.vsa.dsse.json): signature, result, levels.
    VerifyVsa(vsa::VerifyVsaArgs),
    /// Promote a target class in the RBE eligibility manifest with a verified proof artifact.
    Promote(manifest::PromoteArgs),
    /// Answer the platform's six RBE eligibility questions from the manifest (and artifacts).
    Report(manifest::ReportArgs),
    /// Explain an invocation: KPIs and the dominant cause of lost remote execution or speed.
    Explain(explain::ExplainArgs),
    /// Audit the executor's ActionCache behind executor-attested proofs (docs/ac-authority.md).
    Audit(acaudit::AuditArgs),
    /// Probe a lane's ActionCache write posture with a canary entry (docs/ac-authority.md).
    ProbeAc(acaudit::ProbeArgs),
    /// Tenants file helpers: hash a bearer token, check a file.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROOF_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve::serve(*a),
        Command::Ingest { file, store, json } => invocations::ingest(&file, &store.store, json),
        Command::List {
            store,
            json,
            limit,
            tenant,
        } => invocations::list(&store.store, json, limit, tenant),
        Command::Show {
            invocation_id,
            store,
            json,
            tenant,
        } => invocations::show(&store.store, &invocation_id, json, tenant.as_deref()),
        Command::Export {
            invocation_id,
            store,
            out,
        } => invocations::export(&store.store, &invocation_id, &out),
        Command::Gc(a) => retention::run(a),
        Command::Backup(a) => retention::backup(a),
        Command::Migrate { store } => invocations::migrate(&store.store),
        Command::Replay(a) => serve::replay(a),
        Command::Keygen { out } => proofs::keygen(&out),
        Command::Record(a) => proofs::record(a),
        Command::Verify(a) => proofs::verify(a),
        Command::VerifyVsa(a) => vsa::verify_vsa(a),
        Command::Log(c) => log::run(c),
        Command::Promote(a) => manifest::promote(a),
        Command::Report(a) => manifest::report(a),
        Command::Explain(a) => explain::explain(a),
        Command::Tenants(c) => tenants::run(c),
        Command::Audit(a) => acaudit::audit(a),
        Command::ProbeAc(a) => acaudit::probe(a),
    };
    out::flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("proof: error: {e:#}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}
