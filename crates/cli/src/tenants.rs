//! `proof tenants hash-token | check`: the operator's side of the tenants
//! file (docs/tenants.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_server::tenants::tenancy::{hash_token, Tenants};

use crate::EXIT_OK;

#[derive(clap::Subcommand)]
pub enum TenantsCommand {
    /// Print the sha256 of a token, the form `tokens_sha256` stores. The
    /// token is read from standard input (one line), so it stays out of the
    /// shell history; `--token` takes it as an argument instead.
    HashToken {
        #[arg(long)]
        token: Option<String>,
    },
    /// Check a tenants file and print its tenants (never a token).
    Check { file: PathBuf },
}

/// Reads and checks a tenants file.
pub fn load(path: &Path) -> Result<Tenants> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tenants file {}", path.display()))?;
    Tenants::parse(&text).with_context(|| format!("bad tenants file {}", path.display()))
}

pub fn run(cmd: TenantsCommand) -> Result<u8> {
    match cmd {
        TenantsCommand::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the token from standard input")?;
                    s.lines().next().unwrap_or("").to_string()
                }
            };
            let token = token.trim();
            if token.is_empty() {
                bail!("the token is empty; pipe it in (`echo -n TOKEN | proof tenants hash-token`) or pass --token");
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("the token contains whitespace or control characters; Bazel sends it as one header value word");
            }
            outln!("{}", hash_token(token));
            Ok(EXIT_OK)
        }
        TenantsCommand::Check { file } => {
            let t = load(&file)?;
            for t in t.tenants() {
                outln!(
                    "{}: lane {}, {} streams, {} invocations/hour, {} bytes/invocation",
                    t.id,
                    t.lane.as_str(),
                    t.quota.concurrent_streams,
                    t.quota.invocations_per_hour,
                    t.quota.bytes_per_invocation
                );
            }
            Ok(EXIT_OK)
        }
    }
}
