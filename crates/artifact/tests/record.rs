mod common;

use common::*;
use proof_artifact::{record, RecordError};
use proof_proto::bep::{build_event, build_event_id, BuildEvent, BuildEventId, BuildStarted};
use prost::Message;

fn started(uuid: &str) -> Vec<u8> {
    BuildEvent {
        id: Some(BuildEventId {
            id: Some(build_event_id::Id::Started(
                build_event_id::BuildStartedId {},
            )),
        }),
        payload: Some(build_event::Payload::Started(BuildStarted {
            uuid: uuid.into(),
            command: "build".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn event_source_errors_name_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(started("abc")),
        Err(std::io::Error::other("connection reset")),
    ];
    let err = record(events, None, &key(1), dir.path()).unwrap_err();
    assert!(matches!(err, RecordError::Events { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
    // Nothing is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn invalid_events_and_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |v: Vec<u8>| Ok::<_, std::io::Error>(v);
    let err = record([ok(vec![0xff, 0xff])], None, &key(1), dir.path()).unwrap_err();
    assert!(matches!(err, RecordError::Evidence(_)), "{err}");
    let err = record([ok(started("../../etc/passwd"))], None, &key(1), dir.path()).unwrap_err();
    assert!(matches!(err, RecordError::BadInvocationId(_)), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let missing = dir.path().join("no-such-log");
    let err = record([ok(started("abc"))], Some(&missing), &key(1), dir.path()).unwrap_err();
    assert!(matches!(err, RecordError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no-such-log"), "{err}");
}

#[test]
fn a_minimal_stream_records_and_verifies_but_fails_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = record(
        [Ok::<_, std::io::Error>(started("abc-1"))],
        None,
        &key(1),
        dir.path(),
    )
    .unwrap();
    assert_eq!(out.path.file_name().unwrap(), "abc-1.proof.tar");
    let report = verify_bytes(&std::fs::read(&out.path).unwrap(), &key(1));
    assert!(
        report.checks[..4].iter().all(|c| c.ok),
        "{:?}",
        report.checks
    );
    assert!(!report.check("build_succeeded").unwrap().ok);
    // Recording the same invocation again replaces the artifact atomically.
    let again = record(
        [Ok::<_, std::io::Error>(started("abc-1"))],
        None,
        &key(2),
        dir.path(),
    )
    .unwrap();
    assert_eq!(again.path, out.path);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(verify_bytes(&std::fs::read(&out.path).unwrap(), &key(2)).checks[1].ok);
}
