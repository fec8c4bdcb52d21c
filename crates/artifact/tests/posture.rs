//! Posture policy checks on artifacts recorded from the real Bazel 4.2.3
//! fixtures: corroboration records (hand-made executor answers), read-only,
//! instance and pinned inputs.

mod common;

use std::fs::File;
use std::path::Path;

use common::{fixture, key};
use proof_artifact::{record_with, Policy, PolicyCheck, RecordInputs, Report, SigningKey};
use proof_evidence::{sample_digests, ActionDigest, EvidenceBuilder};
use proof_proto::corroboration::{corroboration_record, Answer, CorroborationRecord, Header};
use proof_proto::reapi::{ActionResult, Digest, ExecutedActionMetadata};
use proof_stream::delimited::{encode_varint, DelimitedReader};
use prost::Message;

const EXECUTOR: &str = "grpc://127.0.0.1:50051";

fn events(scenario: &str) -> Vec<Vec<u8>> {
    DelimitedReader::new(File::open(fixture(scenario, "bep.bin")).unwrap())
        .map(|r| r.unwrap())
        .collect()
}

/// The remote-build fixture's Execute digests (from its gRPC log).
fn candidates() -> Vec<ActionDigest> {
    let mut b = EvidenceBuilder::new();
    b.push_remote_grpc_log(File::open(fixture("remote-build", "remote_grpc.log")).unwrap())
        .unwrap();
    b.corroboration_candidates().1
}

fn records(executor: &str, instance: &str, sample: u64, answers: Vec<Answer>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |rec: CorroborationRecord| {
        let body = rec.encode_to_vec();
        encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(&body);
    };
    push(CorroborationRecord {
        record: Some(corroboration_record::Record::Header(Header {
            executor: executor.into(),
            instance_name: instance.into(),
            sample_size: sample,
        })),
    });
    for a in answers {
        push(CorroborationRecord {
            record: Some(corroboration_record::Record::Answer(a)),
        });
    }
    out
}

fn found(d: &ActionDigest, exit_code: i32) -> Answer {
    let result = ActionResult {
        exit_code,
        execution_metadata: Some(ExecutedActionMetadata {
            worker: "rig-bot-test".into(),
            queued_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Answer {
        action_digest: Some(Digest {
            hash: d.hash.clone(),
            size_bytes: d.size_bytes,
        }),
        status_code: 0,
        status_message: String::new(),
        action_result: result.encode_to_vec(),
    }
}

fn not_found(d: &ActionDigest) -> Answer {
    Answer {
        action_digest: Some(Digest {
            hash: d.hash.clone(),
            size_bytes: d.size_bytes,
        }),
        status_code: 5,
        status_message: "not in the action cache".into(),
        action_result: Vec::new(),
    }
}

fn record(
    evs: Vec<Vec<u8>>,
    corroboration: Option<&[u8]>,
    key: &SigningKey,
    dir: &Path,
) -> std::path::PathBuf {
    let log = fixture("remote-build", "execution_log.bin");
    let grpc = fixture("remote-build", "remote_grpc.log");
    let inputs = RecordInputs {
        exec_log: Some(&log),
        remote_grpc_log: Some(&grpc),
        corroboration,
        ..RecordInputs::default()
    };
    record_with(
        evs.into_iter().map(Ok::<_, std::io::Error>),
        &inputs,
        key,
        dir,
    )
    .unwrap()
    .path
}

fn verify(path: &Path, key: &SigningKey, checks: &[PolicyCheck]) -> Report {
    let policy = checks
        .iter()
        .fold(Policy::none(), |p, c| p.check(c.clone()));
    proof_artifact::verify_path(path, &[key.verifying_key()], &policy).unwrap()
}

fn detail<'a>(r: &'a Report, name: &str) -> (bool, &'a str) {
    let c = r.check(name).unwrap_or_else(|| panic!("no check {name}"));
    (c.ok, c.detail.as_str())
}

#[test]
fn answers_for_the_whole_sample_corroborate_and_are_rederived() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let cands = candidates();
    assert_eq!(cands.len(), 8);
    let answers = sample_digests(&cands, 16)
        .iter()
        .map(|d| found(d, 0))
        .collect();
    let bytes = records(EXECUTOR, "", 16, answers);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    assert!(r.ok, "{:?}", r.checks);
    let (_, d) = detail(&r, "corroborated");
    assert!(
        d.contains("8 of 8 sampled") && d.contains("rig-bot-test"),
        "{d}"
    );
    let c = r.evidence.unwrap().corroboration.unwrap();
    assert_eq!((c.found, c.not_found, c.exit_code_mismatches), (8, 0, 0));
    assert!(c.sample_matches);
    assert_eq!(
        c.results[0].queued_at.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    // The remote-build gRPC log shows exit code 0 for every action.
    assert!(c.results.iter().all(|r| r.stream_exit_code == Some(0)));
    // Six members, in the documented order.
    let scanned = proof_artifact::tar::scan(File::open(&path).unwrap()).unwrap();
    let summary = String::from_utf8(scanned.summary.clone()).unwrap();
    assert!(
        summary.contains(
            "| Executor corroboration | 8 of 8 sampled action(s) found by `grpc://127.0.0.1:50051` (0 exit-code mismatch(es)) |"
        ) && summary.contains("| Action-cache writes (UpdateActionResult) | 0 |"),
        "{summary}"
    );
    let names: Vec<&str> = scanned.members.iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "statement.dsse.json",
            "events.bep.zst",
            "execlog.bin",
            "remote_grpc.log",
            "corroboration.bin",
            "summary.md"
        ]
    );
}

#[test]
fn an_executor_that_never_saw_the_actions_fails() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(8);
    let answers = sample_digests(&candidates(), 16)
        .iter()
        .map(not_found)
        .collect();
    let bytes = records(EXECUTOR, "", 16, answers);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    let (ok, d) = detail(&r, "corroborated");
    assert!(!ok);
    assert!(
        d.contains("none of the 8 sampled") && d.contains("never saw"),
        "{d}"
    );
}

#[test]
fn a_disagreeing_exit_code_fails_naming_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(9);
    let sample = sample_digests(&candidates(), 16);
    let answers = sample
        .iter()
        .enumerate()
        .map(|(i, d)| found(d, if i == 3 { 1 } else { 0 }))
        .collect();
    let bytes = records(EXECUTOR, "", 16, answers);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    let (ok, d) = detail(&r, "corroborated");
    assert!(!ok);
    assert!(
        d.contains(&format!(
            "{}/{} (stream 0, executor 1)",
            sample[3].hash, sample[3].size_bytes
        )),
        "{d}"
    );
}

#[test]
fn a_cherry_picked_sample_or_another_endpoint_fails() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(10);
    let sample = sample_digests(&candidates(), 16);
    // Only the one action the executor knows, though 8 were to be asked.
    let bytes = records(EXECUTOR, "", 16, vec![found(&sample[5], 0)]);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    let (ok, d) = detail(&r, "corroborated");
    assert!(!ok && d.contains("not the deterministic sample"), "{d}");
    // All answers, but from an executor the build did not use.
    let answers = sample.iter().map(|d| found(d, 0)).collect();
    let bytes = records("grpc://127.0.0.1:1", "", 16, answers);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    let (ok, d) = detail(&r, "corroborated");
    assert!(
        !ok && d.contains("is not the build's --remote_executor"),
        "{d}"
    );
}

#[test]
fn without_corroboration_the_check_says_how_to_record_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(11);
    let path = record(events("remote-build"), None, &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Corroborated]);
    let (ok, d) = detail(&r, "corroborated");
    assert!(!ok && d.contains("--corroborate"), "{d}");
}

#[test]
fn a_changed_corroboration_member_fails_digests() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(12);
    let answers = sample_digests(&candidates(), 16)
        .iter()
        .map(|d| found(d, 0))
        .collect();
    let bytes = records(EXECUTOR, "", 16, answers);
    let path = record(events("remote-build"), Some(&bytes), &k, dir.path());
    let mut art = std::fs::read(&path).unwrap();
    let scanned = proof_artifact::tar::scan(&art[..]).unwrap();
    let m = scanned.member("corroboration.bin").unwrap();
    // Flip the status code varint of the last answer's tail byte region.
    let at = (m.offset + m.size - 1) as usize;
    art[at] ^= 0x01;
    let r = proof_artifact::verify(
        std::io::Cursor::new(art),
        &[k.verifying_key()],
        &Policy::none().check(PolicyCheck::Corroborated),
    )
    .unwrap();
    let (ok, d) = detail(&r, "digests");
    assert!(!ok && d.contains("corroboration.bin"), "{d}");
    assert!(!detail(&r, "corroborated").0);
}

#[test]
fn read_only_and_instance_follow_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(13);
    let path = record(events("remote-build"), None, &k, dir.path());
    let r = verify(
        &path,
        &k,
        &[
            PolicyCheck::ReadOnly,
            PolicyCheck::Instance(String::new()),
            PolicyCheck::Instance("main".into()),
        ],
    );
    // The fixture was built without --noremote_upload_local_results.
    let (ok, d) = detail(&r, "read_only");
    assert!(!ok && d.contains("Bazel's default is true"), "{d}");
    // Two instance checks share a name; the first ("") passes, the second fails.
    let inst: Vec<_> = r.checks.iter().filter(|c| c.name == "instance").collect();
    assert_eq!(inst.len(), 2);
    assert!(inst[0].ok, "{}", inst[0].detail);
    assert!(!inst[1].ok && inst[1].detail.contains("--remote_instance_name=main"));
}

/// A Fetch event (BEP id `fetch { url }`, payload `fetch { success }`).
fn fetch_event(url: &str, success: bool) -> Vec<u8> {
    use proof_proto::bep::{build_event, build_event_id, BuildEvent, BuildEventId, Fetch};
    BuildEvent {
        id: Some(BuildEventId {
            id: Some(build_event_id::Id::Fetch(build_event_id::FetchId {
                url: url.into(),
                ..Default::default()
            })),
        }),
        payload: Some(build_event::Payload::Fetch(Fetch { success })),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn pinned_inputs_fail_naming_each_network_url() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(14);
    let mut evs = events("remote-build");
    let at = evs.len() / 2;
    evs.insert(at, fetch_event("http://127.0.0.1:9/b.tar.gz", true));
    evs.insert(at, fetch_event("http://127.0.0.1:9/a.txt", true));
    evs.insert(at, fetch_event("http://127.0.0.1:9/unreachable", false));
    let path = record(evs, None, &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::PinnedInputs]);
    let (ok, d) = detail(&r, "pinned_inputs");
    assert!(!ok);
    assert!(
        d.contains("2 external input(s)")
            && d.contains("http://127.0.0.1:9/a.txt, http://127.0.0.1:9/b.tar.gz"),
        "{d}"
    );
    assert!(!d.contains("unreachable"), "{d}");
    let ev = r.evidence.unwrap();
    assert_eq!(ev.external_inputs.fetches.len(), 3);
    let summary = proof_artifact::summary::render(&ev, &Policy::default());
    assert!(
        summary.contains("| Network fetches | 2 of 3 Fetch event(s): `http://127.0.0.1:9/a.txt`, `http://127.0.0.1:9/b.tar.gz` |"),
        "{summary}"
    );
    // No fetch at all: passes.
    let path = record(events("remote-build"), None, &k, dir.path());
    assert!(verify(&path, &k, &[PolicyCheck::PinnedInputs]).ok);
}

#[test]
fn instance_is_checked_against_the_logged_execute_calls_too() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(15);
    // The fixture's Execute calls used the default instance "".
    let path = record(events("remote-build"), None, &k, dir.path());
    let r = verify(&path, &k, &[PolicyCheck::Instance(String::new())]);
    let (ok, d) = detail(&r, "instance");
    assert!(
        ok && d.contains("every Execute call in the remote gRPC log used it"),
        "{d}"
    );
    let r = verify(&path, &k, &[PolicyCheck::Instance("main".into())]);
    assert!(!detail(&r, "instance").0);
}
