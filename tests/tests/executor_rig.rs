//! The executor ledger against a real BuildGrid (the rig's venv, its version):
//! a BuildGrid of this test's own, on another loopback port with its own
//! state, configured with `max-list-operations-page-size: 3` (issue 25),
//! and the shared rig for read-only questions (issue 20, finding 11):
//! - page_size 1000 (the adapter's old request) is refused there; the
//!   adapter's page_size 0 gets the executor's own maximum, over several
//!   pages, every operation of the invocation;
//! - the `invocation_id=` filter matches exactly: never the operations of
//!   another invocation, not even one whose id extends it;
//! - an unknown filter key is refused (INVALID_ARGUMENT), not ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proof_e2e::{repo_root, rig};
use proof_executor::{Budget, BuildGrid, ExecutorLedger, LedgerQuery};
use proof_proto::ledger::{ledger_record, LedgerRecord};
use proof_proto::longrunning::operations_client::OperationsClient;
use proof_proto::longrunning::ListOperationsRequest;
use prost::Message;

fn venv() -> PathBuf {
    let dir = std::env::var("RIG_DIR").unwrap_or_else(|_| "/tmp/rbe-proof-rig".into());
    PathBuf::from(dir).join("venv/bin")
}

/// A BuildGrid server of this test's own; its process group is ended on drop.
struct OwnBuildGrid {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for OwnBuildGrid {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rig_dir() -> PathBuf {
    PathBuf::from(std::env::var("RIG_DIR").unwrap_or_else(|_| "/tmp/rbe-proof-rig".into()))
}

/// A fresh scheduler database for a BuildGrid of the rig's version: 0.2.x keeps it
/// in SQLite; later versions need PostgreSQL, so a new database on the rig's own
/// cluster (`$RIG_DIR/pg`, started by start-rig.sh), its schema from `bgd migrate`.
/// Returns the config template and the connection string.
fn scheduler_db(state: &std::path::Path, tag: &str) -> (&'static str, String) {
    let version = std::env::var("RIG_BUILDGRID_VERSION").unwrap_or_default();
    if version.starts_with("0.2.") {
        let db = state.join("jobs.sqlite3");
        let schema = Command::new(venv().join("python"))
            .args([
                "-c",
                "import sys\nfrom sqlalchemy import create_engine\nfrom buildgrid.server.sql.models import Base\nBase.metadata.create_all(create_engine('sqlite:///' + sys.argv[1]))",
            ])
            .arg(&db)
            .status()
            .unwrap();
        assert!(schema.success(), "cannot create BuildGrid's job database");
        return (
            "tests/rig/buildgrid-0.2.yml.in",
            format!("sqlite:///{}", db.display()),
        );
    }
    let port = std::fs::read_to_string(rig_dir().join("pg/port"))
        .expect("the rig's PostgreSQL cluster ($RIG_DIR/pg) is not there: start the rig with tests/rig/start-rig.sh");
    let port = port.trim();
    let created = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            port,
        ])
        .args(["-U", "proof", "-d", "postgres", "-c"])
        .arg(format!("CREATE DATABASE {tag}"))
        .status()
        .unwrap();
    assert!(
        created.success(),
        "cannot create database {tag} on the rig's PostgreSQL"
    );
    let url = format!("postgresql+psycopg2://proof@127.0.0.1:{port}/{tag}");
    let migrated = Command::new(venv().join("bgd"))
        .args(["migrate", "apply", &url])
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "bgd migrate apply {url}: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    ("tests/rig/buildgrid.yml.in", url)
}

fn start_buildgrid(max_page_size: u32) -> OwnBuildGrid {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (template, db_url) = scheduler_db(&state, &unique("bg_pages").replace('-', "_"));
    let raw = std::fs::read_to_string(repo_root().join(template)).unwrap();
    let raw = if raw.contains("@MAX_PAGE_SIZE@") {
        raw
    } else {
        // The 0.2 template has no page size of its own.
        raw.replace(
            "        operation-stream-keepalive-timeout: 30\n",
            "        operation-stream-keepalive-timeout: 30\n        max-list-operations-page-size: @MAX_PAGE_SIZE@\n",
        )
    };
    let config = raw
        .replace("@LISTEN@", &addr)
        .replace("@STATE_DIR@", state.to_str().unwrap())
        .replace("@DB_URL@", &db_url)
        .replace("@MAX_PAGE_SIZE@", &max_page_size.to_string());
    assert_eq!(
        config
            .matches(&format!("max-list-operations-page-size: {max_page_size}"))
            .count(),
        2,
        "{template} sets the page size of both instances"
    );
    let yml = state.join("buildgrid.yml");
    std::fs::write(&yml, config).unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(venv().join("bgd"))
        .args(["server", "start", "-v"])
        .arg(&yml)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    OwnBuildGrid {
        child,
        addr,
        _dir: dir,
    }
}

async fn list(
    addr: &str,
    filter: &str,
    page_size: i32,
) -> Result<proof_proto::longrunning::ListOperationsResponse, tonic::Status> {
    let mut c = OperationsClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    c.list_operations(ListOperationsRequest {
        name: String::new(),
        filter: filter.into(),
        page_size,
        page_token: String::new(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The operations' own ids (BuildGrid names an operation after the instance it
/// was asked under: `main/UUID`, `/UUID` or `UUID`).
fn op_id(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

fn submit(addr: &str, invocation: &str, count: usize, salt: &str) -> BTreeSet<String> {
    submit_under(addr, "", invocation, count, salt)
}

fn submit_under(
    addr: &str,
    instance: &str,
    invocation: &str,
    count: usize,
    salt: &str,
) -> BTreeSet<String> {
    let out = Command::new(venv().join("python"))
        .arg(repo_root().join("tests/rig/submit-ops.py"))
        .args([addr, instance, invocation, &count.to_string(), salt])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "submit-ops.py failed");
    let names: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(op_id)
        .collect();
    assert_eq!(names.len(), count);
    names
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{nanos:x}")
}

#[test]
fn buildgrid_pages_at_its_own_maximum_and_filters_invocations_exactly() {
    let rig = rig();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bg = start_buildgrid(3);
    let t = Instant::now();
    while rt.block_on(list(&bg.addr, "", 0)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "BuildGrid did not answer on {}",
            bg.addr
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let inv = unique("inv");
    let mine = submit(&bg.addr, &inv, 7, "a");
    // An id that extends ours, and an unrelated one.
    let longer = submit(&bg.addr, &format!("{inv}0"), 2, "b");
    let other = submit(&bg.addr, &unique("other"), 2, "c");
    let filter = format!("invocation_id={inv}");

    // The adapter's old request: refused, naming the maximum (issue 25).
    let e = rt.block_on(list(&bg.addr, &filter, 1000)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "The maximum page size is 3.");

    // The adapter now: every operation of the invocation, 3 a page.
    let q = LedgerQuery {
        invocation_id: inv.clone(),
        instance_names: vec![String::new()],
        endpoint_aliases: Vec::new(),
        budget: Budget::default(),
    };
    let ledger = BuildGrid::new(&format!("grpc://{}", bg.addr))
        .unwrap()
        .fetch(&q, Instant::now() + Duration::from_secs(60))
        .unwrap();
    let (pages, seen) = ledger_operations(&ledger, 3);
    assert_eq!(pages, 3, "7 operations at 3 a page");
    assert_eq!(seen, mine, "exactly the invocation's operations");
    assert!(seen.is_disjoint(&longer) && seen.is_disjoint(&other));

    // Instance pools (issue 25): "" and "main" share one scheduler
    // (`instance-pools`), so asking under "" lists what was submitted under
    // "main" too. Tenants whose instances share a pool share this answer
    // (docs/proof-format.md §6).
    let pooled = unique("pool");
    let under_main = submit_under(&bg.addr, "main", &pooled, 2, "d");
    let q = LedgerQuery {
        invocation_id: pooled,
        instance_names: vec![String::new()],
        endpoint_aliases: Vec::new(),
        budget: Budget::default(),
    };
    let ledger = BuildGrid::new(&format!("grpc://{}", bg.addr))
        .unwrap()
        .fetch(&q, Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(ledger_operations(&ledger, 3).1, under_main);

    // A prefix of an id matches nothing; an unknown key is refused.
    let prefix = &inv[..inv.len() - 1];
    let r = rt
        .block_on(list(&bg.addr, &format!("invocation_id={prefix}"), 0))
        .unwrap();
    assert!(r.operations.is_empty(), "{:?}", r.operations);
    for addr in [
        bg.addr.as_str(),
        rig.remote_executor.trim_start_matches("grpc://"),
    ] {
        let e = rt
            .block_on(list(addr, &format!("no_such_key={inv}"), 0))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{addr}: {e:?}");
    }
    // The shared rig knows nothing of a fresh id (read-only there).
    let r = rt
        .block_on(list(
            rig.remote_executor.trim_start_matches("grpc://"),
            &filter,
            0,
        ))
        .unwrap();
    assert!(r.operations.is_empty());
}

/// The pages of a ledger and the ids of the operations in them (each page at
/// most `max` operations; no page refused, nothing truncated).
fn ledger_operations(ledger: &[u8], max: usize) -> (usize, BTreeSet<String>) {
    let mut pages = 0;
    let mut seen = BTreeSet::new();
    for rec in proof_stream::delimited::split_delimited(ledger, usize::MAX).unwrap() {
        match LedgerRecord::decode(rec).unwrap().record {
            Some(ledger_record::Record::Page(p)) => {
                assert_eq!(p.status_code, 0, "{}", p.status_message);
                let ops = p.response.unwrap().operations;
                assert!(ops.len() <= max, "{} operations in one page", ops.len());
                pages += 1;
                seen.extend(ops.iter().map(|o| op_id(&o.name)));
            }
            Some(ledger_record::Record::Truncated(t)) => panic!("truncated: {}", t.reason),
            _ => {}
        }
    }
    (pages, seen)
}
