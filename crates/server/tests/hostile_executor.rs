//! Proofs signed against an in-process fake executor (loopback) that
//! misbehaves: actions run without an image, a page token repeated forever,
//! pages without end, a small maximum page size, a client that names
//! another executor, and a stream that claims another invocation's id
//! (issue 20, findings 3, 4, 5, 11; issue 25). Each proof is verified the
//! way a user verifies it, so the reason is re-derived from `executor.bin`.

use proof_testkit::executor as support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_artifact::{Policy, RecordError, Report, SigningKey};
use proof_executor::{Budget, BuildGrid, Retry};
use proof_server::proofs::{LedgerConfig, ProofError, ProofWriter};
use proof_store::{AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, Store};
use proof_testkit::counting::CountingStore;
use support::{FakeExecutor, Mode, PINNED};

/// The remote-build fixture's own invocation id (its BuildStarted).
const ID: &str = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
/// The fixture's --remote_executor.
const CLIENT_EXECUTOR: &str = "grpc://127.0.0.1:50051";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// `events` stored as invocation `id`, complete.
fn store_stream(store: &dyn Store, id: &str, events: &[Vec<u8>]) {
    store
        .open_invocation(&InvocationMeta {
            invocation_id: id.into(),
            build_id: None,
            source: InvocationSource::Bes,
            tenant: None,
            instance: None,
            created_at_ms: 1,
        })
        .unwrap();
    let recs = JournalRecord::bep_events(events.iter().map(|e| Bytes::copy_from_slice(e)));
    let flags = AppendFlags {
        saw_build_finished: true,
        saw_last_message: true,
        saw_stream_finished: true,
    };
    store.append(id, &recs, flags).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    store: FsStore,
    writer: ProofWriter,
}

fn setup(endpoint: &str, aliases: &[&str], budget: Budget) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(&dir.path().join("store")).unwrap();
    store_stream(&store, ID, &support::fixture_events());
    let proofs = dir.path().join("proofs");
    std::fs::create_dir_all(&proofs).unwrap();
    let writer = ProofWriter {
        key: key(),
        dir: proofs,
        executor: Some(LedgerConfig {
            ledger: Arc::new(BuildGrid::new(endpoint).unwrap()),
            instance_names: vec![String::new()],
            endpoint_aliases: aliases.iter().map(|s| s.to_string()).collect(),
            retry: Retry {
                total: Duration::from_millis(200),
                first_delay: Duration::from_millis(50),
            },
            budget,
        }),
        metrics: None,
        vsa: None,
        log: None,
    };
    Setup {
        _dir: dir,
        store,
        writer,
    }
}

/// Signs the fixture's proof on a thread of its own (the adapter runs its
/// own runtime) and verifies it with the default policy.
async fn sign_and_verify(s: &Setup) -> Report {
    let out = tokio::task::block_in_place(|| s.writer.sign(&s.store, ID)).unwrap();
    let report = proof_artifact::verify(
        std::fs::File::open(&out.path).unwrap(),
        &[key().verifying_key()],
        &Policy::default(),
    )
    .unwrap();
    assert!(
        check(&report, "rederived").0,
        "the verifier re-derives the signed evidence: {report:?}"
    );
    report
}

fn check(report: &Report, name: &str) -> (bool, String) {
    let c = report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {:?}", report.checks));
    (c.ok, c.detail.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_executor_on_a_pinned_image_passes() {
    let fake = FakeExecutor::new(Mode::Honest {
        image: Some(PINNED.into()),
    });
    let ep = support::serve(fake).await;
    let s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
    let report = sign_and_verify(&s).await;
    assert!(report.ok, "{:#?}", report.checks);
}

/// Issue 21: with an executor configured, signing streams the journal twice,
/// never holding it whole: one scan gives the stream's instance name (asked of
/// the executor) and its claimed outputs, the second writes the artifact (it
/// was three reads), and the proof still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_with_an_executor_streams_the_journal_twice() {
    let fake = FakeExecutor::new(Mode::Honest {
        image: Some(PINNED.into()),
    });
    let ep = support::serve(fake.clone()).await;
    let mut s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
    // No configured instance: the stream's own --remote_instance_name is used.
    s.writer.executor.as_mut().unwrap().instance_names.clear();
    let store = CountingStore::new(s.store);
    let out = tokio::task::block_in_place(|| s.writer.sign(&store, ID)).unwrap();
    assert_eq!(store.reads(), 2, "journal reads while signing");
    assert!(
        fake.list_calls.load(Ordering::SeqCst) >= 1,
        "the executor was asked"
    );
    let report = proof_artifact::verify(
        std::fs::File::open(&out.path).unwrap(),
        &[key().verifying_key()],
        &Policy::default(),
    )
    .unwrap();
    assert!(report.ok, "{:#?}", report.checks);
}

/// Finding 4: the executor ran every action with no container-image; the
/// client's own (pinned) claim must not stand in for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_run_without_an_image_fail_image_pinned_and_contradict_the_client() {
    let fake = FakeExecutor::new(Mode::Honest { image: None });
    let ep = support::serve(fake).await;
    let s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
    let report = sign_and_verify(&s).await;
    let ev = report.evidence.as_ref().unwrap();
    let a = ev.attestation.as_ref().unwrap();
    assert_eq!((a.executed, a.executed_without_image), (8, 8));
    assert!(
        ev.worker_images.is_empty(),
        "the client's image claim is not used: {:?}",
        ev.worker_images
    );
    let (ok, detail) = check(&report, "image_pinned");
    assert!(
        !ok && detail.contains("8 of its 8 executed action(s) with no container-image"),
        "{detail}"
    );
    let (ok, detail) = check(&report, "sources_agree");
    assert!(
        !ok && detail.contains(&format!("asks for container-image {PINNED}"))
            && detail.contains("no container-image (8 action(s))"),
        "{detail}"
    );
    assert!(check(&report, "executor_attested").0);
}

/// Finding 11: the build sent its actions to one executor, the server asked
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_executor_other_than_the_one_asked_is_a_contradiction() {
    let fake = FakeExecutor::new(Mode::Honest {
        image: Some(PINNED.into()),
    });
    let ep = support::serve(fake).await;
    let s = setup(&ep, &[], Budget::default());
    let report = sign_and_verify(&s).await;
    let (ok, detail) = check(&report, "sources_agree");
    assert!(
        !ok && detail.contains(&format!(
            "--remote_executor {CLIENT_EXECUTOR} but the server asked the executor {ep}"
        )),
        "{detail}"
    );
    let c = &report.evidence.as_ref().unwrap().contradictions;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].fact, "executor_endpoint");
    // Declared as an alias of the same executor (scheme and case aside).
    let s = setup(&ep, &["GRPCS://127.0.0.1:50051/"], Budget::default());
    assert!(sign_and_verify(&s).await.ok);
}

/// Finding 5: a page token repeated forever stops paging at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_page_token_stops_paging_and_fails_the_proof() {
    let fake = FakeExecutor::new(Mode::RepeatToken);
    let ep = support::serve(fake.clone()).await;
    let s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
    let t = Instant::now();
    let report = sign_and_verify(&s).await;
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(fake.list_calls.load(Ordering::SeqCst), 2);
    let (ok, detail) = check(&report, "executor_attested");
    assert!(
        !ok && detail.contains("repeated the page token \"again\""),
        "{detail}"
    );
    assert!(!report.ok);
}

/// Finding 5: endless distinct pages stop at the byte, operation, page and
/// time budgets, each named in the failing proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_pages_stop_at_each_budget() {
    let cases = [
        (
            Budget {
                max_bytes: 2 << 20,
                ..Budget::default()
            },
            "limit of 2097152 bytes per query",
        ),
        (
            Budget {
                max_operations: 500,
                ..Budget::default()
            },
            "limit of 500 operations per query",
        ),
        (
            Budget {
                max_pages: 3,
                ..Budget::default()
            },
            "limit of 3 ListOperations pages per query",
        ),
        (
            Budget {
                max_time: Duration::from_millis(1500),
                ..Budget::default()
            },
            "limit of 1.5 s per query",
        ),
    ];
    for (budget, want) in cases {
        let fake = FakeExecutor::new(Mode::Endless { ops: 100, pad: 64 });
        let ep = support::serve(fake.clone()).await;
        let s = setup(&ep, &[CLIENT_EXECUTOR], budget);
        let t = Instant::now();
        let report = sign_and_verify(&s).await;
        assert!(t.elapsed() < Duration::from_secs(30), "{want}");
        let (ok, detail) = check(&report, "executor_attested");
        assert!(!ok && detail.contains(want), "{want}: {detail}");
    }
}

/// Issue 25: an executor whose maximum page size is small still gets
/// passing proofs: page_size 0 asks for its own maximum; one that refuses 0
/// names its maximum, which is asked once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_maximum_page_size_is_respected() {
    for (zero_refused, sizes) in [(false, vec![0, 0, 0]), (true, vec![0, 3, 3, 3])] {
        let fake = FakeExecutor::new(Mode::SmallPages {
            max: 3,
            zero_refused,
        });
        let ep = support::serve(fake.clone()).await;
        let s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
        let report = sign_and_verify(&s).await;
        assert!(report.ok, "{:#?}", report.checks);
        assert_eq!(*fake.page_sizes.lock().unwrap(), sizes);
        let a = report.evidence.unwrap().attestation.unwrap();
        assert_eq!(a.executed, 8);
    }
}

/// Finding 3: a stream stored as one invocation whose BuildStarted names
/// another gets no proof, and no artifact is ever replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_signed_only_for_its_own_id_and_never_replaced() {
    let fake = FakeExecutor::new(Mode::Honest {
        image: Some(PINNED.into()),
    });
    let ep = support::serve(fake).await;
    let s = setup(&ep, &[CLIENT_EXECUTOR], Budget::default());
    // The fixture's events (BuildStarted says ID) stored as another id.
    let attacker = "a77ac4e2-0000-4000-8000-000000000001";
    store_stream(&s.store, attacker, &support::fixture_events());
    let err = tokio::task::block_in_place(|| s.writer.sign(&s.store, attacker)).unwrap_err();
    assert!(
        matches!(&err, ProofError::Record(RecordError::InvocationMismatch { stream, evidence })
            if stream == attacker && evidence == ID),
        "{err}"
    );
    assert!(!s.writer.path(ID).exists() && !s.writer.path(attacker).exists());
    // The victim's own proof, then a second signing: refused, file unchanged.
    let first = tokio::task::block_in_place(|| s.writer.sign(&s.store, ID)).unwrap();
    let bytes = std::fs::read(&first.path).unwrap();
    let err = tokio::task::block_in_place(|| s.writer.sign(&s.store, ID)).unwrap_err();
    assert!(
        matches!(&err, ProofError::Record(RecordError::Exists(p)) if *p == first.path),
        "{err}"
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
    // record_with itself, with a file already in place: never replaced.
    let events = support::fixture_events()
        .into_iter()
        .map(Ok::<_, std::io::Error>);
    let inputs = proof_artifact::RecordInputs {
        exclusive: true,
        ..Default::default()
    };
    let err = proof_artifact::record_with(events, &inputs, &key(), &s.writer.dir).unwrap_err();
    assert!(matches!(err, RecordError::Exists(_)), "{err}");
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
    // No temporary file is left behind (the index of attested results,
    // `.attested`, is the server's own).
    let left: Vec<_> = std::fs::read_dir(&s.writer.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".attested")
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
