//! Issue 20, finding 5: an executor that pages forever (a new token and a
//! full page every time) cannot drive the server's memory up. The whole
//! test process (fake executor included) must stay under 512 MiB resident
//! while the proof is signed, failing, with the reason. Alone in its test
//! binary so that the peak resident size (VmHWM) is this test's.

use proof_testkit::executor as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_artifact::{Policy, SigningKey};
use proof_executor::{Budget, BuildGrid, Retry};
use proof_server::proofs::{LedgerConfig, ProofWriter};
use proof_store::{AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store};
use support::{FakeExecutor, Mode};

const ID: &str = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
const LIMIT_KIB: u64 = 512 * 1024;

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_executor_keeps_the_server_under_512_mib() {
    // A watchdog: past the limit the test fails at once instead of
    // exhausting the machine (as the unbounded code did).
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let rss = status_kib("VmRSS:");
                if rss > LIMIT_KIB {
                    eprintln!("resident size {rss} KiB exceeds {LIMIT_KIB} KiB");
                    std::process::exit(101);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Pages of 2000 operations of 4 KiB each: 8 MiB a page, forever.
    let fake = FakeExecutor::new(Mode::Endless {
        ops: 2000,
        pad: 4096,
    });
    let ep = support::serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(&dir.path().join("store")).unwrap();
    store
        .open_invocation(&InvocationMeta {
            invocation_id: ID.into(),
            build_id: None,
            source: InvocationSource::Bes,
            tenant: None,
            instance: None,
            created_at_ms: 1,
        })
        .unwrap();
    let events = support::fixture_events();
    let recs = JournalRecord::bep_events(events.iter().map(|e| Bytes::copy_from_slice(e)));
    let flags = AppendFlags {
        saw_build_finished: true,
        saw_last_message: true,
        saw_stream_finished: true,
    };
    store.append(ID, &recs, flags).unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let writer = ProofWriter {
        key: key.clone(),
        dir: dir.path().to_path_buf(),
        executor: Some(LedgerConfig {
            ledger: Arc::new(BuildGrid::new(&ep).unwrap()),
            instance_names: vec![String::new()],
            endpoint_aliases: vec!["grpc://127.0.0.1:50051".into()],
            retry: Retry::default(),
            // The server's defaults.
            budget: Budget::default(),
        }),
        metrics: None,
        vsa: None,
        log: None,
    };
    let t = Instant::now();
    let out = tokio::task::block_in_place(|| writer.sign(&store, ID)).unwrap();
    let took = t.elapsed();
    let report = proof_artifact::verify(
        std::fs::File::open(&out.path).unwrap(),
        &[key.verifying_key()],
        &Policy::default(),
    )
    .unwrap();
    done.store(true, Ordering::SeqCst);
    watch.join().unwrap();
    let peak = status_kib("VmHWM:");
    eprintln!(
        "signed in {took:?}; artifact {} bytes; peak resident size {} MiB",
        std::fs::metadata(&out.path).unwrap().len(),
        peak / 1024
    );
    assert!(peak < LIMIT_KIB, "peak resident size {peak} KiB");
    let c = report
        .checks
        .iter()
        .find(|c| c.name == "executor_attested")
        .unwrap();
    assert!(
        !c.ok && c.detail.contains("limit of 67108864 bytes per query"),
        "{}",
        c.detail
    );
    assert!(report.checks.iter().any(|c| c.name == "rederived" && c.ok));
}
