//! Issue 20, finding 6: proofs and executor queries run on the proof
//! queue's own threads. A dead executor under a load of complete
//! invocations does not delay other streams' acks, and a proof pending at a
//! crash is signed after the restart.

use proof_testkit::executor as support;
use proof_testkit::server::TestServer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_artifact::SigningKey;
use proof_executor::{Budget, BuildGrid, Retry};
use proof_proto::bep::{build_event, BuildEvent};
use proof_server::proofs::{pending_dir, LedgerConfig, ProofQueue, ProofWriter, QueueConfig};
use proof_server::replay::{replay, ReplayOptions};
use proof_server::OnFinalized;
use proof_store::{FsStore, Store};
use prost::Message;

/// The fixture's events with BuildStarted naming `uuid`; `minimal` keeps
/// only BuildStarted, BuildFinished and the last message (a complete stream
/// of three events).
fn stream(uuid: &str, minimal: bool) -> Vec<Bytes> {
    let events = support::fixture_events();
    let last = events.len() - 1;
    events
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let mut ev = BuildEvent::decode(e.as_slice()).unwrap();
            let keep = match ev.payload.as_mut() {
                Some(build_event::Payload::Started(s)) => {
                    s.uuid = uuid.to_string();
                    true
                }
                Some(build_event::Payload::Finished(_)) => true,
                _ => !minimal || i == last,
            };
            keep.then(|| Bytes::from(ev.encode_to_vec()))
        })
        .collect()
}

fn opts(target: &str, id: &str) -> ReplayOptions {
    ReplayOptions {
        target: target.to_string(),
        invocation_id: id.into(),
        build_id: format!("build-{id}"),
        project_id: String::new(),
        headers: Vec::new(),
        max_retries: 0,
        backoff: Duration::from_millis(10),
        faults: Default::default(),
        finish: true,
    }
}

fn uuid(kind: u32, n: u32) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

/// A dead executor (accepts connections, never answers) and 50 complete
/// invocations a second for 4 s: another stream's replay (every event
/// acked) takes no longer than without the load, give or take 3 s; on the
/// finalizing pool (the old way) it waited for the executor.
#[test]
fn a_dead_executor_under_load_does_not_delay_other_streams_acks() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(&dir.path().join("store")).unwrap());
    let proofs = dir.path().join("proofs");
    std::fs::create_dir_all(&proofs).unwrap();
    let writer = Arc::new(ProofWriter {
        key: SigningKey::from_bytes(&[3; 32]),
        dir: proofs.clone(),
        executor: Some(LedgerConfig {
            ledger: Arc::new(BuildGrid::new(&support::dead_executor()).unwrap()),
            instance_names: vec![String::new()],
            endpoint_aliases: Vec::new(),
            retry: Retry {
                total: Duration::from_secs(20),
                first_delay: Duration::from_millis(500),
            },
            budget: Budget {
                max_time: Duration::from_secs(20),
                ..Budget::default()
            },
        }),
        metrics: None,
        vsa: None,
        log: None,
    });
    let queue = ProofQueue::start(writer, store.clone(), QueueConfig::default()).unwrap();
    let hook: Arc<dyn OnFinalized> = queue.clone();
    // The server on a runtime of its own with a small blocking pool, as a
    // busy server's would be.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt.block_on(
        TestServer::on(store.clone())
            .on_finalized(hook)
            // All load streams come from one peer.
            .limits(proof_server::RpcLimits {
                rpcs_per_peer: 1000,
                ..Default::default()
            })
            .start(),
    );
    let target = server.target();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (baseline, loaded, loads) = client.block_on(async {
        let probe = |n: u32| {
            let target = target.clone();
            async move {
                let id = uuid(1, n);
                let t = Instant::now();
                let r = replay(stream(&id, false), &opts(&target, &id))
                    .await
                    .unwrap();
                assert_eq!(r.acked.len() as u64, r.events);
                t.elapsed()
            }
        };
        let baseline = probe(0).await;
        let load = {
            let target = target.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut runs = Vec::new();
                for n in 0..200 {
                    tick.tick().await;
                    let target = target.clone();
                    runs.push(tokio::spawn(async move {
                        let id = uuid(2, n);
                        replay(stream(&id, true), &opts(&target, &id))
                            .await
                            .unwrap();
                    }));
                }
                for r in runs {
                    r.await.unwrap();
                }
            })
        };
        let mut loaded = Duration::ZERO;
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            loaded = loaded.max(probe(n).await);
        }
        load.await.unwrap();
        (baseline, loaded, 200)
    });
    eprintln!(
        "probe replay: {baseline:?} without load, at most {loaded:?} under the load; {} proof(s) still waiting on the dead executor",
        queue.pending()
    );
    assert!(
        loaded < baseline + Duration::from_secs(3),
        "acks were delayed: {loaded:?} under load vs {baseline:?} without"
    );
    // Every load invocation was finalized (complete); their proofs wait on
    // disk for the executor, not on the ack path.
    let t = Instant::now();
    for n in 0..loads {
        loop {
            let st = store.state(&uuid(2, n)).unwrap().unwrap();
            if st.finalized {
                assert!(st.complete);
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{n} not finalized");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(queue.pending() > 0);
    assert!(std::fs::read_dir(pending_dir(&proofs)).unwrap().count() > 0);
    server_rt.shutdown_background();
}

/// The server died after finalizing an invocation and before signing its
/// proof: at the next start its pending marker queues it again.
#[test]
fn a_pending_proof_is_signed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(&dir.path().join("store")).unwrap());
    let proofs = dir.path().join("proofs");
    std::fs::create_dir_all(pending_dir(&proofs)).unwrap();
    let id = uuid(3, 1);
    // Stored complete through the server, finalized, never signed: the
    // crash left only the marker.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = TestServer::on(store.clone()).start().await;
        replay(stream(&id, false), &opts(&server.target(), &id))
            .await
            .unwrap();
        let t = Instant::now();
        while !store.state(&id).unwrap().unwrap().finalized {
            assert!(t.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    std::fs::write(pending_dir(&proofs).join(&id), b"").unwrap();
    let writer = Arc::new(ProofWriter {
        key: SigningKey::from_bytes(&[4; 32]),
        dir: proofs.clone(),
        executor: None,
        metrics: None,
        vsa: None,
        log: None,
    });
    let path = writer.path(&id);
    assert!(!path.exists());
    let queue = ProofQueue::start(writer, store, QueueConfig::default()).unwrap();
    assert!(queue.wait_idle(Duration::from_secs(30)));
    assert!(path.exists(), "the pending proof was signed");
    assert!(
        !pending_dir(&proofs).join(&id).exists(),
        "its marker is gone"
    );
}
