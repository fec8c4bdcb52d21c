//! The executor ledger against a real BuildGrid (the rig's 0.2.53 venv):
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

fn start_buildgrid(max_page_size: u32) -> OwnBuildGrid {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = std::fs::read_to_string(repo_root().join("tests/rig/buildgrid.yml.in"))
        .unwrap()
        .replace("@LISTEN@", &addr)
        .replace("@STATE_DIR@", state.to_str().unwrap())
        .replace(
            "        operation-stream-keepalive-timeout: 30\n",
            &format!(
                "        operation-stream-keepalive-timeout: 30\n        max-list-operations-page-size: {max_page_size}\n"
            ),
        );
    assert_eq!(config.matches("max-list-operations-page-size").count(), 2);
    let yml = state.join("buildgrid.yml");
    std::fs::write(&yml, config).unwrap();
    let schema = Command::new(venv().join("python"))
        .args([
            "-c",
            "import sys\nfrom sqlalchemy import create_engine\nfrom buildgrid.server.sql.models import Base\nBase.metadata.create_all(create_engine('sqlite:///' + sys.argv[1]))",
        ])
        .arg(state.join("jobs.sqlite3"))
        .status()
        .unwrap();
    assert!(schema.success(), "cannot create BuildGrid's job database");
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

fn submit(addr: &str, invocation: &str, count: usize, salt: &str) -> BTreeSet<String> {
    let out = Command::new(venv().join("python"))
        .arg(repo_root().join("tests/rig/submit-ops.py"))
        .args([addr, "", invocation, &count.to_string(), salt])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "submit-ops.py failed");
    let names: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('/').to_string())
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
    let mut pages = 0;
    let mut seen = BTreeSet::new();
    for rec in proof_stream::delimited::split_delimited(&ledger, usize::MAX).unwrap() {
        match LedgerRecord::decode(rec).unwrap().record {
            Some(ledger_record::Record::Page(p)) => {
                assert_eq!(p.status_code, 0, "{}", p.status_message);
                let ops = p.response.unwrap().operations;
                assert!(ops.len() <= 3, "{} operations in one page", ops.len());
                pages += 1;
                seen.extend(
                    ops.into_iter()
                        .map(|o| o.name.trim_start_matches('/').to_string()),
                );
            }
            Some(ledger_record::Record::Truncated(t)) => panic!("truncated: {}", t.reason),
            _ => {}
        }
    }
    assert_eq!(pages, 3, "7 operations at 3 a page");
    assert_eq!(seen, mine, "exactly the invocation's operations");
    assert!(seen.is_disjoint(&longer) && seen.is_disjoint(&other));

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
