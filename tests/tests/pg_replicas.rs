//! Several `proof serve` replicas on one PostgreSQL database, behind HAProxy (h2c).
//!
//! - a real Bazel build through the balancer survives `kill -9` of the replica holding
//!   its stream: Bazel's retry lands on another replica, the stored stream equals
//!   `--build_event_binary_file`, one proof is signed;
//! - a bounded campaign of killing a random replica during replayed streams: every
//!   stream completes after retries, stored exactly as sent (no gap, no duplicate), so
//!   every acked event survived;
//! - PostgreSQL restarted mid-stream: nothing acked is lost, the stream completes, and
//!   the CLI and the web pages read it from the database.
//!
//! Needs PROOF_PG_URL (tests/pg/start-pg.sh), haproxy, and for the Bazel test the rig;
//! `bash tests/run-all.sh` provides all three. Random choices print their seed; set
//! `FAULT_SEED` to repeat a campaign.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_e2e::pg::{free_port, replay_opts, Cluster, Db, Haproxy, Replicas};
use proof_e2e::synthetic_stream;
use proof_e2e::{delimited_records, keypair, proof_bin, rig, stored_events};
use proof_server::replay::{replay, ReplayReport};
use proof_store::Store;

/// xorshift64*, seeded from `FAULT_SEED` or the clock (printed).
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The stream of `id` is stored exactly as sent (same events, same order, nothing more),
/// with its ComponentStreamFinished, and the client got an ack for every event.
fn assert_stored_exactly(store: &dyn Store, id: &str, sent: &[Bytes], report: &ReplayReport) {
    let total = sent.len() as u64 + 1;
    let acked: HashSet<u64> = report.acked.iter().copied().collect();
    assert_eq!(acked.len() as u64, total, "{id}: acks for every event");
    assert!(
        acked.iter().all(|&s| s >= 1 && s <= total),
        "{id}: {acked:?}"
    );
    let st = store.state(id).unwrap().expect("the invocation is stored");
    assert_eq!(st.last_seq, total, "{id}: no gap, no duplicate");
    assert!(st.saw_stream_finished, "{id}");
    let stored = stored_events(store, id);
    assert_eq!(stored.len(), sent.len(), "{id}: event count");
    for (i, (a, b)) in stored.iter().zip(sent).enumerate() {
        assert!(
            a[..] == b[..],
            "{id}: event {} differs from the one sent",
            i + 1
        );
    }
}

fn wait_finalized(store: &dyn Store, ids: &[String], within: Duration) {
    let t = Instant::now();
    for id in ids {
        loop {
            let st = store.state(id).unwrap().unwrap();
            if st.finalized {
                assert!(st.complete, "{id}: {:?}", st.incomplete_reason);
                break;
            }
            assert!(
                t.elapsed() < within,
                "{id} was not finalized within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn killing_random_replicas_during_replayed_streams_loses_no_acked_event() {
    let trials: usize = std::env::var("PG_CAMPAIGN_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    const STREAMS: usize = 3;
    const EVENTS: usize = 1500;
    proof_bin();
    let mut rng = Rng::from_env();
    let db = Db::fresh();
    // A short abandon horizon makes every replica sweep every 5 s: a finish acked by a
    // replica killed before it finalized is finalized by another one.
    let mut replicas = Replicas::start(3, &db.url, &["--abandon-after", "20"]);
    let lb = Haproxy::start(&replicas.addrs);
    let store = db.store();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (mut mid_stream, mut all_ids) = (0, Vec::new());
    for trial in 0..trials {
        let streams: Vec<(String, Vec<Bytes>)> = (0..STREAMS)
            .map(|k| {
                let id = format!("campaign-{}-{trial}-{k}", rng.0 % 100_000);
                let events = synthetic_stream(&id, EVENTS);
                (id, events)
            })
            .collect();
        let uploads: Vec<_> = streams
            .iter()
            .map(|(id, events)| {
                let o = replay_opts(&lb.target(), id);
                let events = events.clone();
                rt.spawn(async move { replay(events, &o).await })
            })
            .collect();
        // Kill a random replica once the streams stored a random share of their events.
        let goal = (STREAMS * EVENTS) as u64 * (5 + rng.below(75)) / 100;
        let t = Instant::now();
        loop {
            let stored: u64 = streams
                .iter()
                .filter_map(|(id, _)| store.state(id).ok().flatten())
                .map(|s| s.last_seq)
                .sum();
            if stored >= goal || uploads.iter().all(|u| u.is_finished()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "trial {trial}: no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let victim = rng.below(3) as usize;
        replicas.kill9(victim);
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        replicas.restart(victim);
        let mut hit = false;
        for ((id, events), u) in streams.iter().zip(uploads) {
            let report = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(120), u).await })
                .unwrap_or_else(|_| panic!("trial {trial}: {id} did not finish"))
                .unwrap()
                .unwrap_or_else(|e| panic!("trial {trial}: {id} failed after retries: {e}"));
            hit |= report.rpcs >= 2;
            assert_stored_exactly(&store, id, events, &report);
            all_ids.push(id.clone());
        }
        mid_stream += hit as usize;
        lb.wait_all_up(3);
    }
    println!(
        "{trials} trials ({} streams of {EVENTS} events) in {:.1}s; {mid_stream} kills cut a stream that then resumed on another RPC",
        trials * STREAMS,
        started.elapsed().as_secs_f64()
    );
    assert!(
        mid_stream * 2 >= trials,
        "only {mid_stream} of {trials} kills hit a stream mid-way"
    );
    // Every stream is finalized, once, complete.
    wait_finalized(&store, &all_ids, Duration::from_secs(60));
    let listed = store
        .list(&proof_store::ListFilter {
            complete: Some(true),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.len(), all_ids.len());
}

/// GET on the replica's HTTP port; returns the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = proof_e2e::http_get(addr, path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[test]
fn a_postgres_restart_mid_stream_loses_nothing_acked() {
    const EVENTS: usize = 30_000;
    proof_bin();
    let mut rng = Rng::from_env();
    let cluster = Cluster::start();
    let db = Db::fresh_on(&cluster.url);
    let http = format!("127.0.0.1:{}", free_port());
    let replicas = Replicas::start(1, &db.url, &["--http", &http]);
    let target = format!("grpc://{}", replicas.addrs[0]);
    let id = "pg-restart-5f1d0c3e-8b7a-4c39-a1d2".to_string();
    let events = synthetic_stream(&id, EVENTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upload = {
        let mut o = replay_opts(&target, &id);
        o.backoff = Duration::from_millis(300);
        o.max_retries = 15;
        let events = events.clone();
        rt.spawn(async move { replay(events, &o).await })
    };
    let store = db.store();
    let goal = EVENTS as u64 * (10 + rng.below(60)) / 100;
    let t = Instant::now();
    let before = loop {
        let last = store.state(&id).ok().flatten().map_or(0, |s| s.last_seq);
        if last >= goal {
            break last;
        }
        assert!(!upload.is_finished(), "the stream ended before the restart");
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    };
    drop(store);
    cluster.stop();
    // Down for longer than the store waits for a connection (3 s), so the replica must
    // answer UNAVAILABLE and the client must resume on a new RPC; a shorter outage can be
    // ridden out inside one RPC, and the test would not show the retry.
    std::thread::sleep(Duration::from_millis(
        proof_store_pg::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64 + 1500,
    ));
    cluster.restart();
    let report = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(180), upload).await })
        .expect("the stream finished after the restart")
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream failed after the restart: {e}"));
    println!(
        "restarted PostgreSQL at {before} of {EVENTS} events stored; {} RPCs",
        report.rpcs
    );
    assert!(report.rpcs >= 2, "the restart cut the stream: {report:?}");
    let store = db.store();
    assert_stored_exactly(&store, &id, &events, &report);
    wait_finalized(&store, std::slice::from_ref(&id), Duration::from_secs(30));

    // The CLI reads the same invocation from the database.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.bin");
    let st = std::process::Command::new(proof_bin())
        .args(["export", &id, "--store", &db.url, "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let exported = delimited_records(&out);
    assert_eq!(exported.len(), EVENTS);
    assert!(exported.iter().zip(&events).all(|(a, b)| a[..] == b[..]));
    let list = std::process::Command::new(proof_bin())
        .args(["list", "--json", "--store", &db.url])
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listing[0]["invocation_id"], id.as_str(), "{listing}");
    assert_eq!(listing[0]["complete"], true, "{listing}");
    // And so do the web pages and the metrics of the replica.
    assert!(http_get(&http, "/api/v1/invocations").contains(&id));
    let page = http_get(&http, &format!("/invocations/{id}"));
    assert!(page.contains(&id));
    let metrics = http_get(&http, "/metrics");
    assert!(metrics.contains("proof_"), "{metrics}");
    drop(replicas);
}

#[test]
fn bazel_through_haproxy_survives_kill_9_of_the_replica_holding_its_stream() {
    let rig = rig();
    proof_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let db = Db::fresh();
    let mut replicas = Replicas::start(
        3,
        &db.url,
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
            "--abandon-after",
            "20",
        ],
    );
    let lb = Haproxy::start(&replicas.addrs);
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let bep = tmp.path().join("build.bep");
    let nonce = proof_e2e::action_nonce("TEST");
    let build = lb.build_in_background(&ws, &bep, &nonce);
    // Wait for the stream to be under way, find the replica holding it, kill it.
    let store = db.store();
    let (id, victim) = lb.open_stream(&store, &build, "the kill");
    let at_kill = store.state(&id).unwrap().unwrap().last_seq;
    replicas.kill9(victim);
    println!("killed replica {victim} holding {id} at seq {at_kill}");
    let out = build.join().unwrap();
    assert_eq!(out.code, 0, "bazel build failed:\n{}", out.output);
    assert!(
        out.output.contains(" remote."),
        "no remote processes in:\n{}",
        out.output
    );
    rig.shutdown(&ws);
    let file = delimited_records(&bep);
    let st = store.state(&id).unwrap().unwrap();
    assert!(
        st.last_seq > at_kill,
        "the stream continued after the kill ({} > {at_kill})",
        st.last_seq
    );
    // Bazel's file and BES transports are independent writers of the same events:
    // event for event, byte for byte, in any order.
    let stored = stored_events(&store, &id);
    assert_eq!(stored.len(), file.len(), "event count");
    let (mut a, mut b) = (stored, file);
    a.sort();
    b.sort();
    assert!(
        a == b,
        "the stored stream differs from --build_event_binary_file"
    );
    // Finalized once, and one proof, signed and verifiable, where every replica writes.
    wait_finalized(&store, std::slice::from_ref(&id), Duration::from_secs(60));
    let artifact = proofs.join(format!("{id}.proof.tar"));
    let t = Instant::now();
    while !artifact.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "no proof artifact");
        std::thread::sleep(Duration::from_millis(100));
    }
    let files: Vec<_> = std::fs::read_dir(&proofs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".proof.tar"))
        .collect();
    assert_eq!(files, [format!("{id}.proof.tar")], "one proof");
    let vk = proof_artifact::load_public_pem(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let report = proof_artifact::verify_path(&artifact, &[vk], &Default::default()).unwrap();
    assert!(report.ok, "{:?}", report.first_failure());
    assert!(
        report
            .evidence
            .unwrap()
            .processes
            .remote_executions
            .unwrap()
            > 0
    );
}

mod stale_cache {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use proof_e2e::pg::Db;
    use proof_e2e::synthetic_stream;
    use proof_proto::bes::{
        publish_build_event_client::PublishBuildEventClient, stream_id::BuildComponent, BuildEvent,
        OrderedBuildEvent, PublishBuildToolEventStreamRequest, StreamId,
    };
    use proof_server::replay::tool_events;
    use proof_store::Store;
    use proof_testkit::server::TestServer;
    use tokio::sync::mpsc;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

    fn requests(
        id: &str,
        bep: &[Bytes],
        from: usize,
        to: usize,
    ) -> Vec<PublishBuildToolEventStreamRequest> {
        let events = tool_events(bep.iter().cloned(), true);
        (from..=to)
            .map(|s| PublishBuildToolEventStreamRequest {
                ordered_build_event: Some(OrderedBuildEvent {
                    stream_id: Some(StreamId {
                        build_id: format!("build-{id}"),
                        component: BuildComponent::Tool as i32,
                        invocation_id: id.to_string(),
                    }),
                    sequence_number: s as i64,
                    event: Some(BuildEvent {
                        event_time: None,
                        event: Some(events[s - 1].clone()),
                    }),
                }),
                notification_keywords: Vec::new(),
                project_id: "replica-tests".into(),
                check_preceding_lifecycle_events_present: false,
            })
            .collect()
    }

    async fn replica(store: Arc<dyn Store>) -> TestServer {
        TestServer::on(store).start().await
    }

    async fn client(addr: SocketAddr) -> PublishBuildEventClient<tonic::transport::Channel> {
        PublishBuildEventClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    }

    /// Opens an RPC, sends `reqs`, and collects `n` acks; returns the open sender (the
    /// RPC stays open while it lives) and the response stream.
    async fn rpc(
        addr: SocketAddr,
        reqs: Vec<PublishBuildToolEventStreamRequest>,
        n: usize,
    ) -> (
        mpsc::Sender<PublishBuildToolEventStreamRequest>,
        Result<Vec<i64>, tonic::Status>,
    ) {
        let (tx, rx) = mpsc::channel(1024);
        for r in reqs {
            tx.send(r).await.unwrap();
        }
        let mut stream = client(addr)
            .await
            .publish_build_tool_event_stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut acks = Vec::new();
        while acks.len() < n {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(a))) => acks.push(a.sequence_number),
                Ok(Ok(None)) => break,
                Ok(Err(s)) => return (tx, Err(s)),
                Err(_) => panic!("no ack within 30 s (got {acks:?})"),
            }
        }
        (tx, Ok(acks))
    }

    /// Replica A still has an RPC of the invocation open (a half-dead connection Bazel
    /// gave up on) when Bazel's retries go to replica B, which stores more; Bazel's next
    /// retry lands on A again. A must continue from the database's position, not from
    /// the position its open RPC cached (which would look like a gap and end the build's
    /// upload with FAILED_PRECONDITION).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_with_an_old_open_rpc_continues_from_the_database() {
        // The sync PostgreSQL client must not run on the runtime's threads (the server
        // calls the store from its blocking pool): set up on a plain thread.
        let (db, a_store, b_store) = std::thread::spawn(|| {
            let db = Db::fresh();
            let a: Arc<dyn Store> = Arc::new(db.store());
            let b: Arc<dyn Store> = Arc::new(db.store());
            (db, a, b)
        })
        .join()
        .unwrap();
        let (replica_a, replica_b) = (replica(a_store.clone()).await, replica(b_store).await);
        let (a, b) = (replica_a.addr, replica_b.addr);
        let id = "stale-cache-2c1f9e0a-6d3b-4f4e-9a57";
        let bep = synthetic_stream(id, 40);
        // RPC 1 on A: events 1-10, acked; left open.
        let (old_rpc, acks) = rpc(a, requests(id, &bep, 1, 10), 10).await;
        assert_eq!(acks.unwrap(), (1..=10).collect::<Vec<_>>());
        // Retry on B: resends 1-10, stores 11-20.
        let (tx, acks) = rpc(b, requests(id, &bep, 1, 20), 20).await;
        assert_eq!(acks.unwrap(), (1..=20).collect::<Vec<_>>());
        drop(tx);
        // Next retry on A, from the first unacked event.
        let (tx, acks) = rpc(a, requests(id, &bep, 21, 41), 21).await;
        assert_eq!(
            acks.unwrap_or_else(|s| panic!("refused: {s:?}")),
            (21..=41).collect::<Vec<_>>()
        );
        drop(tx);
        drop(old_rpc);
        let reader = a_store.clone();
        let stored =
            tokio::task::spawn_blocking(move || proof_e2e::stored_events(reader.as_ref(), id))
                .await
                .unwrap();
        assert_eq!(stored.len(), bep.len());
        assert!(stored.iter().zip(&bep).all(|(x, y)| x[..] == y[..]));
        drop(db);
    }
}
