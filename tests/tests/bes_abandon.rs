//! A stream that Bazel abandons mid-way (it died, or gave up retrying) is
//! finalized as incomplete after `abandon_after`, and a late resume is refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proof_e2e::{delimited_records, fixture, stored_events};
use proof_server::replay::{replay, Faults, ReplayError, ReplayOptions};
use proof_testkit::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_is_finalized_incomplete_and_refuses_a_late_resume() {
    let server = TestServer::builder()
        .abandon_after(Duration::from_millis(600))
        .start()
        .await;
    let store = server.store.clone();

    let bep: Vec<Bytes> = delimited_records(&fixture("remote-build", "bep.bin"))
        .into_iter()
        .map(Bytes::from)
        .collect();
    let id = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
    let opts = |faults: Faults, finish: bool| ReplayOptions {
        target: server.target(),
        invocation_id: id.into(),
        build_id: "abandon-build".into(),
        project_id: String::new(),
        headers: Vec::new(),
        max_retries: 0,
        backoff: Duration::from_millis(10),
        faults,
        finish,
    };
    // Bazel sends 30 events, every one acked, and is never heard of again.
    let first = replay(bep[..30].to_vec(), &opts(Faults::default(), false))
        .await
        .unwrap();
    assert_eq!(first.acked, (1..=30).collect::<Vec<_>>());

    let t = Instant::now();
    let rec = loop {
        let rec = store.get(id).unwrap().expect("the invocation was stored");
        if rec.state.finalized {
            break rec;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "not finalized within 15 s: {:?}",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "finalized before the stream was idle long enough"
    );
    assert!(!rec.state.complete);
    let reason = rec.state.incomplete_reason.unwrap();
    assert!(
        reason.contains("BuildFinished") && reason.contains("ComponentStreamFinished"),
        "{reason}"
    );
    // What was stored is the stream's prefix, byte for byte.
    let stored = stored_events(store.as_ref(), id);
    assert_eq!(stored.len(), 30);
    assert!(stored.iter().zip(&bep).all(|(s, b)| s[..] == b[..]));

    // Bazel coming back later: the stored prefix is acked again, the first new
    // event is refused for good.
    let late = replay(bep.clone(), &opts(Faults::default(), true)).await;
    match late {
        Err(ReplayError::Refused {
            code,
            message,
            report,
        }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
            assert_eq!(report.acked, (1..=stored.len() as u64).collect::<Vec<_>>());
        }
        other => panic!("a late resume must be refused, got {other:?}"),
    }
    assert_eq!(
        stored_events(store.as_ref(), id).len(),
        stored.len(),
        "nothing more was stored"
    );
    server.stop().await;
}
