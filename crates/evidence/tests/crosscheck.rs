//! The execution log held against the executor's operations (issue 27,
//! item 4) on the real Bazel 4.2.3 capture `remote-build`: its BEP, its
//! execution log, and a ledger made of the executor's own answers to that
//! build, taken from the build's `remote_grpc.log` (each Execute call's
//! action digest and the real Operation the executor streamed back, its
//! ExecuteResponse bytes unchanged), listed as one ListOperations page the
//! way the BuildGrid adapter stores it.
//!
//! Key (a) (a spawn's action digest) has no real Bazel >= 5 log of a remote
//! build to run on; it is exercised on this real 4.2.3 log whose spawns are
//! given the action digests the executor reported for the operations that
//! produced their outputs (that is how the data below is made).

use std::path::PathBuf;

use proof_evidence::{Evidence, EvidenceBuilder};
use proof_proto::execlog::{Digest as LogDigest, SpawnExec};
use proof_proto::ledger::{ledger_record, Header, LedgerRecord, OperationsPage};
use proof_proto::longrunning::{operation, ListOperationsResponse, Operation};
use proof_proto::reapi::{ExecuteOperationMetadata, ExecuteResponse};
use proof_proto::remote_logging::{rpc_call_details, LogEntry};
use proof_stream::delimited::{encode_varint, split_delimited};
use prost::Message;

fn read(file: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3/remote-build")
        .join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn delimited(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        encode_varint(r.len() as u64, &mut out);
        out.extend_from_slice(&r);
    }
    out
}

fn invocation_id() -> String {
    let mut b = EvidenceBuilder::new();
    for e in split_delimited(&read("bep.bin"), usize::MAX).unwrap() {
        b.push_event(e).unwrap();
    }
    b.finish().unwrap().invocation_id
}

/// The executor's finished Execute answers in the build's gRPC log:
/// (action digest, the done Operation as the executor sent it).
fn executed() -> Vec<(LogDigest, Operation, Vec<String>)> {
    let mut out = Vec::new();
    for r in split_delimited(&read("remote_grpc.log"), usize::MAX).unwrap() {
        let e = LogEntry::decode(r).unwrap();
        let Some(rpc_call_details::Details::Execute(ex)) = e.details.and_then(|d| d.details) else {
            continue;
        };
        let d = ex.request.unwrap().action_digest.unwrap();
        let op = ex.responses.into_iter().rfind(|o| o.done).unwrap();
        let any = op.response.unwrap();
        let resp = ExecuteResponse::decode(any.value.as_slice()).unwrap();
        let paths = resp
            .result
            .unwrap()
            .output_files
            .into_iter()
            .map(|f| f.path)
            .collect();
        let metadata = ExecuteOperationMetadata {
            stage: 4,
            action_digest: Some(d.clone()),
            ..Default::default()
        };
        out.push((
            LogDigest {
                hash: d.hash,
                size_bytes: d.size_bytes,
                ..Default::default()
            },
            Operation {
                name: op.name,
                metadata: Some(prost_types::Any {
                    type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata".into(),
                    value: metadata.encode_to_vec(),
                }),
                done: true,
                result: Some(operation::Result::Response(prost_types::Any {
                    type_url: any.type_url,
                    value: any.value,
                })),
            },
            paths,
        ));
    }
    out
}

fn ledger(ops: Vec<Operation>) -> Vec<u8> {
    let id = invocation_id();
    let rec = |r| LedgerRecord { record: Some(r) }.encode_to_vec();
    delimited([
        rec(ledger_record::Record::Header(Header {
            executor: "grpc://127.0.0.1:50051".into(),
            adapter: "buildgrid".into(),
            invocation_id: id.clone(),
            instance_names: vec![String::new()],
            ..Default::default()
        })),
        rec(ledger_record::Record::Page(OperationsPage {
            filter: format!("invocation_id={id}"),
            response: Some(ListOperationsResponse {
                operations: ops,
                next_page_token: String::new(),
            }),
            ..Default::default()
        })),
    ])
}

fn spawns() -> Vec<SpawnExec> {
    split_delimited(&read("execution_log.bin"), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| SpawnExec::decode(r).unwrap())
        .collect()
}

fn evidence(log: &[SpawnExec], ops: Vec<Operation>) -> Evidence {
    let mut b = EvidenceBuilder::new();
    for e in split_delimited(&read("bep.bin"), usize::MAX).unwrap() {
        b.push_event(e).unwrap();
    }
    b.push_exec_log(&delimited(log.iter().map(Message::encode_to_vec))[..])
        .unwrap();
    b.push_executor_ledger(&ledger(ops)[..]).unwrap();
    b.finish().unwrap()
}

fn facts(ev: &Evidence) -> Vec<&str> {
    ev.contradictions.iter().map(|c| c.fact.as_str()).collect()
}

#[test]
fn the_real_log_matches_the_real_executor_answers_by_outputs() {
    let ops: Vec<Operation> = executed().into_iter().map(|(_, o, _)| o).collect();
    assert_eq!(ops.len(), 8);
    let ev = evidence(&spawns(), ops);
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!(c.key, "outputs");
    assert_eq!(
        (c.remote_spawns, c.matched, c.executed_operations),
        (8, 8, 8)
    );
    assert_eq!((c.unmatched_spawns, c.unlogged_operations), (0, 0));
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);
}

#[test]
fn key_a_matches_by_the_action_digest_the_executor_reported() {
    let exec = executed();
    let mut log = spawns();
    for s in &mut log {
        let paths: Vec<String> = s.actual_outputs.iter().map(|f| f.path.clone()).collect();
        s.digest = Some(exec.iter().find(|(_, _, p)| *p == paths).unwrap().0.clone());
        // Outputs that match nothing: only the digest decides.
        s.actual_outputs.clear();
    }
    let ops: Vec<Operation> = exec.iter().map(|(_, o, _)| o.clone()).collect();
    let ev = evidence(&log, ops.clone());
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!((c.key.as_str(), c.matched), ("action_digest", 8));
    assert!(ev.contradictions.is_empty(), "{:?}", ev.contradictions);

    // One spawn names another action: it is unmatched, and the operation
    // that ran its real action is not in the log; both are named.
    log[0].digest.as_mut().unwrap().hash = "0".repeat(64);
    let ev = evidence(&log, ops);
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!((c.unmatched_spawns, c.unlogged_operations), (1, 1));
    assert_eq!(facts(&ev), ["exec_log_spawn", "exec_log_operation"]);
    let d = &ev.contradictions[0].detail;
    assert!(d.contains(&format!("(action {}/", "0".repeat(64))), "{d}");
    let paths: Vec<String> = spawns()[0]
        .actual_outputs
        .iter()
        .map(|f| f.path.clone())
        .collect();
    let (real, op, _) = exec.iter().find(|(_, _, p)| *p == paths).unwrap();
    assert!(
        d.contains(op.name.trim_start_matches('/')) && d.contains(&real.hash),
        "{d}"
    );
}

#[test]
fn a_spawn_whose_exit_code_or_outputs_differ_is_not_its_operation() {
    let ops: Vec<Operation> = executed().into_iter().map(|(_, o, _)| o).collect();
    let mut log = spawns();
    log[1].exit_code = 1;
    // An output the operation did not produce (same path, other size).
    log[2].actual_outputs[0].digest.as_mut().unwrap().size_bytes += 1;
    let ev = evidence(&log, ops);
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!(
        (c.matched, c.unmatched_spawns, c.unlogged_operations),
        (6, 2, 2)
    );
    assert_eq!(c.unmatched[0].mnemonic, log[1].mnemonic);
    assert_eq!(c.unmatched[0].key, "outputs");
}

#[test]
fn an_executed_operation_logged_as_a_cache_hit_is_reported_not_failed() {
    let ops: Vec<Operation> = executed().into_iter().map(|(_, o, _)| o).collect();
    let mut log = spawns();
    log[3].runner = "remote cache hit".into();
    log[3].cache_hit = true;
    let ev = evidence(&log, ops.clone());
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!((c.remote_spawns, c.matched, c.cache_hit_spawns), (7, 7, 1));
    assert_eq!(c.cache_hits_executed, 1);
    assert_eq!(c.unlogged_operations, 0);
    assert!(
        !facts(&ev).iter().any(|f| f.starts_with("exec_log")),
        "{:?}",
        ev.contradictions
    );

    // Two log entries for one operation: one-to-one, the second is unmatched.
    let mut log = spawns();
    let dup = log[4].clone();
    log.push(dup);
    let ev = evidence(&log, ops);
    let c = ev
        .output_binding
        .as_ref()
        .unwrap()
        .exec_log_check
        .as_ref()
        .unwrap();
    assert_eq!((c.remote_spawns, c.matched, c.unmatched_spawns), (9, 8, 1));
}
