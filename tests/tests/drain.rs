//! Graceful drain of `proof serve` on SIGTERM (docs/operations.md):
//!
//! - without the rig: an open tool-event RPC, SIGTERM: `/readyz` answers 503 while
//!   `/healthz` answers 200 and the gRPC listener still accepts connections; a new RPC is
//!   refused with UNAVAILABLE; the open RPC ends with UNAVAILABLE at the drain bound; the
//!   process exits within the bound; the acked events are stored and the stream resumes
//!   on a new server;
//! - with the rig: a real Bazel build through HAProxy (health check `GET /readyz`) with two
//!   replicas on PostgreSQL; the replica holding the stream is SIGTERMed mid-build; the
//!   build succeeds, one proof is signed and verifies, the drain stays within its bound,
//!   and `/readyz` flipped before the listener closed.
//!
//! The second test needs the rig (PROOF_RIG), PROOF_PG_URL and haproxy:
//! `bash tests/run-all.sh` provides all three; it fails, never skips, without them.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_e2e::pg::{free_port, Db, Haproxy};
use proof_e2e::{delimited_records, http_get, keypair, proof_bin, rig, stored_events, Server};
use proof_proto::bes::{
    publish_build_event_client::PublishBuildEventClient, stream_id::BuildComponent, BuildEvent,
    OrderedBuildEvent, PublishBuildToolEventStreamRequest, StreamId,
};
use proof_server::replay::tool_events;
use proof_store::Store;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

fn sigterm(server: &Server) {
    let st = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for the server process to exit; returns how long that took.
fn wait_exit(server: &mut Server, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            assert!(st.success(), "proof serve exited with {st}");
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "proof serve did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
            project_id: "drain-tests".into(),
            check_preceding_lifecycle_events_present: false,
        })
        .collect()
}

#[test]
fn sigterm_drains_open_rpcs_within_the_bound_and_flips_readyz_first() {
    proof_bin();
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let http = format!("127.0.0.1:{}", free_port());
    const BOUND: u64 = 3;
    let mut server = Server::start(
        "127.0.0.1:0",
        &store_dir,
        &["--http", &http, "--drain-timeout", &BOUND.to_string()],
    );
    assert_eq!(http_get(&http, "/readyz", None).0, 200);
    let addr = server.addr.clone();
    let id = "drain-7c0b2a55-93d1-4f0e-b1f3";
    let bep = proof_e2e::synthetic_stream(id, 60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // An RPC that stores 1..=20 and stays open (a build still running).
    let (tx, mut acks) = rt.block_on(async {
        let (tx, rx) = mpsc::channel(1024);
        for r in requests(id, &bep, 1, 20) {
            tx.send(r).await.unwrap();
        }
        let mut client = PublishBuildEventClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut stream = client
            .publish_build_tool_event_stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while n < 20 {
            stream.message().await.unwrap().expect("ack");
            n += 1;
        }
        (tx, stream)
    });

    let t0 = Instant::now();
    sigterm(&server);
    // /readyz flips at once; /healthz stays up; the gRPC listener still accepts.
    loop {
        let (code, _) = http_get(&http, "/readyz", None);
        if code == 503 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "/readyz still {code}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let flipped = t0.elapsed();
    assert_eq!(http_get(&http, "/healthz", None).0, 200);
    assert!(
        std::net::TcpStream::connect(&server.addr).is_ok(),
        "the gRPC listener closed before /readyz flipped"
    );
    // A new RPC is refused with UNAVAILABLE (Bazel retries it elsewhere).
    let refused = rt.block_on(async {
        let (tx2, rx2) = mpsc::channel(4);
        tx2.send(requests("drain-other-1", &bep, 1, 1).remove(0))
            .await
            .unwrap();
        let mut client = PublishBuildEventClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        match client
            .publish_build_tool_event_stream(ReceiverStream::new(rx2))
            .await
        {
            Err(s) => s,
            Ok(r) => r.into_inner().message().await.expect_err("refused"),
        }
    });
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("shutting down"), "{refused:?}");
    // The open RPC ends with UNAVAILABLE once the bound passes.
    let ended = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(BOUND + 10), acks.message())
            .await
            .expect("the open RPC was not ended")
    });
    let cut_at = t0.elapsed();
    let status = ended.expect_err("ended with an error status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        cut_at >= Duration::from_secs(BOUND) && cut_at < Duration::from_secs(BOUND + 3),
        "the RPC was ended after {cut_at:?}, bound {BOUND}s"
    );
    drop(tx);
    let exited = wait_exit(&mut server, Duration::from_secs(BOUND + 15));
    let drained = server.printed("proof serve: drained in ");
    println!("readyz 503 after {flipped:?}, RPC cut after {cut_at:?}, exit after {exited:?}: drained in {drained}");
    assert!(
        drained.contains("1 RPC(s) open at the signal, 1 ended with UNAVAILABLE"),
        "{drained}"
    );
    assert!(
        exited < Duration::from_secs(BOUND + 5),
        "exit took {exited:?}"
    );

    // Everything acked is stored; the stream resumes on a new server and is finalized.
    let mut server = Server::start("127.0.0.1:0", &store_dir, &[]);
    let addr = server.addr.clone();
    rt.block_on(async {
        let (tx, rx) = mpsc::channel(1024);
        for r in requests(id, &bep, 21, bep.len() + 1) {
            tx.send(r).await.unwrap();
        }
        drop(tx);
        let mut client = PublishBuildEventClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut stream = client
            .publish_build_tool_event_stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        while stream.message().await.unwrap().is_some() {}
    });
    let reader = proof_store::FsStore::open_read_only(&store_dir).unwrap();
    let t = Instant::now();
    while !reader.state(id).unwrap().unwrap().finalized {
        assert!(t.elapsed() < Duration::from_secs(30), "not finalized");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stored = stored_events(&reader, id);
    assert_eq!(stored.len(), bep.len());
    assert!(stored.iter().zip(&bep).all(|(a, b)| a[..] == b[..]));
    sigterm(&server);
    wait_exit(&mut server, Duration::from_secs(30));
}

#[test]
fn bazel_through_haproxy_survives_sigterm_of_the_replica_holding_its_stream() {
    let rig = rig();
    proof_bin();
    // Short, so the build outlives it: the stream must move to the other replica.
    const BOUND: u64 = 1;
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let db = Db::fresh();
    let https: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut servers: Vec<Option<Server>> = https
        .iter()
        .map(|h| {
            Some(Server::start(
                "127.0.0.1:0",
                std::path::Path::new(&db.url),
                &[
                    "--key",
                    key.to_str().unwrap(),
                    "--proofs",
                    proofs.to_str().unwrap(),
                    "--http",
                    h,
                    "--drain-timeout",
                    &BOUND.to_string(),
                    "--abandon-after",
                    "20",
                ],
            ))
        })
        .collect();
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().addr.clone())
        .collect();
    let lb = Haproxy::start_with_readiness(&addrs, &https);
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let bep = tmp.path().join("build.bep");
    let nonce = proof_e2e::action_nonce("DRAIN");
    let build = lb.build_in_background(&ws, &bep, &nonce);
    let store = db.store();
    let (id, victim) = lb.open_stream(&store, &build, "the SIGTERM");
    let at_signal = store.state(&id).unwrap().unwrap().last_seq;
    let mut s = servers[victim].take().unwrap();
    let t0 = Instant::now();
    sigterm(&s);
    // Readiness flips while the listener is still open.
    let mut flipped_while_listening = false;
    while t0.elapsed() < Duration::from_secs(2) {
        let listening = std::net::TcpStream::connect(&s.addr).is_ok();
        if http_get(&https[victim], "/readyz", None).0 == 503 {
            flipped_while_listening = listening;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        flipped_while_listening,
        "/readyz did not answer 503 while the listener was open"
    );
    let exited = wait_exit(&mut s, Duration::from_secs(BOUND + 40));
    let drained = s.printed("proof serve: drained in ");
    println!("SIGTERM to replica {victim} holding {id} at seq {at_signal}: exited after {exited:?}; drained in {drained}");
    let secs: f64 = drained.split('s').next().unwrap().parse().unwrap();
    assert!(
        secs <= BOUND as f64 + 2.0,
        "the drain took {secs}s, bound {BOUND}s"
    );
    let out = build.join().unwrap();
    assert_eq!(out.code, 0, "bazel build failed:\n{}", out.output);
    assert!(
        out.output.contains(" remote."),
        "no remote processes in:\n{}",
        out.output
    );
    rig.shutdown(&ws);
    let st = store.state(&id).unwrap().unwrap();
    assert!(
        st.last_seq > at_signal,
        "the stream continued after the SIGTERM"
    );
    let file = delimited_records(&bep);
    let (mut a, mut b) = (stored_events(&store, &id), file);
    a.sort();
    b.sort();
    assert!(
        a == b,
        "the stored stream differs from --build_event_binary_file"
    );
    let artifact = proof_e2e::wait_for_proof(&proofs, &id);
    let files: Vec<_> = std::fs::read_dir(&proofs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".proof.tar"))
        .collect();
    assert_eq!(files, [format!("{id}.proof.tar")], "one proof");
    let vk = proof_artifact::load_public_pem(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let report = proof_artifact::verify_path(&artifact, &[vk], &Default::default()).unwrap();
    assert!(report.ok, "{:?}", report.first_failure());
    drop(servers);
}

/// A stream whose finish a replica acked before it died unfinalized is adopted by a
/// survivor's sweep within `--sweep-interval` (default: --abandon-after/4, at most 60 s).
#[test]
fn sweep_interval_bounds_adoption_of_a_finished_unfinalized_stream() {
    proof_bin();
    let db = proof_e2e::pg::Db::fresh();
    let replicas = proof_e2e::pg::Replicas::start(
        1,
        &db.url,
        &["--abandon-after", "3600", "--sweep-interval", "1"],
    );
    let store = db.store();
    // Let the replica's start-up pass run first: only its sweep can adopt what follows.
    std::thread::sleep(Duration::from_millis(500));
    let bep = proof_e2e::fixture("remote-build", "bep.bin");
    let id = proof_e2e::bep_invocation_id(&bep);
    let mut records = proof_store::JournalRecord::bep_events(
        delimited_records(&bep).into_iter().map(Bytes::from),
    );
    records.push(proof_store::JournalRecord {
        seq: records.len() as u64 + 1,
        kind: proof_store::RecordKind::StreamFinished,
        payload: Bytes::new(),
    });
    let meta = proof_store::InvocationMeta {
        invocation_id: id.clone(),
        build_id: Some("adopt-build".into()),
        source: proof_store::InvocationSource::Bes,
        tenant: None,
        instance: None,
        created_at_ms: 1,
    };
    // What a replica killed right after acking the finish leaves behind.
    let flags = proof_store::AppendFlags {
        saw_build_finished: true,
        saw_last_message: true,
        saw_stream_finished: true,
    };
    store.append_as(&meta, &records, flags).unwrap();
    let t = Instant::now();
    while !store.state(&id).unwrap().unwrap().finalized {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not adopted within 5 s with --sweep-interval 1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    println!("adopted and finalized after {took:?} (--sweep-interval 1)");
    assert!(store.state(&id).unwrap().unwrap().complete);
    drop(replicas);
}
