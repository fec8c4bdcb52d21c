//! kill -9 of a writer at many random points: every acked record survives.
//!
//! Its own test binary on purpose: the test spawns writer processes, and a
//! process spawned while another test of the same binary holds a store open
//! inherits that store's `writer.lock` descriptor until it execs, which makes
//! that test's reopen see the store as locked.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use proof_store::{AppendFlags, FsStore, Store};
use proof_testkit::fixtures::{check_records, meta, read_all, recs, Rng};

const CHILD_ENV: &str = "PROOF_STORE_KILL9_DIR";

/// The child process of [`kill9_acked_records_survive`]: appends batches
/// forever and prints every acked sequence number. Never returns.
fn kill9_child(dir: &str) -> ! {
    let store = FsStore::open(std::path::Path::new(dir)).unwrap();
    let mut next = store.open_invocation(&meta("k9")).unwrap().last_seq + 1;
    let mut rng = Rng::from_time();
    let mut out = std::io::stdout().lock();
    loop {
        let n = rng.below(64) + 1;
        let st = store
            .append("k9", &recs(next, n), AppendFlags::default())
            .unwrap();
        next += n;
        writeln!(out, "acked {}", st.last_seq).unwrap();
        out.flush().unwrap();
    }
}

/// Kill points: this many SIGKILLs, each at a random moment of a writer that
/// resumes the same journal (a writer re-spawned by this test itself).
const KILL_POINTS: u32 = 40;

#[test]
fn kill9_acked_records_survive() {
    // Spawned by itself as the writer (the same test, so no test is a no-op).
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        kill9_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::from_time();
    let mut prev_acked = 0;
    let mut kills_after_acks = 0;
    for round in 0..KILL_POINTS {
        let mut child = Command::new(&exe)
            .args([
                "kill9_acked_records_survive",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ") {
                    max = max.max(n.parse().unwrap());
                    let _ = tx.send(max);
                }
            }
            max
        });
        // Kill at a random point: after 1..=200 acks of this round, or at a
        // random moment (possibly before the first append).
        let target = rng.below(200) + 1;
        let deadline = std::time::Instant::now() + Duration::from_millis(20 + rng.below(400));
        let mut acks = 0;
        while std::time::Instant::now() < deadline && acks < target {
            if rx.recv_timeout(Duration::from_millis(5)).is_ok() {
                acks += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        if acked > prev_acked {
            kills_after_acks += 1;
        }
        let store = FsStore::open(dir.path()).unwrap();
        let Some(st) = store.state("k9").unwrap() else {
            assert_eq!(
                acked, 0,
                "round {round}: acked {acked} but no invocation survived"
            );
            continue;
        };
        assert!(
            st.last_seq >= acked,
            "round {round}: acked {acked} but only {} survived; {:?}",
            st.last_seq,
            store.recovery_report()
        );
        assert!(acked == 0 || acked >= prev_acked);
        check_records(&read_all(&store, "k9"), st.last_seq);
        prev_acked = st.last_seq;
    }
    assert!(
        kills_after_acks >= KILL_POINTS / 2,
        "only {kills_after_acks} of {KILL_POINTS} kills came after new acks"
    );
}
