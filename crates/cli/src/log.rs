//! `proof log inclusion | consistency | monitor`: the transparency log of
//! signed proofs, read from a server (`--url`, its `/log/` routes) or from
//! a directory store (`--store`, `STORE/tlog`), verified against the
//! server's public key. Format: docs/proof-format.md §9.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_tlog::client::{self, ClientError, Fetch};

use crate::{EXIT_FAILED, EXIT_OK};

#[derive(clap::Args, Clone)]
pub struct Source {
    /// The server's HTTP address (http://HOST:PORT, `proof serve --http`).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "store",
        required_unless_present = "store"
    )]
    url: Option<String>,
    /// A directory store whose server keeps the log (STORE/tlog).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The server's public key (SPKI PEM): checkpoints must be signed by it.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum LogCommand {
    /// Prove that an artifact's statement is in the log: leaf_index,
    /// tree_size, root_hash, hashes (the audit path) and checkpoint.
    Inclusion {
        artifact: PathBuf,
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        json: bool,
    },
    /// Prove that the log only grew since an old checkpoint (exit 1 if not).
    Consistency {
        /// A checkpoint saved earlier (the signed note's text).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        source: Source,
        #[arg(long)]
        json: bool,
    },
    /// Check the log against the last checkpoint remembered in --state and
    /// remember the new one; exit 1 on a fork or rewrite (state kept).
    Monitor {
        #[command(flatten)]
        source: Source,
        /// Where the last verified checkpoint is kept.
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
    },
}

struct Http(String);

impl Fetch for Http {
    fn checkpoint(&self) -> Result<Vec<u8>, String> {
        get(&format!("{}/log/checkpoint", self.0))
    }
    fn tile(&self, path: &str) -> Result<Vec<u8>, String> {
        get(&format!("{}/log/{path}", self.0))
    }
}

fn get(url: &str) -> Result<Vec<u8>, String> {
    let mut resp = ureq::get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    resp.body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| format!("GET {url}: {e}"))
}

struct StoreDir {
    dir: PathBuf,
    log: proof_tlog::FileLog,
}

impl Fetch for StoreDir {
    fn checkpoint(&self) -> Result<Vec<u8>, String> {
        let p = self.dir.join("checkpoint");
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    }
    fn tile(&self, path: &str) -> Result<Vec<u8>, String> {
        self.log
            .with_tree(|t| t.tile(path, t.size()))
            .ok_or_else(|| format!("no tile {path} in {}", self.dir.display()))
    }
}

fn fetcher(s: &Source) -> Result<Box<dyn Fetch>> {
    match (&s.url, &s.store) {
        (Some(url), _) => {
            if !url.starts_with("http://") {
                bail!("--url {url}: only http:// is supported (the server's --http address); behind TLS, fetch /log/checkpoint with curl and use --store or a local proxy");
            }
            Ok(Box::new(Http(url.trim_end_matches('/').to_string())))
        }
        (None, Some(store)) => {
            let dir = store.join("tlog");
            let log = proof_tlog::FileLog::read(&dir)?;
            Ok(Box::new(StoreDir { dir, log }))
        }
        (None, None) => bail!("say where the log is: --url http://HOST:PORT or --store DIR"),
    }
}

fn statement_of(artifact: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(artifact)
        .with_context(|| format!("cannot open {}", artifact.display()))?;
    proof_artifact::vsa::read_statement(std::io::BufReader::new(f)).with_context(|| {
        format!(
            "{} does not start with a statement.dsse.json member: not a proof artifact",
            artifact.display()
        )
    })
}

pub fn run(cmd: LogCommand) -> Result<u8> {
    match cmd {
        LogCommand::Inclusion {
            artifact,
            source,
            json,
        } => {
            let keys = crate::signing::load_verifying_keys(&source.keys)?;
            let statement = statement_of(&artifact)?;
            let fetch = fetcher(&source)?;
            match client::prove_inclusion(fetch.as_ref(), &keys, &statement) {
                Ok(inc) => {
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&inc)?);
                    } else {
                        outln!(
                            "{}: leaf {} of {} (root {})",
                            artifact.display(),
                            inc.leaf_index,
                            inc.tree_size,
                            inc.root_hash
                        );
                    }
                    Ok(EXIT_OK)
                }
                Err(e @ (ClientError::NotLogged { .. } | ClientError::Tiles(_))) => {
                    outln!("{}: FAIL {e}", artifact.display());
                    Ok(EXIT_FAILED)
                }
                Err(e) => Err(e.into()),
            }
        }
        LogCommand::Consistency { from, source, json } => {
            let keys = crate::signing::load_verifying_keys(&source.keys)?;
            let old =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            let fetch = fetcher(&source)?;
            consistency(fetch.as_ref(), &keys, &old, json).map(|(code, _)| code)
        }
        LogCommand::Monitor { source, state } => {
            let keys = crate::signing::load_verifying_keys(&source.keys)?;
            let fetch = fetcher(&source)?;
            let (code, note) = match std::fs::read(&state) {
                Ok(old) => consistency(fetch.as_ref(), &keys, &old, false)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let (note, head) = client::current(fetch.as_ref(), &keys, None)?;
                    outln!(
                        "first run: remembering {} at size {} (root {})",
                        head.origin,
                        head.size,
                        client::hex_hash(&head.root)
                    );
                    (EXIT_OK, Some(note))
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", state.display()))
                }
            };
            if let Some(note) = note {
                proof_tlog::write_atomic(&state, note.as_bytes())
                    .with_context(|| format!("cannot write {}", state.display()))?;
            }
            Ok(code)
        }
    }
}

/// Checks consistency from `old`; prints the outcome. Returns the exit code
/// and, when consistent, the new checkpoint.
fn consistency(
    fetch: &dyn Fetch,
    keys: &[proof_artifact::VerifyingKey],
    old: &[u8],
    json: bool,
) -> Result<(u8, Option<String>)> {
    match client::check_consistency(fetch, keys, old) {
        Ok((o, n, note)) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": true, "origin": n.origin, "old_size": o.size, "old_root": client::hex_hash(&o.root), "tree_size": n.size, "root_hash": client::hex_hash(&n.root), "checkpoint": note})
                );
            } else {
                outln!(
                    "consistent: {} grew from {} to {} leaves (root {})",
                    n.origin,
                    o.size,
                    n.size,
                    client::hex_hash(&n.root)
                );
            }
            Ok((EXIT_OK, Some(note)))
        }
        Err(e @ ClientError::Inconsistent { .. }) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else {
                outln!("FORK OR REWRITE: {e}");
            }
            Ok((EXIT_FAILED, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// The `logged` check of `proof verify --require-log`: the inclusion
/// sidecar beside the artifact proves its statement is in a tree whose
/// checkpoint a trusted key signed.
pub fn logged_check(
    artifact: &Path,
    keys: &[proof_artifact::VerifyingKey],
    earlier_ok: bool,
) -> proof_artifact::Check {
    let fail = |d: String| proof_artifact::Check::new("logged", false, d);
    if !earlier_ok {
        return fail("not checked: an earlier check failed".into());
    }
    let side = proof_server::proofs::tlog_sidecar(artifact);
    let bytes = match std::fs::read(&side) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!(
                "no inclusion proof {}: this proof was never logged (or its sidecar was not copied with it; `proof log inclusion ARTIFACT --url URL --key PUB --json > {}` fetches one)",
                side.display(),
                side.display()
            ))
        }
        Err(e) => return fail(format!("cannot read {}: {e}", side.display())),
    };
    let Ok(statement) = statement_of(artifact) else {
        return fail("the artifact has no statement to look up".into());
    };
    match proof_tlog::verify_sidecar(&statement, &bytes, keys, None) {
        Ok(head) => proof_artifact::Check::new(
            "logged",
            true,
            format!(
                "leaf of {} at tree size {} (checkpoint signed by a trusted key)",
                head.origin, head.size
            ),
        ),
        Err(e) => fail(e),
    }
}
