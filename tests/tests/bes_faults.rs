//! Fault injection against the BES backend, no real Bazel needed.
//!
//! The invariants checked everywhere:
//! - the stored stream equals what the client sent, byte for byte and in
//!   order (the journal's BEP events == the bep.bin records);
//! - every ack the client got refers to an event that is durably stored
//!   (and is the event the client sent under that number).
//!
//! Faults: dropped connections at several cut points with Bazel-style
//! resume, re-sent (already acked) events, `kill -9` of a `proof serve`
//! child mid-stream, Bazel's own requests replayed verbatim, refused
//! streams (each with its gRPC code and nothing stored for the refused
//! part), 32 concurrent invocations, and lifecycle events around the stream.
//!
//! Random choices (kill moment) print their seed; set `FAULT_SEED` to repeat.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_e2e::{
    delimited_records, encode_event, fixture, progress_id, stored_events, synthetic_stream, Server,
};
use proof_proto::bep;
use proof_proto::bes::{
    build_event::Event, publish_build_event_client::PublishBuildEventClient,
    stream_id::BuildComponent, BuildEvent, OrderedBuildEvent, PublishBuildToolEventStreamRequest,
    PublishBuildToolEventStreamResponse, PublishLifecycleEventRequest, StreamId,
};
use proof_server::replay::{replay, tool_events, Faults, ReplayError, ReplayOptions, ReplayReport};
use proof_server::Metrics;
use proof_store::{
    AppendFlags, FsStore, InvocationMeta, InvocationSource, JournalRecord, RecordKind, Store,
};
use proof_testkit::server::TestServer;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

const SCENARIOS: [&str; 5] = [
    "remote-build",
    "remote-test",
    "remote-cache-hit",
    "local-only",
    "failing-build",
];

/// Upper bound for any single test body.
const TEST_LIMIT: Duration = proof_testkit::timeouts::TEST_BODY;

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

fn bep_records(scenario: &str) -> Vec<Bytes> {
    delimited_records(&fixture(scenario, "bep.bin"))
        .into_iter()
        .map(Bytes::from)
        .collect()
}

/// The BuildStarted uuid of a BEP stream (its invocation id).
fn started_uuid(first: &[u8]) -> String {
    let ev = bep::BuildEvent::decode(first).expect("BEP event");
    match ev.payload {
        Some(bep::build_event::Payload::Started(s)) => s.uuid,
        other => panic!("first event is not BuildStarted: {other:?}"),
    }
}

fn opts(target: &str, invocation_id: &str, faults: Faults) -> ReplayOptions {
    ReplayOptions {
        target: target.to_string(),
        invocation_id: invocation_id.to_string(),
        build_id: format!("build-{invocation_id}"),
        project_id: "fault-tests".into(),
        headers: Vec::new(),
        max_retries: 8,
        backoff: Duration::from_millis(20),
        faults,
        finish: true,
    }
}

fn request(invocation_id: &str, seq: i64, event: Event) -> PublishBuildToolEventStreamRequest {
    PublishBuildToolEventStreamRequest {
        ordered_build_event: Some(OrderedBuildEvent {
            stream_id: Some(StreamId {
                build_id: format!("build-{invocation_id}"),
                component: BuildComponent::Tool as i32,
                invocation_id: invocation_id.to_string(),
            }),
            sequence_number: seq,
            event: Some(BuildEvent {
                event_time: None,
                event: Some(event),
            }),
        }),
        notification_keywords: Vec::new(),
        project_id: "fault-tests".into(),
        check_preceding_lifecycle_events_present: false,
    }
}

/// Requests `from..=to` (1-based) of a BEP stream, plus the finish if `to` is past the events.
fn requests(
    invocation_id: &str,
    bep: &[Bytes],
    from: usize,
    to: usize,
) -> Vec<PublishBuildToolEventStreamRequest> {
    let events = tool_events(bep.iter().cloned(), true);
    (from..=to)
        .map(|s| request(invocation_id, s as i64, events[s - 1].clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// A raw single-RPC client
// ---------------------------------------------------------------------------

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Sends `reqs` on one RPC, half-closes, and collects the responses and the
/// final status (`Ok(())` = the server ended the RPC with OK).
async fn one_rpc(
    addr: SocketAddr,
    reqs: Vec<PublishBuildToolEventStreamRequest>,
) -> (
    Vec<PublishBuildToolEventStreamResponse>,
    Result<(), tonic::Status>,
) {
    let mut client = PublishBuildEventClient::new(channel(addr).await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(reqs.len().max(1));
    for r in reqs {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let run = async {
        let mut stream = match client
            .publish_build_tool_event_stream(tokio_stream_from(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return (Vec::new(), Err(s)),
        };
        let mut acks = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(a)) => acks.push(a),
                Ok(None) => return (acks, Ok(())),
                Err(s) => return (acks, Err(s)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the RPC ended within 60 s")
}

/// An `mpsc::Receiver` as the request stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> tonic::codegen::tokio_stream::wrappers::ReceiverStream<T> {
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn ack_seqs(acks: &[PublishBuildToolEventStreamResponse]) -> Vec<u64> {
    acks.iter().map(|a| a.sequence_number as u64).collect()
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// All records of an invocation's journal: seq -> (kind, payload).
fn journal(store: &dyn Store, id: &str) -> Vec<JournalRecord> {
    store
        .read(id)
        .expect("read journal")
        .map(|r| r.expect("journal record"))
        .collect()
}

/// The journal holds exactly `bep` (then the finish), seqs 1.. contiguous,
/// and every acked seq is stored with the bytes the client sent.
fn assert_stored_exactly(
    store: &dyn Store,
    id: &str,
    bep: &[Bytes],
    acked: &[u64],
    finished: bool,
) {
    let recs = journal(store, id);
    let want_len = bep.len() + usize::from(finished);
    assert_eq!(
        recs.len(),
        want_len,
        "{id}: journal has {} records, want {want_len}",
        recs.len()
    );
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            r.seq,
            i as u64 + 1,
            "{id}: journal seqs are contiguous from 1"
        );
        if i < bep.len() {
            assert_eq!(r.kind, RecordKind::BepEvent, "{id}: record {}", r.seq);
            assert!(
                r.payload == bep[i],
                "{id}: record {} differs from the event sent",
                r.seq
            );
        } else {
            assert_eq!(
                r.kind,
                RecordKind::StreamFinished,
                "{id}: last record is the finish"
            );
        }
    }
    let events = stored_events(store, id);
    assert!(
        events
            .iter()
            .map(Vec::as_slice)
            .eq(bep.iter().map(|b| &b[..])),
        "{id}: stored BEP events equal the original, byte for byte and in order"
    );
    let last = recs.last().map_or(0, |r| r.seq);
    for &a in acked {
        assert!(
            a >= 1 && a <= last,
            "{id}: ack for {a} but only 1..={last} are stored"
        );
    }
    let st = store.state(id).unwrap().expect("state");
    assert_eq!(st.last_seq, want_len as u64);
    assert_eq!(st.saw_stream_finished, finished);
}

/// Waits (bounded) until the server finalized `id`, and checks it is complete.
async fn assert_complete(store: &dyn Store, id: &str) {
    let t = Instant::now();
    loop {
        let st = store.state(id).unwrap().expect("state");
        if st.finalized {
            assert!(
                st.complete,
                "{id}: finalized but incomplete: {:?}",
                st.incomplete_reason
            );
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{id} was not finalized within 30 s: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Acks are for 1..=n (each once, in order) when no event was re-sent after its ack.
fn assert_acked_once_in_order(report: &ReplayReport, n: u64) {
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(report.acked, want, "acks: each event once, in order");
}

// ---------------------------------------------------------------------------
// 1. Disconnects, resumed as Bazel does
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_at_every_cut_point_resume_to_an_identical_stream() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bep = bep_records("remote-build");
        assert_eq!(bep.len(), 81);
        let id = started_uuid(&bep[0]);
        let total = bep.len() as u64 + 1; // + ComponentStreamFinished
                                          // Right after the first event, early, middle, right before the finish
                                          // (81 BEP events sent, the finish not yet), right after the finish,
                                          // and several cuts in one upload.
        let cuts: Vec<Vec<u64>> = vec![
            vec![1],
            vec![2],
            vec![40],
            vec![total - 1],
            vec![total],
            vec![1, 3, 17, 60],
        ];
        for cut in cuts {
            let srv = TestServer::builder().start().await;
            let faults = Faults {
                disconnect_after: cut.clone(),
                resend_acked: 0,
            };
            let report = replay(bep.clone(), &opts(&srv.target(), &id, faults))
                .await
                .unwrap_or_else(|e| panic!("cut {cut:?}: {e}"));
            assert_eq!(
                report.rpcs as usize,
                cut.len() + 1,
                "cut {cut:?}: one new RPC per disconnect"
            );
            assert_acked_once_in_order(&report, total);
            assert_stored_exactly(srv.store.as_ref(), &id, &bep, &report.acked, true);
            assert_complete(srv.store.as_ref(), &id).await;
            srv.stop().await;
        }
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 2. Duplicated and re-sent events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_acked_events_are_acked_again_and_stored_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        // Long enough that acks come back before each cut (the client's
        // send window is 64), so there are acked events to re-send.
        let id = "resend-acked-3d0b1a9e";
        let bep = synthetic_stream(id, 3_000);
        let total = bep.len() as u64 + 1;
        let srv = TestServer::builder().start().await;
        let faults = Faults {
            disconnect_after: vec![700, 1_500],
            resend_acked: 25,
        };
        let report = replay(bep.clone(), &opts(&srv.target(), id, faults))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rpcs, 3);
        // Every event acked, some more than once (their acks were "lost").
        let mut distinct = report.acked.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct, (1..=total).collect::<Vec<_>>());
        let again = report.acked.len() as u64 - total;
        assert_eq!(
            again,
            2 * 25,
            "each retry re-sent 25 acked events and they were acked again"
        );
        assert!(Metrics::get(&srv.metrics.events_duplicate) >= 50);
        assert_eq!(
            Metrics::get(&srv.metrics.events_ingested),
            bep.len() as u64,
            "each BEP event stored once"
        );
        assert_stored_exactly(srv.store.as_ref(), id, &bep, &report.acked, true);
        assert_complete(srv.store.as_ref(), id).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_before_any_ack_then_one_after_many_acks_resends_only_what_was_acked() {
    // Cuts are per-RPC send counts, reached in increasing order: RPC 1 is cut
    // after 3 sends (nothing acked yet, nothing to re-send), RPC 2 after 800
    // (hundreds acked), so RPC 3 re-sends 6 acked events plus the unacked ones.
    tokio::time::timeout(TEST_LIMIT, async {
        let id = "resend-twice-8f14e45f";
        let bep = synthetic_stream(id, 2_000);
        let srv = TestServer::builder().start().await;
        let faults = Faults {
            disconnect_after: vec![800, 3],
            resend_acked: 6,
        };
        let report = replay(bep.clone(), &opts(&srv.target(), id, faults))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rpcs, 3);
        // RPC 3 re-sends the last 6 events acked before RPC 2's cut, each acked once
        // more. How many had been acked by then depends on how fast the server's
        // first commits were (under load, possibly none), so the count is at most 6,
        // and RPC 2, after a cut with nothing acked, re-sent nothing acked.
        let again = report.acked.len() - (bep.len() + 1);
        assert!(again <= 6, "{again} events acked more than once");
        assert!(Metrics::get(&srv.metrics.events_duplicate) >= again as u64);
        assert_eq!(
            Metrics::get(&srv.metrics.events_ingested),
            bep.len() as u64,
            "each BEP event stored once"
        );
        assert_stored_exactly(srv.store.as_ref(), id, &bep, &report.acked, true);
        assert_complete(srv.store.as_ref(), id).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_on_a_new_rpc_are_acked_in_order_and_not_stored_again() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bep = bep_records("remote-build");
        let id = started_uuid(&bep[0]);
        let total = bep.len() + 1;
        let srv = TestServer::builder().start().await;
        // RPC 1: 1..=10, half-closed without finishing.
        let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 1, 10)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(ack_seqs(&acks), (1..=10).collect::<Vec<_>>());
        // RPC 2: 4..=12 (4..=10 are duplicates).
        let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 4, 12)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(ack_seqs(&acks), (4..=12).collect::<Vec<_>>());
        for a in &acks {
            let sid = a.stream_id.as_ref().expect("ack echoes the stream_id");
            assert_eq!(sid.invocation_id, id);
            assert_eq!(sid.build_id, format!("build-{id}"));
            assert_eq!(sid.component, BuildComponent::Tool as i32);
        }
        assert_eq!(srv.store.state(&id).unwrap().unwrap().last_seq, 12);
        // RPC 3: everything again from 1, to the end.
        let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 1, total)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(ack_seqs(&acks), (1..=total as u64).collect::<Vec<_>>());
        // RPC 4: the whole stream once more after it finished: all duplicates.
        let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 1, total)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(acks.len(), total);
        assert_eq!(Metrics::get(&srv.metrics.events_ingested), bep.len() as u64);
        assert_stored_exactly(srv.store.as_ref(), &id, &bep, &ack_seqs(&acks), true);
        assert_complete(srv.store.as_ref(), &id).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_old_rpc_is_still_open_shares_one_position() {
    // Bazel gave up on RPC A (from its side) and retried on RPC B, but the
    // server still sees A open and A's late events arrive after B's.
    tokio::time::timeout(TEST_LIMIT, async {
        let bep = bep_records("remote-build");
        let id = started_uuid(&bep[0]);
        let total = bep.len() + 1;
        let srv = TestServer::builder().start().await;
        let mut client = PublishBuildEventClient::new(channel(srv.addr).await);
        let (tx_a, rx_a) = mpsc::channel(256);
        let mut acks_a = client
            .publish_build_tool_event_stream(tokio_stream_from(rx_a))
            .await
            .unwrap()
            .into_inner();
        for r in requests(&id, &bep, 1, 20) {
            tx_a.send(r).await.unwrap();
        }
        for want in 1..=20 {
            let a = acks_a.message().await.unwrap().expect("ack on A");
            assert_eq!(a.sequence_number, want);
        }
        // B: re-sends 10..=20, continues to the end, finishes.
        let (acks_b, end_b) = one_rpc(srv.addr, requests(&id, &bep, 10, total)).await;
        assert!(end_b.is_ok(), "{end_b:?}");
        assert_eq!(ack_seqs(&acks_b), (10..=total as u64).collect::<Vec<_>>());
        // A's late events 21..=25: already stored, acked again, not stored twice.
        for r in requests(&id, &bep, 21, 25) {
            tx_a.send(r).await.unwrap();
        }
        for want in 21..=25 {
            let a = acks_a.message().await.unwrap().expect("ack on A");
            assert_eq!(a.sequence_number, want);
        }
        drop(tx_a);
        assert!(acks_a.message().await.unwrap().is_none(), "A ends OK");
        assert_eq!(Metrics::get(&srv.metrics.events_ingested), bep.len() as u64);
        assert_stored_exactly(srv.store.as_ref(), &id, &bep, &ack_seqs(&acks_b), true);
        assert_complete(srv.store.as_ref(), &id).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_event_with_different_bytes_is_refused_not_acked() {
    tokio::time::timeout(TEST_LIMIT, async {
        let id = "resent-different";
        let bep = synthetic_stream(id, 40);
        let total = bep.len() + 1;
        let srv = TestServer::builder().start().await;
        // Event 5 with other bytes (another progress text).
        let forged = |seq: usize| {
            let mut ev = bep::BuildEvent::decode(&bep[seq - 1][..]).unwrap();
            ev.payload = Some(bep::build_event::Payload::Progress(bep::Progress {
                stdout: "not what was stored".into(),
                stderr: String::new(),
            }));
            let mut v = bep.clone();
            v[seq - 1] = encode_event(&ev);
            assert_ne!(v[seq - 1], bep[seq - 1]);
            v
        };
        // RPC A stores and acks 1..=20 and stays open.
        let mut client = PublishBuildEventClient::new(channel(srv.addr).await);
        let (tx_a, rx_a) = mpsc::channel(64);
        let mut acks_a = client
            .publish_build_tool_event_stream(tokio_stream_from(rx_a))
            .await
            .unwrap()
            .into_inner();
        for r in requests(id, &bep, 1, 20) {
            tx_a.send(r).await.unwrap();
        }
        for want in 1..=20 {
            assert_eq!(
                acks_a.message().await.unwrap().unwrap().sequence_number,
                want
            );
        }
        // B re-sends 4..=6 with 5 changed, while A is open (the window of digests).
        let (acks, end) = one_rpc(srv.addr, requests(id, &forged(5), 4, 6)).await;
        assert_eq!(
            ack_seqs(&acks),
            vec![4],
            "the identical 4 is acked, the changed 5 is not"
        );
        assert_refused(&end, tonic::Code::FailedPrecondition, "different bytes");
        drop(tx_a);
        assert!(acks_a.message().await.unwrap().is_none());
        // With no RPC open (the window is gone): the stored bytes are read back.
        let (acks, end) = one_rpc(srv.addr, requests(id, &forged(12), 10, 14)).await;
        assert_eq!(ack_seqs(&acks), vec![10, 11]);
        assert_refused(&end, tonic::Code::FailedPrecondition, "different bytes");
        // Identical re-sends are acked; the stream completes with the original bytes.
        let (acks, end) = one_rpc(srv.addr, requests(id, &bep, 1, total)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(ack_seqs(&acks), (1..=total as u64).collect::<Vec<_>>());
        assert_stored_exactly(srv.store.as_ref(), id, &bep, &ack_seqs(&acks), true);
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 3. kill -9 of `proof serve` mid-stream
// ---------------------------------------------------------------------------

/// Small deterministic PRNG (xorshift64*), seeded from the clock or `FAULT_SEED`.
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
            })
            | 1;
        println!("FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What a Bazel-like client observed so far, readable while it runs.
#[derive(Default)]
struct Observed {
    /// Every ack, in the order received.
    acked: Mutex<Vec<u64>>,
    highest: AtomicU64,
    rpcs: AtomicU64,
}

/// A Bazel-like uploader (docs/wire-facts.md §1.5) whose progress can be
/// watched while it runs: pipelined sends, a FIFO of unacked events, every
/// response acks the oldest one (else a protocol error), on a retriable
/// failure a new RPC that re-sends every unacked event with its number,
/// back-off `backoff × 1.6^attempt`, attempts reset after progress.
async fn bazel_like_upload(
    target: SocketAddr,
    id: String,
    events: Arc<Vec<Event>>,
    seen: Arc<Observed>,
    backoff: Duration,
    max_retries: u32,
) -> Result<(), String> {
    let total = events.len() as u64;
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut next = 1u64;
    let mut retries = 0u32;
    loop {
        seen.rpcs.fetch_add(1, Ordering::SeqCst);
        let mut got_ack = false;
        let status = 'rpc: {
            let ch = match Endpoint::from_shared(format!("http://{target}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
            {
                Ok(c) => c,
                Err(e) => break 'rpc tonic::Status::unavailable(format!("connect: {e}")),
            };
            let mut client = PublishBuildEventClient::new(ch);
            let (tx, rx) = mpsc::channel::<PublishBuildToolEventStreamRequest>(256);
            let mut stream = match client
                .publish_build_tool_event_stream(tokio_stream_from(rx))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => break 'rpc s,
            };
            let mut resend: VecDeque<u64> = unacked.iter().copied().collect();
            let mut tx = Some(tx);
            loop {
                let pending = !resend.is_empty() || next <= total;
                if !pending {
                    tx = None; // half-close after the last event
                }
                tokio::select! {
                    biased;
                    m = stream.message() => match m {
                        Ok(Some(r)) => {
                            let seq = r.sequence_number as u64;
                            if unacked.front() != Some(&seq) {
                                return Err(format!("ack {seq} but the oldest unacked is {:?}", unacked.front()));
                            }
                            unacked.pop_front();
                            got_ack = true;
                            seen.acked.lock().unwrap().push(seq);
                            seen.highest.fetch_max(seq, Ordering::SeqCst);
                        }
                        Ok(None) => {
                            if unacked.is_empty() && next > total {
                                return Ok(());
                            }
                            return Err(format!("server closed with OK but {} events are unacked", unacked.len()));
                        }
                        Err(s) => break 'rpc s,
                    },
                    permit = async { tx.as_ref().unwrap().reserve().await }, if tx.is_some() && pending => {
                        let Ok(permit) = permit else { continue };
                        let seq = if let Some(s) = resend.pop_front() {
                            s
                        } else {
                            next += 1;
                            unacked.push_back(next - 1);
                            next - 1
                        };
                        permit.send(request(&id, seq as i64, events[seq as usize - 1].clone()));
                    }
                }
            }
        };
        if matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
        ) {
            return Err(format!("refused: {status}"));
        }
        if got_ack {
            retries = 0;
        }
        if retries >= max_retries {
            return Err(format!("gave up after {retries} retries: {status}"));
        }
        tokio::time::sleep(backoff.mul_f64(1.6f64.powi(retries as i32))).await;
        retries += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acked_event_and_resumes_on_restart() {
    const N: usize = 50_000;
    // Build the binary before the clock starts (may wait for cargo's lock).
    tokio::task::block_in_place(proof_e2e::proof_bin);
    tokio::time::timeout(TEST_LIMIT, async {
        let mut rng = Rng::from_env();
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let id = "kill9-5d1e2c4a-0b7f-4c39-9a4e-7d2f1c0e8b13".to_string();
        let bep = synthetic_stream(&id, N);
        let events = Arc::new(tool_events(bep.iter().cloned(), true));
        let total = events.len() as u64;

        let mut server =
            tokio::task::block_in_place(|| Server::start("127.0.0.1:0", &store_dir, &[]));
        let addr: SocketAddr = server.addr.parse().unwrap();
        let seen = Arc::new(Observed::default());
        let upload = tokio::spawn(bazel_like_upload(
            addr,
            id.clone(),
            events.clone(),
            seen.clone(),
            Duration::from_millis(200),
            15,
        ));

        // Kill at a random moment between 5 % and 85 % of the acks.
        let kill_at = total / 20 + rng.below(total * 8 / 10);
        let t = Instant::now();
        while seen.highest.load(Ordering::SeqCst) < kill_at {
            assert!(
                !upload.is_finished(),
                "the upload ended before the kill: {:?}",
                upload.await
            );
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no progress to {kill_at} in 120 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::task::block_in_place(|| server.kill9());
        // Acks already in flight from the dead server reach the client (or
        // not) within its first back-off; none can come later.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_before: Vec<u64> = seen.acked.lock().unwrap().clone();
        let max_acked = acked_before.iter().copied().max().unwrap_or(0);
        println!(
            "killed at {} acks (target {kill_at}); max acked {max_acked} after {:?}",
            acked_before.len(),
            t.elapsed()
        );
        assert!(
            max_acked >= kill_at && max_acked < total,
            "the kill hit mid-stream"
        );

        // Before the restart: everything acked is durable and exact.
        tokio::task::block_in_place(|| {
            let store = FsStore::open(&store_dir).expect("store opens after kill -9");
            println!("recovery after kill -9: {:?}", store.recovery_report());
            let st = store.state(&id).unwrap().expect("the invocation survived");
            assert!(
                st.last_seq >= max_acked,
                "acked up to {max_acked} but only {} stored",
                st.last_seq
            );
            assert!(st.last_seq < total, "the stream cannot have finished yet");
            let recs = journal(&store, &id);
            assert_eq!(recs.len() as u64, st.last_seq);
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.seq, i as u64 + 1);
                assert!(
                    r.payload == bep[i],
                    "record {} differs from the event sent",
                    r.seq
                );
            }
        }); // drops the store: releases its lock

        // Restart on the same address and store; the client finishes by itself.
        let mut server =
            tokio::task::block_in_place(|| Server::start(&addr.to_string(), &store_dir, &[]));
        let res = tokio::time::timeout(Duration::from_secs(150), upload)
            .await
            .expect("the upload finished after the restart")
            .expect("upload task");
        res.expect("the upload completed");
        let acked = seen.acked.lock().unwrap().clone();
        assert_eq!(
            acked,
            (1..=total).collect::<Vec<_>>(),
            "every event acked once, in order"
        );
        assert!(seen.rpcs.load(Ordering::SeqCst) >= 2);
        // Let the server finalize, then stop it hard and look at the store.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| server.kill9());
        let store = FsStore::open(&store_dir).unwrap();
        assert_stored_exactly(&store, &id, &bep, &acked, true);
        let st = store.state(&id).unwrap().unwrap();
        assert!(st.saw_build_finished && st.saw_last_message && st.event_count == N as u64);
        if st.finalized {
            assert!(st.complete, "{:?}", st.incomplete_reason);
        }
    })
    .await
    .expect("test finished in time");
}

/// Total size of the journal files under a store directory.
fn journal_bytes_on_disk(store_dir: &std::path::Path) -> u64 {
    let Ok(shards) = std::fs::read_dir(store_dir.join("journals")) else {
        return 0;
    };
    shards
        .flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".journal"))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_the_replay_client_then_restart_completes_byte_identical() {
    // The project's own replay client (Bazel's retry rules, 200 ms back-off)
    // against a `proof serve` killed at a random point of the journal's growth.
    const N: usize = 50_000;
    tokio::task::block_in_place(proof_e2e::proof_bin);
    tokio::time::timeout(TEST_LIMIT, async {
        let mut rng = Rng::from_env();
        let id = "kill9-replay-6b86b273-ff34-4fce-9d6b".to_string();
        let bep = synthetic_stream(&id, N);
        let total = N as u64 + 1;
        // How large the journal of this stream gets when written in batches
        // of 1024 (the server writes batches of at most 512, so its journal
        // reaches any size no later in the stream than this one does).
        let reference = tokio::task::block_in_place(|| {
            let d = tempfile::tempdir().unwrap();
            let store = FsStore::open(d.path()).unwrap();
            let mut file = Vec::new();
            for b in &bep {
                proof_stream::delimited::write_delimited(&mut file, b);
            }
            proof_ingest::ingest_file(&store, &file[..], 1, |_| {}).unwrap();
            journal_bytes_on_disk(d.path())
        });
        let threshold = reference / 10 + rng.below(reference / 2);

        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let mut server =
            tokio::task::block_in_place(|| Server::start("127.0.0.1:0", &store_dir, &[]));
        let addr = server.addr.clone();
        let mut o = opts(&server.target(), &id, Faults::default());
        o.backoff = Duration::from_millis(200);
        o.max_retries = 15;
        let upload = tokio::spawn({
            let bep = bep.clone();
            async move { replay(bep, &o).await }
        });
        let t = Instant::now();
        while journal_bytes_on_disk(&store_dir) < threshold {
            assert!(!upload.is_finished(), "the upload ended before the kill");
            assert!(t.elapsed() < Duration::from_secs(120), "journal did not reach {threshold} bytes");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::task::block_in_place(|| server.kill9());
        let at_kill = tokio::task::block_in_place(|| {
            let store = FsStore::open(&store_dir).expect("store opens after kill -9");
            let st = store.state(&id).unwrap().expect("the invocation survived");
            let recs = journal(&store, &id);
            assert_eq!(recs.len() as u64, st.last_seq);
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.seq, i as u64 + 1);
                assert!(r.payload == bep[i], "record {} differs from the event sent", r.seq);
            }
            st.last_seq
        });
        println!("killed at journal {threshold} of ~{reference} bytes: {at_kill} of {total} events stored");
        assert!(at_kill > 0 && at_kill < total, "the kill hit mid-stream");

        let mut server =
            tokio::task::block_in_place(|| Server::start(&addr, &store_dir, &[]));
        let report = tokio::time::timeout(Duration::from_secs(150), upload)
            .await
            .expect("the upload finished after the restart")
            .expect("upload task")
            // Had the dead server acked an event it had not stored, the client
            // would resume past the store's end: a gap, refused.
            .unwrap_or_else(|e| panic!("replay after restart: {e}"));
        assert!(report.rpcs >= 2, "{report:?}");
        assert_acked_once_in_order(&report, total);
        tokio::task::block_in_place(|| server.kill9());
        let store = FsStore::open(&store_dir).unwrap();
        assert_stored_exactly(&store, &id, &bep, &report.acked, true);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_finish_commit_and_finalizing_is_repaired_by_the_resent_finish() {
    // State left by a kill -9 right after the group commit that stored the
    // ComponentStreamFinished, before the ack went out and before finalize ran.
    tokio::time::timeout(TEST_LIMIT, async {
        let bep = bep_records("remote-build");
        let id = started_uuid(&bep[0]);
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FsStore::open(dir.path()).unwrap();
            store
                .open_invocation(&InvocationMeta {
                    invocation_id: id.clone(),
                    build_id: Some(format!("build-{id}")),
                    source: InvocationSource::Bes,
                    tenant: None,
                    instance: Some("fault-tests".into()),
                    created_at_ms: 1,
                })
                .unwrap();
            let reqs = requests(&id, &bep, 1, bep.len() + 1);
            let recs: Vec<JournalRecord> = reqs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let ev = r
                        .ordered_build_event
                        .as_ref()
                        .unwrap()
                        .event
                        .clone()
                        .unwrap();
                    match ev.event {
                        Some(Event::BazelEvent(any)) => {
                            JournalRecord::bep_event(i as u64 + 1, any.value)
                        }
                        _ => JournalRecord {
                            seq: i as u64 + 1,
                            kind: RecordKind::StreamFinished,
                            payload: Bytes::from(ev.encode_to_vec()),
                        },
                    }
                })
                .collect();
            store
                .append(
                    &id,
                    &recs,
                    AppendFlags {
                        saw_build_finished: true,
                        saw_last_message: true,
                        saw_stream_finished: true,
                    },
                )
                .unwrap();
            assert!(!store.state(&id).unwrap().unwrap().finalized);
        }
        let store = Arc::new(FsStore::open(dir.path()).unwrap());
        let srv = TestServer::on(store).start().await;
        // Bazel never got the last acks: it re-sends the tail, finish included.
        let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 70, bep.len() + 1)).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(
            ack_seqs(&acks),
            (70..=bep.len() as u64 + 1).collect::<Vec<_>>()
        );
        assert_stored_exactly(srv.store.as_ref(), &id, &bep, &ack_seqs(&acks), true);
        assert_complete(srv.store.as_ref(), &id).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 4. Bazel's own requests, verbatim
// ---------------------------------------------------------------------------

fn multiset(v: impl IntoIterator<Item = Vec<u8>>) -> HashMap<Vec<u8>, usize> {
    let mut m = HashMap::new();
    for x in v {
        *m.entry(x).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazels_recorded_requests_replayed_verbatim_store_the_bep_file_events() {
    tokio::time::timeout(TEST_LIMIT, async {
        let srv = TestServer::builder().start().await;
        for scenario in SCENARIOS {
            let reqs: Vec<PublishBuildToolEventStreamRequest> =
                delimited_records(&fixture(scenario, "bes/build_tool_events.bin"))
                    .iter()
                    .map(|r| PublishBuildToolEventStreamRequest::decode(&r[..]).expect("request"))
                    .collect();
            let sent: Vec<(i64, StreamId)> = reqs
                .iter()
                .map(|r| {
                    let o = r.ordered_build_event.as_ref().unwrap();
                    (o.sequence_number, o.stream_id.clone().unwrap())
                })
                .collect();
            let id = sent[0].1.invocation_id.clone();
            let (acks, end) = one_rpc(srv.addr, reqs).await;
            assert!(end.is_ok(), "{scenario}: {end:?}");
            assert_eq!(acks.len(), sent.len(), "{scenario}: one ack per request");
            for (a, (seq, sid)) in acks.iter().zip(&sent) {
                assert_eq!(a.sequence_number, *seq, "{scenario}: acks in request order");
                assert_eq!(
                    a.stream_id.as_ref(),
                    Some(sid),
                    "{scenario}: the stream_id is echoed"
                );
            }
            let bep = delimited_records(&fixture(scenario, "bep.bin"));
            let stored = stored_events(srv.store.as_ref(), &id);
            assert_eq!(stored.len(), bep.len(), "{scenario}");
            assert_eq!(
                multiset(stored),
                multiset(bep),
                "{scenario}: stored events == bep.bin events (as a multiset)"
            );
            assert_complete(srv.store.as_ref(), &id).await;
        }
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 5. Refusals
// ---------------------------------------------------------------------------

/// A copy of `bep` whose BuildStarted uuid is `id` (so one fixture serves many invocations).
fn with_uuid(bep: &[Bytes], id: &str) -> Vec<Bytes> {
    let mut first = bep::BuildEvent::decode(&bep[0][..]).unwrap();
    match first.payload.as_mut() {
        Some(bep::build_event::Payload::Started(s)) => s.uuid = id.to_string(),
        _ => panic!("not BuildStarted"),
    }
    let mut v = bep.to_vec();
    v[0] = Bytes::from(first.encode_to_vec());
    v
}

fn assert_refused(end: &Result<(), tonic::Status>, code: tonic::Code, words: &str) {
    let Err(s) = end else {
        panic!("expected {code:?}, the RPC ended OK")
    };
    assert_eq!(s.code(), code, "{s}");
    assert!(
        s.message().contains(words),
        "message {:?} should say {words:?}",
        s.message()
    );
}

fn stored_seq(store: &dyn Store, id: &str) -> Option<u64> {
    store.state(id).unwrap().map(|s| s.last_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_right_code_and_store_nothing_of_the_refused_part() {
    tokio::time::timeout(TEST_LIMIT, async {
        let fixture_bep = bep_records("remote-build");
        let srv = TestServer::builder().start().await;
        let bep_event = |b: &Bytes| {
            Event::BazelEvent(prost_types::Any {
                type_url: proof_proto::BEP_EVENT_TYPE_URL.into(),
                value: b.to_vec(),
            })
        };

        // A gap: 1, 2, 3, 5.
        let id = "refuse-gap";
        let bep = with_uuid(&fixture_bep, id);
        let mut reqs = requests(id, &bep, 1, 3);
        reqs.extend(requests(id, &bep, 5, 5));
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::FailedPrecondition,
            "gap: expected sequence_number 4, got 5",
        );
        assert_eq!(ack_seqs(&acks), vec![1, 2, 3]);
        assert_stored_exactly(srv.store.as_ref(), id, &bep[..3], &[1, 2, 3], false);
        // A gap at the start of a retry (4 is missing on the new RPC too).
        let (acks, end) = one_rpc(srv.addr, requests(id, &bep, 6, 8)).await;
        assert_refused(&end, tonic::Code::FailedPrecondition, "gap");
        assert!(acks.is_empty());
        assert_eq!(stored_seq(srv.store.as_ref(), id), Some(3));

        // Backwards within one RPC: 1, 2, 3, 2.
        let id = "refuse-backwards";
        let bep = with_uuid(&fixture_bep, id);
        let mut reqs = requests(id, &bep, 1, 3);
        reqs.extend(requests(id, &bep, 2, 2));
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::FailedPrecondition,
            "went backwards within one stream: 2 after 3",
        );
        assert_eq!(ack_seqs(&acks), vec![1, 2, 3]);
        assert_stored_exactly(srv.store.as_ref(), id, &bep[..3], &[1, 2, 3], false);

        // An event after the stream finished.
        let id = "refuse-after-finish";
        let bep = with_uuid(&fixture_bep, id);
        let total = bep.len() + 1;
        let (acks, end) = one_rpc(srv.addr, requests(id, &bep, 1, total)).await;
        assert!(end.is_ok());
        assert_eq!(acks.len(), total);
        let extra = request(id, total as i64 + 1, bep_event(&bep[5]));
        let (acks, end) = one_rpc(srv.addr, vec![extra.clone()]).await;
        assert_refused(
            &end,
            tonic::Code::FailedPrecondition,
            &format!("arrived after the stream finished at sequence_number {total}"),
        );
        assert!(acks.is_empty());
        // Also on the same RPC as re-sent duplicates: those are acked, the extra is not.
        let mut reqs = requests(id, &bep, total - 2, total);
        reqs.push(extra);
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::FailedPrecondition,
            "after the stream finished",
        );
        assert_eq!(
            ack_seqs(&acks),
            vec![total as u64 - 2, total as u64 - 1, total as u64]
        );
        assert_stored_exactly(srv.store.as_ref(), id, &bep, &[], true);

        // Garbage bytes as bazel_event.
        let id = "refuse-garbage";
        let bep = with_uuid(&fixture_bep, id);
        let mut reqs = requests(id, &bep, 1, 2);
        reqs.push(request(
            id,
            3,
            bep_event(&Bytes::from_static(
                b"\xff\xff\xff\xff garbage, not protobuf",
            )),
        ));
        reqs.extend(requests(id, &bep, 4, 5));
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::InvalidArgument,
            "event 3: not a build_event_stream.BuildEvent",
        );
        assert_eq!(ack_seqs(&acks), vec![1, 2]);
        assert_stored_exactly(srv.store.as_ref(), id, &bep[..2], &[1, 2], false);

        // A stream whose first event is not BuildStarted.
        let id = "refuse-no-started";
        let (acks, end) = one_rpc(
            srv.addr,
            vec![
                request(id, 1, bep_event(&fixture_bep[1])),
                request(id, 2, bep_event(&fixture_bep[2])),
            ],
        )
        .await;
        assert_refused(&end, tonic::Code::InvalidArgument, "is not BuildStarted");
        assert!(acks.is_empty());
        assert_eq!(
            stored_seq(srv.store.as_ref(), id),
            None,
            "nothing stored, not even the invocation"
        );
        // BuildStarted of another invocation.
        let (acks, end) = one_rpc(srv.addr, vec![request(id, 1, bep_event(&fixture_bep[0]))]).await;
        assert_refused(
            &end,
            tonic::Code::InvalidArgument,
            "differs from the stream's invocation_id",
        );
        assert!(acks.is_empty());
        assert_eq!(stored_seq(srv.store.as_ref(), id), None);

        // A bazel_event Any of another type.
        let id = "refuse-type-url";
        let bep = with_uuid(&fixture_bep, id);
        let mut reqs = requests(id, &bep, 1, 3);
        reqs.push(request(
            id,
            4,
            Event::BazelEvent(prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                value: bep[3].to_vec(),
            }),
        ));
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::InvalidArgument,
            "bazel_event has type \"type.googleapis.com/google.protobuf.Empty\"",
        );
        assert_eq!(ack_seqs(&acks), vec![1, 2, 3]);
        assert_stored_exactly(srv.store.as_ref(), id, &bep[..3], &[1, 2, 3], false);

        // Each refused invocation resumes correctly afterwards from where it stands.
        for id in [
            "refuse-gap",
            "refuse-backwards",
            "refuse-garbage",
            "refuse-type-url",
        ] {
            let bep = with_uuid(&fixture_bep, id);
            let (acks, end) = one_rpc(srv.addr, requests(id, &bep, 1, bep.len() + 1)).await;
            assert!(end.is_ok(), "{id}: {end:?}");
            assert_stored_exactly(srv.store.as_ref(), id, &bep, &ack_seqs(&acks), true);
            assert_complete(srv.store.as_ref(), id).await;
        }
        assert!(Metrics::get(&srv.metrics.stream_errors_invalid) >= 4);
        assert!(Metrics::get(&srv.metrics.stream_errors_sequence) >= 4);
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_identities_and_numbers_are_refused_before_anything_is_stored() {
    tokio::time::timeout(TEST_LIMIT, async {
        let fixture_bep = bep_records("remote-build");
        let srv = TestServer::builder().start().await;
        let first = |id: &str, seq: i64| {
            let bep = with_uuid(&fixture_bep, id);
            let mut r = requests(id, &bep, 1, 1).remove(0);
            r.ordered_build_event.as_mut().unwrap().sequence_number = seq;
            r
        };
        // An invocation id that would escape the journal directory.
        for id in ["../../etc/passwd", "a/b", ".hidden", &"x".repeat(200)] {
            let (acks, end) = one_rpc(srv.addr, vec![first(id, 1)]).await;
            assert_refused(&end, tonic::Code::InvalidArgument, "");
            assert!(acks.is_empty(), "{id}");
            assert!(
                srv.store.list(&Default::default()).unwrap().is_empty(),
                "{id}: nothing stored"
            );
        }
        assert!(!srv.store_dir().unwrap().join("etc").exists());
        // Sequence number 0, negative.
        let (acks, end) = one_rpc(srv.addr, vec![first("seq-zero", 0)]).await;
        assert_refused(
            &end,
            tonic::Code::FailedPrecondition,
            "sequence_number 0 is invalid",
        );
        assert!(acks.is_empty());
        let (acks, end) = one_rpc(srv.addr, vec![first("seq-negative", -3)]).await;
        assert_refused(
            &end,
            tonic::Code::InvalidArgument,
            "sequence_number -3 is negative",
        );
        assert!(acks.is_empty());
        // Two invocations on one RPC: the first one's events are kept, the second refused.
        let a = with_uuid(&fixture_bep, "two-a");
        let mut reqs = requests("two-a", &a, 1, 2);
        reqs.push(first("two-b", 1));
        let (acks, end) = one_rpc(srv.addr, reqs).await;
        assert_refused(
            &end,
            tonic::Code::InvalidArgument,
            "one RPC carries two invocations",
        );
        assert_eq!(ack_seqs(&acks), vec![1, 2]);
        assert_stored_exactly(srv.store.as_ref(), "two-a", &a[..2], &[1, 2], false);
        assert_eq!(stored_seq(srv.store.as_ref(), "two-b"), None);
        // No event at all, no stream id.
        let mut r = first("no-event", 1);
        r.ordered_build_event.as_mut().unwrap().event = None;
        let (_, end) = one_rpc(srv.addr, vec![r]).await;
        assert_refused(&end, tonic::Code::InvalidArgument, "has no event");
        let mut r = first("no-stream-id", 1);
        r.ordered_build_event.as_mut().unwrap().stream_id = None;
        let (_, end) = one_rpc(srv.addr, vec![r]).await;
        assert_refused(&end, tonic::Code::InvalidArgument, "has no stream_id");
        assert_eq!(
            srv.store.list(&Default::default()).unwrap().len(),
            1,
            "only two-a exists"
        );
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_the_size_limit_is_refused_and_the_server_keeps_serving() {
    tokio::time::timeout(TEST_LIMIT, async {
        const LIMIT: usize = 64 * 1024;
        let srv = TestServer::builder().max_message(LIMIT).start().await;
        let id = "too-large";
        let mut bep = synthetic_stream(id, 10);
        // Event 4: a progress event with 200 KiB of console output.
        bep[3] = encode_event(&bep::BuildEvent {
            id: Some(progress_id(2)),
            payload: Some(bep::build_event::Payload::Progress(bep::Progress {
                stdout: "x".repeat(200 * 1024),
                stderr: String::new(),
            })),
            ..Default::default()
        });
        let (acks, end) = one_rpc(srv.addr, requests(id, &bep, 1, bep.len() + 1)).await;
        let Err(s) = &end else {
            panic!(
                "a {} byte message was accepted with a {LIMIT} byte limit ({} acks)",
                bep[3].len(),
                acks.len()
            )
        };
        assert!(
            s.code() == tonic::Code::ResourceExhausted,
            "code {:?}: {}",
            s.code(),
            s.message()
        );
        assert!(
            s.message().contains("too large") || s.message().contains("larger than"),
            "{}",
            s.message()
        );
        let acked = ack_seqs(&acks);
        assert!(
            acked.len() <= 3 && acked.iter().copied().eq(1..=acked.len() as u64),
            "{acked:?}"
        );
        let stored = stored_seq(srv.store.as_ref(), id).unwrap_or(0);
        assert!(
            stored <= 3,
            "nothing at or after the large event is stored (stored up to {stored})"
        );
        assert_stored_exactly(
            srv.store.as_ref(),
            id,
            &bep[..stored as usize],
            &acked,
            false,
        );

        // Too large as the very first message: refused, the invocation never exists.
        let huge_first = "too-large-first";
        let mut big = synthetic_stream(huge_first, 5);
        let mut started = bep::BuildEvent::decode(&big[0][..]).unwrap();
        if let Some(bep::build_event::Payload::Started(s)) = started.payload.as_mut() {
            s.options_description = "y".repeat(100 * 1024);
        }
        big[0] = encode_event(&started);
        let (acks, end) = one_rpc(srv.addr, requests(huge_first, &big, 1, 6)).await;
        assert_refused(&end, tonic::Code::ResourceExhausted, "too large");
        assert!(acks.is_empty());
        assert_eq!(stored_seq(srv.store.as_ref(), huge_first), None);

        // Other streams are served as before, concurrently and afterwards.
        let other = "after-too-large";
        let small = synthetic_stream(other, 500);
        let report = replay(
            small.clone(),
            &opts(&srv.target(), other, Faults::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_acked_once_in_order(&report, 501);
        assert_stored_exactly(srv.store.as_ref(), other, &small, &report.acked, true);
        assert_complete(srv.store.as_ref(), other).await;
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_journal_cannot_hold_is_resource_exhausted_at_the_default_limit() {
    tokio::time::timeout(TEST_LIMIT, async {
        // The default gRPC limit and the journal's record limit are one limit:
        // an event above it is RESOURCE_EXHAUSTED, never UNAVAILABLE ("retry
        // later", which Bazel would re-upload in vain).
        let srv = TestServer::builder().start().await;
        for (i, size) in [(64 << 20) + 4096, 96 << 20].into_iter().enumerate() {
            let id = format!("event-too-large-{i}");
            let mut bep = synthetic_stream(&id, 10);
            bep[3] = encode_event(&bep::BuildEvent {
                id: Some(progress_id(2)),
                payload: Some(bep::build_event::Payload::Progress(bep::Progress {
                    stdout: "x".repeat(size),
                    stderr: String::new(),
                })),
                ..Default::default()
            });
            let (acks, end) = one_rpc(srv.addr, requests(&id, &bep, 1, bep.len() + 1)).await;
            let Err(s) = &end else {
                panic!("a {size} byte event was accepted ({} acks)", acks.len())
            };
            assert_eq!(
                s.code(),
                tonic::Code::ResourceExhausted,
                "{size}: {}",
                s.message()
            );
            let acked = ack_seqs(&acks);
            assert!(
                acked.iter().copied().eq(1..=acked.len() as u64) && acked.len() <= 3,
                "{acked:?}"
            );
            let stored = stored_seq(srv.store.as_ref(), &id).unwrap_or(0);
            assert!(
                stored <= 3,
                "nothing from the large event on is stored ({stored})"
            );
        }
        // The server keeps serving.
        let other = "after-event-too-large";
        let small = synthetic_stream(other, 50);
        let report = replay(
            small.clone(),
            &opts(&srv.target(), other, Faults::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_acked_once_in_order(&report, 51);
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_client_stops_on_a_final_refusal_and_retries_nothing() {
    tokio::time::timeout(TEST_LIMIT, async {
        let srv = TestServer::builder().start().await;
        let bep = bep_records("remote-build");
        // Replaying the stream without its BuildStarted: refused at event 1, final.
        let id = "replay-refused";
        let err = replay(
            bep[1..].to_vec(),
            &opts(&srv.target(), id, Faults::default()),
        )
        .await
        .expect_err("refused");
        match err {
            ReplayError::Refused { code, report, .. } => {
                assert_eq!(code, tonic::Code::InvalidArgument);
                assert_eq!(report.rpcs, 1, "a final code is not retried");
                assert!(report.acked.is_empty());
            }
            other => panic!("expected Refused, got {other}"),
        }
        assert_eq!(stored_seq(srv.store.as_ref(), id), None);
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 6. Concurrency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_invocations_all_complete_and_exact() {
    tokio::time::timeout(TEST_LIMIT, async {
        let srv = TestServer::builder().start().await;
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let id = format!("concurrent-{i:02}-7c9e6679-7425-40de-944b");
            let bep = synthetic_stream(&id, 1_000 + 37 * i as usize);
            // A third of them also lose their connection and some acks.
            let faults = if i % 3 == 0 {
                Faults {
                    disconnect_after: vec![1 + i * 7, 400],
                    resend_acked: i % 4,
                }
            } else {
                Faults::default()
            };
            let o = opts(&srv.target(), &id, faults);
            tasks.push(tokio::spawn(async move {
                let r = replay(bep.clone(), &o).await;
                (id, bep, r)
            }));
        }
        for t in tasks {
            let (id, bep, r) = t.await.unwrap();
            let report = r.unwrap_or_else(|e| panic!("{id}: {e}"));
            let mut distinct = report.acked.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                distinct,
                (1..=bep.len() as u64 + 1).collect::<Vec<_>>(),
                "{id}: every event acked"
            );
            assert_stored_exactly(srv.store.as_ref(), &id, &bep, &report.acked, true);
            assert_complete(srv.store.as_ref(), &id).await;
        }
        let listed = srv
            .store
            .list(&proof_store::ListFilter {
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(listed.len(), 32);
        assert!(listed.iter().all(|r| r.state.complete));
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------
// 7. Lifecycle events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_time_out_of_range_is_invalid_argument_and_the_server_keeps_serving() {
    tokio::time::timeout(TEST_LIMIT, async {
        let srv = TestServer::builder().start().await;
        let lifecycle: Vec<PublishLifecycleEventRequest> =
            delimited_records(&fixture("remote-build", "bes/lifecycle.bin"))
                .iter()
                .map(|r| PublishLifecycleEventRequest::decode(&r[..]).unwrap())
                .collect();
        let mut client = PublishBuildEventClient::new(channel(srv.addr).await);
        for seconds in [i64::MAX, i64::MIN, i64::MAX / 1000 + 1] {
            let mut r = lifecycle[0].clone();
            let ev = r.build_event.as_mut().unwrap().event.as_mut().unwrap();
            ev.event_time = Some(prost_types::Timestamp { seconds, nanos: 0 });
            let st = client
                .publish_lifecycle_event(r)
                .await
                .expect_err("a time that does not fit in milliseconds is refused");
            assert_eq!(st.code(), tonic::Code::InvalidArgument, "{seconds}: {st:?}");
            assert!(st.message().contains("event_time"), "{}", st.message());
        }
        client
            .publish_lifecycle_event(lifecycle[0].clone())
            .await
            .expect("the server keeps serving");
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_before_during_and_after_duplicated_are_recorded_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        let srv = TestServer::builder().start().await;
        let lifecycle: Vec<PublishLifecycleEventRequest> =
            delimited_records(&fixture("remote-build", "bes/lifecycle.bin"))
                .iter()
                .map(|r| PublishLifecycleEventRequest::decode(&r[..]).unwrap())
                .collect();
        assert_eq!(
            lifecycle.len(),
            4,
            "enqueued, attempt started, attempt finished, build finished"
        );
        // The tool stream as Bazel sent it (same build_id as the lifecycle events).
        let stream: Vec<PublishBuildToolEventStreamRequest> =
            delimited_records(&fixture("remote-build", "bes/build_tool_events.bin"))
                .iter()
                .map(|r| PublishBuildToolEventStreamRequest::decode(&r[..]).unwrap())
                .collect();
        let id = stream[0]
            .ordered_build_event
            .as_ref()
            .unwrap()
            .stream_id
            .as_ref()
            .unwrap()
            .invocation_id
            .clone();
        let client = PublishBuildEventClient::new(channel(srv.addr).await);
        let send = |r: PublishLifecycleEventRequest| {
            let mut c = client.clone();
            async move { c.publish_lifecycle_event(r).await }
        };
        // A duplicate with a later event time: if it were recorded, the time would change.
        let later = |r: &PublishLifecycleEventRequest| {
            let mut r = r.clone();
            let ev = r.build_event.as_mut().unwrap().event.as_mut().unwrap();
            ev.event_time = Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            });
            r
        };
        // Before the stream: each twice, and once more with another time.
        for r in &lifecycle[..2] {
            send(r.clone()).await.expect("lifecycle before the stream");
            send(r.clone()).await.expect("duplicate lifecycle");
            send(later(r)).await.expect("retried lifecycle");
        }
        // During: half the stream, the attempt-finished lifecycle (twice), the rest.
        let (acks, end) = one_rpc(srv.addr, stream[..40].to_vec()).await;
        assert!(end.is_ok() && acks.len() == 40, "{end:?}");
        send(lifecycle[0].clone())
            .await
            .expect("enqueued again, mid-stream");
        send(lifecycle[2].clone())
            .await
            .expect("attempt finished mid-stream");
        send(lifecycle[2].clone())
            .await
            .expect("attempt finished mid-stream, again");
        let (acks, end) = one_rpc(srv.addr, stream[40..].to_vec()).await;
        assert!(end.is_ok() && acks.len() == stream.len() - 40, "{end:?}");
        assert_complete(srv.store.as_ref(), &id).await;
        // After: all of them again, build finished twice and late.
        for r in &lifecycle {
            send(r.clone()).await.expect("lifecycle after the stream");
            send(later(r))
                .await
                .expect("late duplicate after the stream");
        }
        send(lifecycle[3].clone())
            .await
            .expect("build finished again");
        assert_eq!(Metrics::get(&srv.metrics.lifecycle_events), 6 + 3 + 8 + 1);

        let rec = srv.store.get(&id).unwrap().expect("record");
        let lc = &rec.lifecycle;
        let time_of = |r: &PublishLifecycleEventRequest| {
            let t = r
                .build_event
                .as_ref()
                .unwrap()
                .event
                .as_ref()
                .unwrap()
                .event_time
                .unwrap();
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
        };
        assert_eq!(
            lc.attempt_started_at_ms,
            Some(time_of(&lifecycle[1])),
            "{lc:?}"
        );
        assert_eq!(lc.attempt_number, Some(1));
        assert_eq!(
            lc.attempt_finished_at_ms,
            Some(time_of(&lifecycle[2])),
            "{lc:?}"
        );
        assert_eq!(
            lc.attempt_finished_status.as_deref(),
            Some("COMMAND_SUCCEEDED"),
            "{lc:?}"
        );
        assert_eq!(
            lc.build_enqueued_at_ms,
            Some(time_of(&lifecycle[0])),
            "{lc:?}"
        );
        assert_eq!(
            lc.build_finished_at_ms,
            Some(time_of(&lifecycle[3])),
            "{lc:?}"
        );
        assert!(rec.state.complete);
        // Lifecycle events never enter the journal.
        let recs = journal(srv.store.as_ref(), &id);
        assert_eq!(recs.len(), stream.len());
        assert!(recs.iter().all(|r| r.kind != RecordKind::Other));
        let bep = delimited_records(&fixture("remote-build", "bep.bin"));
        assert_eq!(
            multiset(stored_events(srv.store.as_ref(), &id)),
            multiset(bep)
        );
        srv.stop().await;
    })
    .await
    .expect("test finished in time");
}
