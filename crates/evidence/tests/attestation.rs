//! The executor section of the evidence and the cross-checks, on the real
//! Bazel 4.2.3 captures plus executor ledgers built with prost the way the
//! BuildGrid adapter stores them (ListOperations pages, CAS blobs), so each
//! rule is exercised on its own: a blob that does not match its digest, a
//! cached operation that is not an execution, the same operation listed
//! under two instances, fewer executions than the client claims, an image
//! other than the one asked for, an unreachable executor, and the issue #10
//! forgery against the run's own execution log.

use std::path::PathBuf;

use proof_evidence::{EvidenceBuilder, ImageSource};
use proof_proto::bep::{build_event, file, BuildEvent};
use proof_proto::ledger::{ledger_record, Blob, Header, LedgerRecord, OperationsPage, Unreachable};
use proof_proto::longrunning::{operation, ListOperationsResponse, Operation};
use proof_proto::reapi::{
    platform, Action, ActionResult, Command, Digest, ExecuteOperationMetadata, ExecuteResponse,
    ExecutedActionMetadata, Platform,
};
use proof_stream::delimited::{encode_varint, split_delimited};
use prost::Message;
use sha2::Digest as _;

const PINNED: &str =
    "docker://example.invalid/worker@sha256:8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217";
const EXECUTOR: &str = "grpc://127.0.0.1:50051";

fn read(scenario: &str, file: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn events(scenario: &str) -> Vec<Vec<u8>> {
    split_delimited(&read(scenario, "bep.bin"), usize::MAX)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

fn uuid(events: &[Vec<u8>]) -> String {
    let mut b = EvidenceBuilder::new();
    for e in events {
        b.push_event(e).unwrap();
    }
    b.finish().unwrap().invocation_id
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest {
        hash: hex::encode(sha2::Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

fn any(name: &str, m: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/build.bazel.remote.execution.v2.{name}"),
        value: m.encode_to_vec(),
    }
}

fn push(out: &mut Vec<u8>, r: ledger_record::Record) {
    let b = LedgerRecord { record: Some(r) }.encode_to_vec();
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(&b);
}

/// One action the executor ran (or served from cache): its Action (no
/// platform, as Bazel 4.x sends it) and Command (with `image`).
struct Act {
    action: Vec<u8>,
    command: Vec<u8>,
    cached: bool,
    exit_code: i32,
}

fn act(i: usize, image: &str, cached: bool) -> Act {
    let command = Command {
        arguments: vec!["/bin/bash".into(), "-c".into(), format!("echo {i}")],
        platform: Some(Platform {
            properties: vec![platform::Property {
                name: "container-image".into(),
                value: image.into(),
            }],
        }),
        ..Command::default()
    }
    .encode_to_vec();
    let action = Action {
        command_digest: Some(digest_of(&command)),
        input_root_digest: Some(digest_of(format!("root {i}").as_bytes())),
        ..Action::default()
    }
    .encode_to_vec();
    Act {
        action,
        command,
        cached,
        exit_code: 0,
    }
}

fn ts(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    })
}

/// A BuildGrid-shaped ledger: the operations listed under `instances`
/// (each instance lists all of them, as BuildGrid's instance pools do),
/// then the Action and Command blobs of the executed ones.
fn ledger(invocation: &str, acts: &[Act], instances: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    push(
        &mut out,
        ledger_record::Record::Header(Header {
            executor: EXECUTOR.into(),
            adapter: "buildgrid".into(),
            invocation_id: invocation.into(),
            instance_names: instances.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    );
    for inst in instances {
        let operations = acts
            .iter()
            .enumerate()
            .map(|(i, a)| Operation {
                name: format!("{inst}/op-{i}"),
                metadata: Some(any(
                    "ExecuteOperationMetadata",
                    &ExecuteOperationMetadata {
                        stage: 4,
                        action_digest: Some(digest_of(&a.action)),
                        ..Default::default()
                    },
                )),
                done: true,
                result: Some(operation::Result::Response(any(
                    "ExecuteResponse",
                    &ExecuteResponse {
                        result: Some(ActionResult {
                            exit_code: a.exit_code,
                            execution_metadata: Some(ExecutedActionMetadata {
                                worker: "bot-1".into(),
                                queued_timestamp: ts(1_700_000_000 + i as i64),
                                worker_start_timestamp: ts(1_700_000_001 + i as i64),
                                worker_completed_timestamp: ts(1_700_000_002 + i as i64),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        cached_result: a.cached,
                        ..Default::default()
                    },
                ))),
            })
            .collect();
        push(
            &mut out,
            ledger_record::Record::Page(OperationsPage {
                instance_name: inst.to_string(),
                filter: format!("invocation_id={invocation}"),
                response: Some(ListOperationsResponse {
                    operations,
                    next_page_token: String::new(),
                }),
                ..Default::default()
            }),
        );
    }
    for a in acts.iter().filter(|a| !a.cached) {
        for data in [&a.action, &a.command] {
            push(
                &mut out,
                ledger_record::Record::Blob(Blob {
                    instance_name: instances[0].to_string(),
                    digest: Some(digest_of(data)),
                    data: data.clone(),
                    ..Default::default()
                }),
            );
        }
    }
    out
}

fn derive(
    events: &[Vec<u8>],
    exec_log: Option<&[u8]>,
    ledger: Option<&[u8]>,
) -> proof_evidence::Evidence {
    let mut b = EvidenceBuilder::new();
    for e in events {
        b.push_event(e).unwrap();
    }
    if let Some(l) = exec_log {
        b.push_exec_log(l).unwrap();
    }
    if let Some(l) = ledger {
        b.push_executor_ledger(l).unwrap();
    }
    b.finish().unwrap()
}

#[test]
fn the_executor_section_counts_executions_workers_and_images_from_the_ledger() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let mut acts: Vec<Act> = (0..8).map(|i| act(i, PINNED, false)).collect();
    acts.push(act(8, PINNED, true));
    let l = ledger(&id, &acts, &["", "main"]);
    let ev = derive(&evs, None, Some(&l));
    let a = ev.attestation.as_ref().unwrap();
    assert!(a.reachable);
    // Listed under both instances, counted once.
    assert_eq!(a.operations, 9);
    assert_eq!((a.executed, a.cached, a.unfinished), (8, 1, 0));
    assert_eq!(a.workers, ["bot-1"]);
    assert_eq!(a.images.len(), 1);
    assert_eq!(a.images[0].image, PINNED);
    assert!(a.images[0].pinned);
    assert_eq!(a.images[0].executed_actions, 8);
    assert!(a.blob_problems.is_empty(), "{:?}", a.blob_problems);
    assert_eq!(a.first_queued_at.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(a.last_completed_at.as_deref(), Some("2023-11-14T22:13:29Z"));
    // The executor's image replaces whatever the client asked for.
    assert_eq!(ev.worker_images.len(), 1);
    assert_eq!(ev.worker_images[0].source, ImageSource::Executor);
    assert_eq!(ev.worker_images[0].remote_spawns, Some(8));
    // The stream claims 8 remote executions; the executor ran 8.
    assert_eq!(ev.processes.remote_executions, Some(8));
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);
}

#[test]
fn a_blob_that_does_not_match_its_digest_names_no_image() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let acts: Vec<Act> = (0..8).map(|i| act(i, PINNED, false)).collect();
    let mut l = ledger(&id, &acts, &[""]);
    // Swap one Command's bytes for another's, keeping its digest.
    let recs: Vec<Vec<u8>> = split_delimited(&l, usize::MAX)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    l.clear();
    for (i, r) in recs.into_iter().enumerate() {
        let mut rec = LedgerRecord::decode(r.as_slice()).unwrap();
        if i == 3 {
            let Some(ledger_record::Record::Blob(b)) = &mut rec.record else {
                panic!("record 3 is a blob")
            };
            b.data = act(99, "docker://evil/worker:latest", false).command;
        }
        push(&mut l, rec.record.unwrap());
    }
    let ev = derive(&evs, None, Some(&l));
    let a = ev.attestation.unwrap();
    assert_eq!(a.executed, 8);
    assert_eq!(a.images[0].executed_actions, 7);
    assert_eq!(a.blob_problems.len(), 1, "{:?}", a.blob_problems);
    assert!(
        a.blob_problems[0].contains("does not match its digest"),
        "{:?}",
        a.blob_problems
    );
    assert!(!a.images.iter().any(|i| i.image.contains("evil")));
}

#[test]
fn fewer_executions_than_claimed_contradict_the_stream() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let acts: Vec<Act> = (0..3).map(|i| act(i, PINNED, false)).collect();
    let ev = derive(&evs, None, Some(&ledger(&id, &acts, &[""])));
    let c: Vec<&str> = ev
        .contradictions
        .iter()
        .map(|c| c.detail.as_str())
        .collect();
    assert_eq!(ev.contradictions.len(), 1, "{c:?}");
    let x = &ev.contradictions[0];
    assert_eq!(x.fact, "remote_executions");
    assert_eq!((x.claimed.as_str(), x.shown.as_str()), ("8", "3"));
    assert!(
        x.detail.contains("claims 8 remote executions")
            && x.detail.contains(&format!(
                "the executor {EXECUTOR} ran 3 for invocation {id}"
            )),
        "{}",
        x.detail
    );
}

#[test]
fn an_unreachable_executor_is_recorded_and_contradicts_nothing() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let mut l = Vec::new();
    push(
        &mut l,
        ledger_record::Record::Header(Header {
            executor: EXECUTOR.into(),
            adapter: "buildgrid".into(),
            invocation_id: id.clone(),
            instance_names: vec![String::new()],
            ..Default::default()
        }),
    );
    push(
        &mut l,
        ledger_record::Record::Unreachable(Unreachable {
            reason: "cannot connect: connection refused".into(),
            attempts: 5,
            waited_ms: 15_000,
        }),
    );
    let ev = derive(&evs, None, Some(&l));
    let a = ev.attestation.unwrap();
    assert!(!a.reachable);
    assert_eq!(
        a.unreachable.as_deref(),
        Some("cannot connect: connection refused (5 attempt(s) over 15000 ms)")
    );
    assert_eq!(a.executed, 0);
    assert!(ev.contradictions.is_empty());
}

/// Issue #10: the local-only capture with its process summary edited to
/// "8 remote", against the run's own execution log (8 linux-sandbox).
#[test]
fn a_forged_process_summary_contradicts_the_execution_log_in_the_artifact() {
    let forged: Vec<Vec<u8>> = events("local-only")
        .into_iter()
        .map(|bytes| {
            let mut ev = BuildEvent::decode(bytes.as_slice()).unwrap();
            match ev.payload.as_mut() {
                Some(build_event::Payload::Progress(p)) => {
                    p.stderr = p.stderr.replace("8 linux-sandbox", "8 remote");
                }
                Some(build_event::Payload::BuildToolLogs(logs)) => {
                    for log in &mut logs.log {
                        if let Some(file::File::Contents(c)) = &mut log.file {
                            *c = String::from_utf8_lossy(c)
                                .replace("8 linux-sandbox", "8 remote")
                                .into_bytes();
                        }
                    }
                }
                _ => {}
            }
            ev.encode_to_vec()
        })
        .collect();
    let log = read("local-only", "execution_log.bin");
    let ev = derive(&forged, Some(&log), None);
    assert_eq!(ev.processes.remote_executions, Some(8));
    assert_eq!(ev.contradictions.len(), 1, "{:?}", ev.contradictions);
    let c = &ev.contradictions[0];
    assert_eq!(c.claim_source, "the BEP's process stats log");
    assert_eq!(c.other_source, "the execution log");
    assert_eq!((c.claimed.as_str(), c.shown.as_str()), ("8", "0"));
    // The genuine capture and its log agree.
    let ev = derive(&events("local-only"), Some(&log), None);
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);
    let ev = derive(
        &events("remote-build"),
        Some(&read("remote-build", "execution_log.bin")),
        None,
    );
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);
}

#[test]
fn an_image_other_than_the_one_asked_for_is_a_contradiction() {
    // The remote-build capture asks for the rig's pinned image
    // (--remote_default_exec_properties); the executor ran another one.
    let evs = events("remote-build");
    let id = uuid(&evs);
    const ASKED: &str = "docker://example.invalid/worker@sha256:8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217";
    const RAN: &str = "docker://other/worker@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let acts: Vec<Act> = (0..8).map(|i| act(i, RAN, false)).collect();
    let ev = derive(&evs, None, Some(&ledger(&id, &acts, &[""])));
    assert_eq!(ev.contradictions.len(), 1, "{:?}", ev.contradictions);
    let c = &ev.contradictions[0];
    assert_eq!(c.fact, "worker_image");
    assert_eq!((c.claimed.as_str(), c.shown.as_str()), (ASKED, RAN));
    assert_eq!(ev.worker_images.len(), 1);
    assert_eq!(ev.worker_images[0].source, ImageSource::Executor);
    assert_eq!(ev.worker_images[0].image, RAN);
    // The same actions on the image asked for: no contradiction.
    let acts: Vec<Act> = (0..8).map(|i| act(i, ASKED, false)).collect();
    let ev = derive(&evs, None, Some(&ledger(&id, &acts, &[""])));
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);
}

/// Issue 20, finding 11: an action the executor ran that exited nonzero is
/// not an execution.
#[test]
fn failed_actions_are_not_executions() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let mut acts: Vec<Act> = (0..8).map(|i| act(i, PINNED, false)).collect();
    acts[0].exit_code = 1;
    acts[5].exit_code = 137;
    let ev = derive(&evs, None, Some(&ledger(&id, &acts, &[""])));
    let a = ev.attestation.as_ref().unwrap();
    assert_eq!((a.operations, a.executed, a.failed), (8, 6, 2));
    assert_eq!(a.images[0].executed_actions, 6);
    assert_eq!(ev.contradictions.len(), 1, "{:?}", ev.contradictions);
    let c = &ev.contradictions[0];
    assert_eq!(c.fact, "remote_executions");
    assert_eq!((c.claimed.as_str(), c.shown.as_str()), ("8", "6"));
}

/// Issue 20, finding 11: the client's --remote_executor is compared with the
/// endpoint the server asked (normalised: scheme, case, trailing '/').
#[test]
fn the_clients_executor_is_compared_with_the_one_asked() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let acts: Vec<Act> = (0..8).map(|i| act(i, PINNED, false)).collect();
    let relabel = |executor: &str, aliases: &[&str]| {
        let l = ledger(&id, &acts, &[""]);
        let mut recs = split_delimited(&l, usize::MAX).unwrap().into_iter();
        let mut out = Vec::new();
        let mut h = LedgerRecord::decode(recs.next().unwrap()).unwrap();
        let Some(ledger_record::Record::Header(hd)) = &mut h.record else {
            panic!("the header comes first")
        };
        hd.executor = executor.into();
        hd.endpoint_aliases = aliases.iter().map(|s| s.to_string()).collect();
        push(&mut out, h.record.unwrap());
        for r in recs {
            push(&mut out, LedgerRecord::decode(r).unwrap().record.unwrap());
        }
        derive(&evs, None, Some(&out))
    };
    let ev = relabel("grpc://10.0.0.9:50051", &[]);
    assert_eq!(ev.contradictions.len(), 1, "{:?}", ev.contradictions);
    let c = &ev.contradictions[0];
    assert_eq!(c.fact, "executor_endpoint");
    assert_eq!(
        (c.claimed.as_str(), c.shown.as_str()),
        (EXECUTOR, "grpc://10.0.0.9:50051")
    );
    for (asked, aliases) in [
        ("GRPC://127.0.0.1:50051/", &[][..]),
        ("grpcs://127.0.0.1:50051", &[]),
        ("grpc://10.0.0.9:50051", &["127.0.0.1:50051"]),
    ] {
        let ev = relabel(asked, aliases);
        assert!(
            ev.contradictions.is_empty(),
            "{asked}: {:?}",
            ev.contradictions
        );
    }
}

/// Issue 20, finding 4: with a ledger, actions the executor ran without an
/// image leave the client's claim unused, and contradict it.
#[test]
fn actions_without_an_image_contradict_the_claimed_image() {
    let evs = events("remote-build");
    let id = uuid(&evs);
    let mut acts: Vec<Act> = (0..8).map(|i| act(i, PINNED, false)).collect();
    acts[3] = act(3, "", false);
    // A Command with no platform at all.
    let command = Command {
        arguments: vec!["/bin/true".into()],
        ..Command::default()
    }
    .encode_to_vec();
    acts[3].action = Action {
        command_digest: Some(digest_of(&command)),
        ..Action::default()
    }
    .encode_to_vec();
    acts[3].command = command;
    let ev = derive(&evs, None, Some(&ledger(&id, &acts, &[""])));
    let a = ev.attestation.as_ref().unwrap();
    assert_eq!((a.executed, a.executed_without_image), (8, 1));
    assert_eq!(ev.all_remote_images_pinned, Some(false));
    assert!(ev
        .worker_images
        .iter()
        .all(|w| w.source == ImageSource::Executor));
    assert_eq!(ev.contradictions.len(), 1, "{:?}", ev.contradictions);
    assert_eq!(ev.contradictions[0].fact, "worker_image");
    assert!(ev.contradictions[0]
        .shown
        .contains("no container-image (1 action(s))"));
}
