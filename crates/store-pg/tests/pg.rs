//! What only the PostgreSQL store does: several handles (replicas) on one database,
//! versioned migrations, and surviving a database restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proof_store::{AppendFlags, Store, StoreError};
use proof_store_pg::{PgOptions, PgStore, MIGRATIONS};
use proof_testkit::fixtures::{check_records, meta, read_all, recs};
use proof_testkit::pg::PgBackend;

/// Four replicas append to one invocation at once, each from the state it last read:
/// the row lock serializes them, a batch that no longer follows the stored prefix is
/// refused, and the journal ends up contiguous, without a gap or a duplicate.
#[test]
fn replicas_appending_to_one_invocation_never_gap_or_duplicate() {
    let b = PgBackend::new();
    let first = b.store();
    first.open_invocation(&meta("shared")).unwrap();
    let replicas: Vec<Arc<PgStore>> = (0..4).map(|_| Arc::new(b.store())).collect();
    let threads: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|store| {
            std::thread::spawn(move || {
                let (mut won, mut lost) = (0, 0);
                while won < 40 {
                    let last = store.state("shared").unwrap().unwrap().last_seq;
                    match store.append("shared", &recs(last + 1, 5), AppendFlags::default()) {
                        Ok(_) => won += 1,
                        Err(StoreError::SeqGap { .. }) => lost += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    check_records(&read_all(&first, "shared"), 800);
    assert_eq!(first.state("shared").unwrap().unwrap().record_count, 800);
    println!("{lost} batches lost a race and were refused");
}

/// One invocation, one finalization: replicas racing to finalize run it once.
#[test]
fn exclusive_is_exclusive_across_replicas() {
    let b = PgBackend::new();
    let a = Arc::new(b.store());
    let c = Arc::new(b.store());
    a.open_invocation(&meta("fin")).unwrap();
    a.append("fin", &recs(1, 3), AppendFlags::default())
        .unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let store = if k % 2 == 0 { a.clone() } else { c.clone() };
            let runs = runs.clone();
            std::thread::spawn(move || {
                let s = store.clone();
                store
                    .exclusive("fin", &mut || {
                        // The one-time work re-checks the state under the lock.
                        if !s.state("fin")?.unwrap().finalized {
                            std::thread::sleep(Duration::from_millis(20));
                            s.mark_complete("fin", true, None, &serde_json::json!({}))?;
                            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(())
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A killed holder's lock goes away with its connection.
#[test]
fn a_dead_holders_lock_is_released() {
    let b = PgBackend::new();
    let a = b.store();
    a.open_invocation(&meta("z")).unwrap();
    let other = b.store();
    let got = a
        .exclusive("z", &mut || {
            assert!(!other.exclusive("z", &mut || Ok(())).unwrap());
            // Kill every other session of this database, the lock holder's included.
            let mut admin = postgres::Client::connect(&b.url, postgres::NoTls).unwrap();
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap();
            Ok(())
        })
        .unwrap();
    assert!(got);
    assert!(other.exclusive("z", &mut || Ok(())).unwrap());
}

#[test]
fn migrations_are_versioned_and_applied_once() {
    let b = PgBackend::new();
    // A fresh database without migrating: refused with the command to run.
    let e = PgStore::connect_with(
        &b.url,
        &PgOptions {
            migrate: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("proof migrate"), "{e}");
    // Replicas starting together: each migration is applied exactly once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = b.url.clone();
            std::thread::spawn(move || PgStore::connect(&url).unwrap().schema_version().unwrap())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), MIGRATIONS.last().unwrap().version);
    }
    let store = b.store();
    assert!(store.migrate().unwrap().is_empty(), "nothing left to apply");
    let mut c = postgres::Client::connect(&b.url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM proof_schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n as usize, MIGRATIONS.len());
    // A database from a newer proof is refused, not misread.
    c.execute(
        "INSERT INTO proof_schema_migrations (version, description) VALUES (9999, 'future')",
        &[],
    )
    .unwrap();
    let e = PgStore::connect(&b.url).unwrap_err();
    assert!(e.to_string().contains("newer than this proof"), "{e}");
}

fn pg_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pg")
        .join(name)
}

fn run(script: &str, args: &[&str]) {
    let st = Command::new("bash")
        .arg(pg_script(script))
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "{script} {args:?} failed");
}

/// The database stops under a live store: calls fail with a database error (which the
/// server answers as UNAVAILABLE) instead of hanging or panicking; nothing committed is
/// lost; once it is back the same store works again without being reopened.
/// A cluster of the test's own (in a temporary directory under /tmp, stopped and removed
/// by the caller): its directory, as a string for the scripts, and its URL.
fn private_cluster(prefix: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    run("start-pg.sh", &[&d]);
    let env = std::fs::read_to_string(dir.path().join("pg.env")).unwrap();
    let url = env
        .lines()
        .find_map(|l| l.strip_prefix("PROOF_PG_URL="))
        .unwrap()
        .to_string();
    (dir, d, url)
}

#[test]
fn the_store_survives_a_database_restart() {
    // A private cluster: restarting the shared one would disturb the other tests.
    let (_dir, d, url) = private_cluster("proof-pg-restart-");
    let store = PgStore::connect_with(
        &url,
        &PgOptions {
            connect_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .unwrap();
    store.open_invocation(&meta("r")).unwrap();
    store
        .append("r", &recs(1, 50), AppendFlags::default())
        .unwrap();

    run("stop-pg.sh", &[&d, "--keep"]);
    let t = Instant::now();
    let e = store
        .append("r", &recs(51, 10), AppendFlags::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::Database { .. }), "{e}");
    assert!(e.to_string().contains("retry"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(store.state("r").is_err());

    run("start-pg.sh", &[&d]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        match store.append("r", &recs(51, 10), AppendFlags::default()) {
            Ok(st) => break st,
            Err(e) if Instant::now() < deadline => {
                println!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(st.last_seq, 60);
    check_records(&read_all(&store, "r"), 60);
    drop(store);
    run("stop-pg.sh", &[&d]);
}

/// A database at schema version 1 (lifecycle rows without tenant, keyed by build,
/// invocation and kind) is migrated to version 2: rows take the tenant of their
/// invocation (or of an invocation of their build), duplicates per invocation and kind
/// keep the first, rows matching no invocation become pending rows without tenant.
#[test]
fn lifecycle_rows_of_version_1_are_migrated() {
    let b = PgBackend::new();
    let mut c = postgres::Client::connect(&b.url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE proof_schema_migrations (version integer PRIMARY KEY, \
         description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .unwrap();
    c.batch_execute(MIGRATIONS[0].sql).unwrap();
    c.batch_execute(
        "INSERT INTO proof_schema_migrations (version, description) VALUES (1, 'v1');
         INSERT INTO invocations (invocation_id, build_id, source, tenant, created_at_ms)
             VALUES ('m', 'build-m', 'bes', 'a', 1);
         INSERT INTO lifecycle VALUES ('build-m', 'm', 'attempt_started', 1, NULL, 7);
         INSERT INTO lifecycle VALUES ('other-build', 'm', 'attempt_started', 2, NULL, 8);
         INSERT INTO lifecycle VALUES ('build-m', '', 'build_enqueued', NULL, NULL, 6);
         INSERT INTO lifecycle VALUES ('build-z', 'z', 'attempt_started', 1, NULL, 9);",
    )
    .unwrap();
    let store = b.store();
    assert_eq!(
        store.schema_version().unwrap(),
        MIGRATIONS.last().unwrap().version
    );
    let lc = store.get("m").unwrap().unwrap().lifecycle;
    assert_eq!(lc.attempt_started_at_ms, Some(7), "{lc:?}");
    assert_eq!(lc.build_enqueued_at_ms, Some(6), "{lc:?}");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM lifecycle WHERE invocation_id = 'm'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "one row per invocation and kind");
    let pending: Vec<(String, String)> = c
        .query(
            "SELECT invocation_id, tenant FROM lifecycle WHERE pending",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(pending, vec![("z".to_string(), String::new())]);
}

/// A file import's batches (`append_unsynced`) each commit without waiting for a WAL
/// flush; its `sync` waits for one flush that makes them all durable. Counted by
/// PostgreSQL itself (`pg_stat_wal.wal_sync`) on a private cluster, where no other
/// test commits; the same batches appended durably, each its own flush, show that the
/// count sees the flushes.
#[test]
fn unsynced_appends_wait_for_one_wal_flush_at_the_sync() {
    let (_dir, d, url) = private_cluster("proof-pg-syncs-");
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // WAL flushes so far, once the store's connections are gone (a backend's counts
    // reach pg_stat_wal when it exits).
    let mut flushes_after = |store: PgStore| -> i64 {
        drop(store);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let others: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            if others == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the store's connections stay open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        admin
            .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
            .unwrap()
            .get(0)
    };
    const BATCHES: u64 = 40;
    let store = PgStore::connect(&url).unwrap();
    store.open_invocation(&meta("durable")).unwrap();
    store.open_invocation(&meta("import")).unwrap();
    let start = flushes_after(store);

    let store = PgStore::connect(&url).unwrap();
    for b in 0..BATCHES {
        store
            .append("durable", &recs(b * 10 + 1, 10), AppendFlags::default())
            .unwrap();
    }
    let durable = flushes_after(store);
    assert!(
        durable - start >= BATCHES as i64,
        "{BATCHES} durable appends, {} WAL flushes",
        durable - start
    );

    let store = PgStore::connect(&url).unwrap();
    for b in 0..BATCHES {
        let st = store
            .append_unsynced("import", &recs(b * 10 + 1, 10), AppendFlags::default())
            .unwrap();
        assert_eq!(st.last_seq, (b + 1) * 10);
    }
    store.sync("import").unwrap();
    let import = flushes_after(store);
    println!(
        "flushes: durable {} import {}",
        durable - start,
        import - durable
    );
    // The sync's flush, and a few by PostgreSQL's WAL writer, which flushes unsynced
    // commits in the background.
    assert!(
        import - durable <= 6,
        "{BATCHES} unsynced appends and a sync, {} WAL flushes",
        import - durable
    );

    let store = PgStore::connect(&url).unwrap();
    for id in ["durable", "import"] {
        check_records(&read_all(&store, id), BATCHES * 10);
        assert_eq!(store.state(id).unwrap().unwrap().last_seq, BATCHES * 10);
    }
    drop(store);
    run("stop-pg.sh", &[&d]);
}
