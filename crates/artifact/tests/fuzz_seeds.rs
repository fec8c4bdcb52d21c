//! The signed seeds of the `verify` fuzz target (tests/fuzz/seeds/verify/):
//! real fixture artifacts signed by the fuzz target's key `[1; 32]`, so that
//! mutations get past the signature into the digest and re-derivation checks.
//! This test checks that every committed seed passes every check under that
//! key; `PROOF_WRITE_FUZZ_SEEDS=1` first (re)writes them from the fixtures.

mod common;

use std::path::PathBuf;

use common::{key, record_scenario, verify_bytes};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/seeds/verify")
}

const SCENARIOS: [(&str, bool); 2] = [("remote-build", true), ("local-only", false)];

/// The seed with a hostile executor's ledger (issue 20): the remote-build
/// stream, and an executor that ran one action without an image, one that
/// exited 1, and repeated its page token (the ledger ends `Truncated`).
const HOSTILE: &str = "hostile-executor";

fn hostile_ledger(invocation: &str) -> Vec<u8> {
    use proof_proto::ledger::{
        ledger_record::Record, Blob, Header, LedgerRecord, OperationsPage, Truncated,
    };
    use proof_proto::longrunning::{operation, ListOperationsResponse, Operation};
    use proof_proto::reapi::{
        Action, ActionResult, Command, Digest, ExecuteOperationMetadata, ExecuteResponse,
    };
    use prost::Message;
    use sha2::Digest as _;
    let digest = |b: &[u8]| Digest {
        hash: hex::encode(sha2::Sha256::digest(b)),
        size_bytes: b.len() as i64,
    };
    let any = |name: &str, v: Vec<u8>| prost_types::Any {
        type_url: format!("type.googleapis.com/build.bazel.remote.execution.v2.{name}"),
        value: v,
    };
    let command = Command {
        arguments: vec!["/bin/true".into()],
        ..Command::default()
    }
    .encode_to_vec();
    let action = Action {
        command_digest: Some(digest(&command)),
        ..Action::default()
    }
    .encode_to_vec();
    let op = |name: &str, exit_code: i32| Operation {
        name: name.into(),
        metadata: Some(any(
            "ExecuteOperationMetadata",
            ExecuteOperationMetadata {
                stage: 4,
                action_digest: Some(digest(&action)),
                ..Default::default()
            }
            .encode_to_vec(),
        )),
        done: true,
        result: Some(operation::Result::Response(any(
            "ExecuteResponse",
            ExecuteResponse {
                result: Some(ActionResult {
                    exit_code,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ))),
    };
    let page = |token: &str| {
        Record::Page(OperationsPage {
            filter: format!("invocation_id={invocation}"),
            page_token: token.into(),
            response: Some(ListOperationsResponse {
                operations: vec![op("/op-0", 0), op("/op-1", 1)],
                next_page_token: "again".into(),
            }),
            ..Default::default()
        })
    };
    let mut out = Vec::new();
    for rec in [
        Record::Header(Header {
            executor: "grpc://127.0.0.1:50051".into(),
            adapter: "buildgrid".into(),
            invocation_id: invocation.into(),
            instance_names: vec![String::new()],
            endpoint_aliases: Vec::new(),
        }),
        page(""),
        page("again"),
        Record::Truncated(Truncated {
            reason:
                "the executor repeated the page token \"again\" on instance \"\": its answers loop"
                    .into(),
        }),
        Record::Blob(Blob {
            digest: Some(digest(&action)),
            data: action.clone(),
            ..Default::default()
        }),
        Record::Blob(Blob {
            digest: Some(digest(&command)),
            data: command.clone(),
            ..Default::default()
        }),
    ] {
        LedgerRecord { record: Some(rec) }
            .encode_length_delimited(&mut out)
            .unwrap();
    }
    out
}

#[test]
fn the_hostile_executor_seed_verifies_and_fails_on_the_executor() {
    let path = seed_dir().join(format!("{HOSTILE}.proof.tar"));
    if std::env::var_os("PROOF_WRITE_FUZZ_SEEDS").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let bep = std::fs::read(common::fixture("remote-build", "bep.bin")).unwrap();
        let events: Vec<Vec<u8>> = proof_stream_events(&bep);
        let id = "0816e8e2-00a1-4628-8d9a-2d2de819df6b";
        let ledger = hostile_ledger(id);
        let inputs = proof_artifact::RecordInputs {
            executor_ledger: Some(&ledger),
            ..Default::default()
        };
        let out = proof_artifact::record_with(
            events.into_iter().map(Ok::<_, std::io::Error>),
            &inputs,
            &key(1),
            tmp.path(),
        )
        .unwrap();
        std::fs::copy(&out.path, &path).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let report = verify_bytes(&bytes, &key(1));
    let check = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap();
    for name in ["envelope", "signature", "digests", "rederived"] {
        assert!(check(name).ok, "{name}: {}", check(name).detail);
    }
    let a = report
        .evidence
        .as_ref()
        .unwrap()
        .attestation
        .as_ref()
        .unwrap();
    assert_eq!((a.executed, a.failed, a.executed_without_image), (1, 1, 1));
    assert!(check("executor_attested")
        .detail
        .contains("repeated the page token"));
    assert!(!check("image_pinned").ok);
}

/// The delimited records of a `--build_event_binary_file`.
fn proof_stream_events(bin: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bin;
    while !rest.is_empty() {
        let len = prost::decode_length_delimiter(&mut rest).unwrap();
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

#[test]
fn the_committed_verify_seeds_are_artifacts_signed_by_the_fuzz_key() {
    let dir = seed_dir();
    if std::env::var_os("PROOF_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for (scenario, with_log) in SCENARIOS {
            let out = record_scenario(scenario, with_log, &key(1), tmp.path());
            std::fs::copy(&out.path, dir.join(format!("{scenario}.proof.tar"))).unwrap();
        }
    }
    for (scenario, _) in SCENARIOS {
        let path = dir.join(format!("{scenario}.proof.tar"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with PROOF_WRITE_FUZZ_SEEDS=1 cargo test -p proof-artifact --test fuzz_seeds",
                path.display()
            )
        });
        let report = verify_bytes(&bytes, &key(1));
        // Every check but the policy verdict of a local-only build passes:
        // the signature, digests and re-derived evidence all hold.
        let failed: Vec<_> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        if scenario == "remote-build" {
            assert!(report.ok, "{scenario}: {failed:?}");
        } else {
            assert!(report.evidence.is_some(), "{scenario}: {failed:?}");
            assert!(
                !failed
                    .iter()
                    .any(|n| n.contains("signature") || n.contains("digest")),
                "{scenario}: {failed:?}"
            );
        }
    }
}

/// What the `verify` fuzz target asserts of every input, on the seeds, on
/// truncated seeds and on no bytes at all: every report lists the integrity
/// checks, then the policy's checks for the evidence it re-derived, and passes
/// only when all of them pass.
#[test]
fn every_report_lists_the_integrity_checks_then_the_policy_checks() {
    use proof_artifact::{verify, Policy, INTEGRITY_CHECKS};
    let policy = Policy::default();
    let mut inputs = vec![Vec::new()];
    for scenario in SCENARIOS.map(|(s, _)| s).into_iter().chain([HOSTILE]) {
        let bytes = std::fs::read(seed_dir().join(format!("{scenario}.proof.tar"))).unwrap();
        inputs.push(bytes[..bytes.len() / 2].to_vec());
        inputs.push(bytes);
    }
    for data in &inputs {
        let report = verify(
            std::io::Cursor::new(data),
            &[key(1).verifying_key()],
            &policy,
        )
        .unwrap();
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        let expected: Vec<&str> = INTEGRITY_CHECKS
            .iter()
            .copied()
            .chain(
                policy
                    .checks_for(report.evidence.as_ref())
                    .iter()
                    .map(|c| c.name()),
            )
            .collect();
        assert_eq!(names, expected, "input of {} bytes", data.len());
        assert_eq!(report.ok, report.checks.iter().all(|c| c.ok));
    }
}
