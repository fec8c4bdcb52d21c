//! Text from the stream (patterns, progress lines, metadata) is escaped on
//! the pages; an invocation without BuildStarted is reported, not a crash.

mod common;

use std::sync::Arc;

use common::*;
use proof_proto::bep::{self, build_event, build_event_id, BuildEvent, BuildEventId};
use proof_store::{FsStore, Store};
use prost::Message;

fn event(id: build_event_id::Id, payload: build_event::Payload, last: bool) -> Vec<u8> {
    BuildEvent {
        id: Some(BuildEventId { id: Some(id) }),
        payload: Some(payload),
        last_message: last,
        ..BuildEvent::default()
    }
    .encode_to_vec()
}

const EVIL: &str = "<script>alert(1)</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_text_is_escaped_and_unanalyzable_streams_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let id = "evil-0001";
    let events = vec![
        event(
            build_event_id::Id::Started(build_event_id::BuildStartedId {}),
            build_event::Payload::Started(bep::BuildStarted {
                uuid: id.into(),
                start_time_millis: 1_700_000_000_000,
                command: format!("build{EVIL}"),
                ..Default::default()
            }),
            false,
        ),
        event(
            build_event_id::Id::Pattern(build_event_id::PatternExpandedId {
                pattern: vec![format!("//x:{EVIL}")],
            }),
            build_event::Payload::Expanded(bep::PatternExpanded::default()),
            false,
        ),
        event(
            build_event_id::Id::Progress(build_event_id::ProgressId { opaque_count: 1 }),
            build_event::Payload::Progress(bep::Progress {
                stderr: format!("ERROR: RESOURCE_EXHAUSTED: {EVIL} \"quoted\" & more\n"),
                ..Default::default()
            }),
            false,
        ),
        event(
            build_event_id::Id::BuildFinished(build_event_id::BuildFinishedId {}),
            build_event::Payload::Finished(bep::BuildFinished {
                exit_code: Some(bep::build_finished::ExitCode {
                    name: "REMOTE_ERROR".into(),
                    code: 34,
                }),
                finish_time_millis: 1_700_000_005_000,
                ..Default::default()
            }),
            true,
        ),
    ];
    store_events(&*store, id, Some(EVIL), 1, &events);
    // A stream that never sent BuildStarted.
    let progress_only = vec![event(
        build_event_id::Id::Progress(build_event_id::ProgressId { opaque_count: 1 }),
        build_event::Payload::Progress(bep::Progress::default()),
        true,
    )];
    store_events(&*store, "no-start-0002", None, 2, &progress_only);
    let s = serve_store(store, dir, None).await;

    for path in ["/invocations", &format!("/invocations/{id}"), "/fleet"] {
        let (st, ctype, body) = get(s.addr, path).await;
        assert_eq!(st, 200, "{path}: {body}");
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(
            !body.contains("<script"),
            "{path} has unescaped stream text:\n{body}"
        );
        assert!(!body.contains("alert(1)</"), "{path}");
    }
    let (_, _, page) = get(s.addr, &format!("/invocations/{id}")).await;
    assert!(
        page.contains("//x:&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains(r#"\&quot;quoted\&quot; &amp; more"#),
        "{page}"
    );
    // Quota outranks the REMOTE_ERROR exit code (both are findings).
    assert!(
        page.contains("<code class=\"cause\">quota</code>"),
        "{page}"
    );
    assert!(page.contains("<code>backend_health</code>"), "{page}");

    let (st, v) = get_json(s.addr, "/api/v1/invocations/no-start-0002/kpis").await;
    assert_eq!(st, 422);
    assert!(v["error"].as_str().unwrap().contains("BuildStarted"), "{v}");
    let (st, _, page) = get(s.addr, "/invocations/no-start-0002").await;
    assert_eq!(st, 200);
    assert!(page.contains("Cannot be analyzed yet"), "{page}");
    let (_, f) = get_json(s.addr, "/api/v1/fleet").await;
    assert_eq!(f["invocations"], 1);
    assert_eq!(f["skipped"][0]["invocation_id"], "no-start-0002");
    let (st, _, page) = get(s.addr, "/invocations/not-there").await;
    assert_eq!(st, 404);
    assert!(page.contains("No invocation <code>not-there</code>"));
}
