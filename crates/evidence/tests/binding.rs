//! `output_binding` on constructed bytes: BEP events (BuildStarted,
//! NamedSetOfFiles, TargetComplete, TestResult, BuildFinished) and a
//! BuildGrid-shaped executor ledger whose ActionResults name output files.
//! Each rule on its own: a produced digest binds; a digest nobody produced,
//! a `file://` URI, a failed action's output, a cached result's output and
//! an operation outside the stream's window do not; nested sets resolve
//! (also when they nest each other); source files are not applicable.

use proof_evidence::{BindingStatus, EvidenceBuilder, OutputBinding};
use proof_proto::bep::{
    build_event, build_event_id, file, BuildEvent, BuildEventId, BuildFinished, BuildStarted, File,
    NamedSetOfFiles, OutputGroup, TargetComplete, TestResult,
};
use proof_proto::ledger::{ledger_record, Header, LedgerRecord, OperationsPage};
use proof_proto::longrunning::{operation, ListOperationsResponse, Operation};
use proof_proto::reapi::{
    ActionResult, Digest, ExecuteOperationMetadata, ExecuteResponse, ExecutedActionMetadata,
    OutputFile,
};
use proof_stream::delimited::encode_varint;
use prost::Message;

const ID: &str = "6b1b5a1e-0000-4000-8000-000000000027";
/// BuildStarted / BuildFinished, seconds since the epoch.
const START: i64 = 1_800_000_000;
const FINISH: i64 = START + 100;

fn hash(i: u32) -> String {
    format!("{i:064x}")
}

fn uri(i: u32) -> String {
    format!("bytestream://127.0.0.1:50051/blobs/{}/{i}", hash(i))
}

fn out_file(name: &str, uri: &str) -> File {
    File {
        name: name.into(),
        path_prefix: vec!["bazel-out".into(), "k8-fastbuild".into(), "bin".into()],
        file: Some(file::File::Uri(uri.into())),
        ..File::default()
    }
}

fn event(id: build_event_id::Id, payload: build_event::Payload) -> Vec<u8> {
    BuildEvent {
        id: Some(BuildEventId { id: Some(id) }),
        payload: Some(payload),
        ..BuildEvent::default()
    }
    .encode_to_vec()
}

fn set(id: &str, files: Vec<File>, nested: &[&str]) -> Vec<u8> {
    event(
        build_event_id::Id::NamedSet(build_event_id::NamedSetOfFilesId { id: id.into() }),
        build_event::Payload::NamedSetOfFiles(NamedSetOfFiles {
            files,
            file_sets: nested
                .iter()
                .map(|n| build_event_id::NamedSetOfFilesId { id: n.to_string() })
                .collect(),
        }),
    )
}

fn complete(label: &str, success: bool, sets: &[&str]) -> Vec<u8> {
    event(
        build_event_id::Id::TargetCompleted(build_event_id::TargetCompletedId {
            label: label.into(),
            ..Default::default()
        }),
        build_event::Payload::Completed(TargetComplete {
            success,
            output_group: vec![OutputGroup {
                name: "default".into(),
                file_sets: sets
                    .iter()
                    .map(|n| build_event_id::NamedSetOfFilesId { id: n.to_string() })
                    .collect(),
                ..OutputGroup::default()
            }],
            ..TargetComplete::default()
        }),
    )
}

/// A stream: BuildStarted, `middle`, BuildFinished.
fn stream(middle: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = vec![event(
        build_event_id::Id::Started(build_event_id::BuildStartedId {}),
        build_event::Payload::Started(BuildStarted {
            uuid: ID.into(),
            start_time_millis: START * 1000,
            command: "build".into(),
            ..BuildStarted::default()
        }),
    )];
    out.extend(middle);
    out.push(event(
        build_event_id::Id::BuildFinished(build_event_id::BuildFinishedId {}),
        build_event::Payload::Finished(BuildFinished {
            finish_time_millis: FINISH * 1000,
            overall_success: true,
            ..BuildFinished::default()
        }),
    ));
    out
}

/// One operation: its outputs (digest numbers), exit code, whether it was
/// served from the cache, and when it was queued and completed.
struct Op {
    outputs: Vec<u32>,
    /// Output directories: (path, Tree digest).
    dirs: Vec<(String, Digest)>,
    stdout: Option<u32>,
    exit: i32,
    cached: bool,
    queued: i64,
    completed: i64,
}

fn ran(outputs: &[u32]) -> Op {
    Op {
        outputs: outputs.to_vec(),
        dirs: Vec::new(),
        stdout: None,
        exit: 0,
        cached: false,
        queued: START + 10,
        completed: START + 20,
    }
}

fn ts(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    })
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

fn ledger(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    push(
        &mut out,
        ledger_record::Record::Header(Header {
            executor: "grpc://127.0.0.1:50051".into(),
            adapter: "buildgrid".into(),
            invocation_id: ID.into(),
            instance_names: vec![String::new()],
            ..Default::default()
        }),
    );
    let operations = ops
        .iter()
        .enumerate()
        .map(|(i, op)| Operation {
            name: format!("/op-{i}"),
            metadata: Some(any(
                "ExecuteOperationMetadata",
                &ExecuteOperationMetadata {
                    stage: 4,
                    action_digest: Some(Digest {
                        hash: format!("{:064x}", 1000 + i),
                        size_bytes: 10,
                    }),
                    ..Default::default()
                },
            )),
            done: true,
            result: Some(operation::Result::Response(any(
                "ExecuteResponse",
                &ExecuteResponse {
                    result: Some(ActionResult {
                        exit_code: op.exit,
                        stdout_digest: op.stdout.map(|d| Digest {
                            hash: hash(d),
                            size_bytes: i64::from(d),
                        }),
                        output_files: op
                            .outputs
                            .iter()
                            .map(|d| OutputFile {
                                path: format!("bazel-out/k8-fastbuild/bin/f{d}"),
                                digest: Some(Digest {
                                    hash: hash(*d),
                                    size_bytes: i64::from(*d),
                                }),
                                ..OutputFile::default()
                            })
                            .collect(),
                        output_directories: op
                            .dirs
                            .iter()
                            .map(|(path, d)| proof_proto::reapi::OutputDirectory {
                                path: path.clone(),
                                tree_digest: Some(d.clone()),
                                ..Default::default()
                            })
                            .collect(),
                        execution_metadata: Some(ExecutedActionMetadata {
                            worker: "bot-1".into(),
                            queued_timestamp: ts(op.queued),
                            worker_start_timestamp: ts(op.queued + 1),
                            worker_completed_timestamp: ts(op.completed),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    cached_result: op.cached,
                    ..Default::default()
                },
            ))),
        })
        .collect();
    push(
        &mut out,
        ledger_record::Record::Page(OperationsPage {
            instance_name: String::new(),
            filter: format!("invocation_id={ID}"),
            response: Some(ListOperationsResponse {
                operations,
                next_page_token: String::new(),
            }),
            ..Default::default()
        }),
    );
    out
}

fn bind(events: &[Vec<u8>], ops: &[Op]) -> OutputBinding {
    let mut b = EvidenceBuilder::new();
    for e in events {
        b.push_event(e).unwrap();
    }
    b.push_executor_ledger(ledger(ops).as_slice()).unwrap();
    b.finish()
        .unwrap()
        .output_binding
        .expect("a ledger gives a binding")
}

fn why(b: &OutputBinding, label: &str) -> String {
    let t = &b.targets[label];
    assert_eq!(t.status, BindingStatus::Unbound, "{label}: {t:?}");
    t.unbound[0].why.clone()
}

#[test]
fn a_produced_digest_binds_and_one_nobody_produced_does_not() {
    let b = bind(
        &stream(vec![
            set("0", vec![out_file("a.txt", &uri(1))], &[]),
            complete("//:a", true, &["0"]),
            set("1", vec![out_file("b.txt", &uri(2))], &[]),
            complete("//:b", true, &["1"]),
        ]),
        &[ran(&[1, 3])],
    );
    let a = &b.targets["//:a"];
    assert_eq!((a.status, a.files_bound), (BindingStatus::Bound, 1));
    assert!(
        why(&b, "//:b").starts_with(&format!(
            "the executor produced no output with this digest for invocation {ID}, and no earlier execution the server witnessed produced it"
        )),
        "{}",
        why(&b, "//:b")
    );
    let f = &b.targets["//:b"].unbound[0];
    assert_eq!(f.file, "bazel-out/k8-fastbuild/bin/b.txt");
    assert_eq!(f.digest.as_deref(), Some(format!("{}/2", hash(2)).as_str()));
    assert_eq!((b.targets_bound, b.targets_unbound), (1, 1));
    assert_eq!((b.operations_in_window, b.operations_outside), (1, 0));
    let w = b.window.as_ref().unwrap();
    assert_eq!(w.slack_seconds, 60);
    assert_eq!(w.from, "2027-01-15T07:59:00Z");
    assert_eq!(w.to, "2027-01-15T08:02:40Z");
}

#[test]
fn a_file_uri_is_a_local_output_and_never_binds() {
    let b = bind(
        &stream(vec![
            set(
                "0",
                vec![out_file(
                    "a.txt",
                    "file:///home/x/bazel-out/k8-fastbuild/bin/a.txt",
                )],
                &[],
            ),
            complete("//:a", true, &["0"]),
        ]),
        &[ran(&[1])],
    );
    assert_eq!(
        why(&b, "//:a"),
        "a file:// URI: a local output, not one the executor produced"
    );
}

#[test]
fn nested_sets_resolve_even_when_they_nest_each_other() {
    let b = bind(
        &stream(vec![
            set("2", vec![out_file("deep.txt", &uri(3))], &["1"]),
            set("1", vec![out_file("mid.txt", &uri(2))], &["2"]),
            set("0", vec![out_file("top.txt", &uri(1))], &["1"]),
            complete("//:all_bound", true, &["0"]),
            set("3", vec![out_file("stray.txt", &uri(9))], &["2"]),
            complete("//:one_deep_file_unbound", true, &["3"]),
            complete("//:dangling", true, &["7"]),
        ]),
        &[ran(&[1, 2, 3])],
    );
    let t = &b.targets["//:all_bound"];
    assert_eq!((t.status, t.files_bound), (BindingStatus::Bound, 3));
    let t = &b.targets["//:one_deep_file_unbound"];
    assert_eq!(
        (t.status, t.files_bound, t.files_unbound),
        (BindingStatus::Unbound, 2, 1)
    );
    assert_eq!(t.unbound[0].file, "bazel-out/k8-fastbuild/bin/stray.txt");
    assert_eq!(
        why(&b, "//:dangling"),
        "the stream names file set \"7\" but never sends it"
    );
}

#[test]
fn failed_and_cached_actions_and_operations_outside_the_window_do_not_bind() {
    let b = bind(
        &stream(vec![
            set("0", vec![out_file("failed.txt", &uri(1))], &[]),
            complete("//:failed", true, &["0"]),
            set("1", vec![out_file("cached.txt", &uri(2))], &[]),
            complete("//:cached", true, &["1"]),
            set("2", vec![out_file("decoy.txt", &uri(3))], &[]),
            complete("//:decoy", true, &["2"]),
            set("3", vec![out_file("late.txt", &uri(4))], &[]),
            complete("//:late", true, &["3"]),
            set("4", vec![out_file("skewed.txt", &uri(5))], &[]),
            complete("//:skewed", true, &["4"]),
        ]),
        &[
            Op {
                exit: 1,
                ..ran(&[1])
            },
            Op {
                cached: true,
                ..ran(&[2])
            },
            // Queued and done two minutes before the stream started.
            Op {
                queued: START - 130,
                completed: START - 120,
                ..ran(&[3])
            },
            Op {
                queued: FINISH + 30,
                completed: FINISH + 61,
                ..ran(&[4])
            },
            // 50 s of clock skew: inside the slack.
            Op {
                queued: START - 50,
                completed: FINISH + 50,
                ..ran(&[5])
            },
        ],
    );
    assert_eq!(
        why(&b, "//:failed"),
        "produced only by a failed or unfinished action"
    );
    assert!(why(&b, "//:cached").starts_with("served from the action cache (a remote cache hit)"));
    assert_eq!(
        why(&b, "//:decoy"),
        "produced only by an operation outside the stream's window"
    );
    assert_eq!(
        why(&b, "//:late"),
        "produced only by an operation outside the stream's window"
    );
    assert_eq!(b.targets["//:skewed"].status, BindingStatus::Bound);
    assert_eq!(
        (
            b.operations_in_window,
            b.cached_in_window,
            b.failed_in_window,
            b.operations_outside
        ),
        (1, 1, 1, 2)
    );
    // The failed action was executed; the cached one was not.
    assert_eq!(b.executed_in_window, 2);
    let whys: Vec<&str> = b.outside.iter().map(|o| o.why.as_str()).collect();
    assert_eq!(
        whys,
        [
            "queued before the stream started: not this build's",
            "completed after the stream finished: not this build's"
        ]
    );
    assert_eq!(b.outside[0].operation, "op-2");
    assert_eq!(
        b.outside[0].queued_at.as_deref(),
        Some("2027-01-15T07:57:50Z")
    );
}

#[test]
fn source_files_and_failed_targets_are_not_applicable_and_digests_must_agree() {
    let source = |name: &str, i: u32| File {
        name: name.into(),
        file: Some(file::File::Uri(uri(i))),
        ..File::default()
    };
    let mut claimed = out_file("d.txt", &uri(1));
    claimed.digest = hash(2);
    let b = bind(
        &stream(vec![
            // An sh_test as Bazel 4.2.3 reports it: the script, and the
            // executable symlink to it in bazel-out.
            set("0", vec![source("t.sh", 7), out_file("t", &uri(7))], &[]),
            complete("//:t", true, &["0"]),
            set("1", vec![out_file("x.txt", &uri(1))], &[]),
            complete("//:broken", false, &["1"]),
            set("2", vec![claimed], &[]),
            complete("//:d", true, &["2"]),
            complete("//:empty", true, &[]),
        ]),
        &[ran(&[1])],
    );
    let t = &b.targets["//:t"];
    assert_eq!(
        (t.status, t.source_files),
        (BindingStatus::NotApplicable, 2)
    );
    assert_eq!(
        t.note.as_deref(),
        Some("only source files (2): nothing was executed to make them")
    );
    let t = &b.targets["//:broken"];
    assert_eq!(t.status, BindingStatus::NotApplicable);
    assert_eq!(
        t.note.as_deref(),
        Some("not built: its TargetComplete reports a failure")
    );
    assert_eq!(
        b.targets["//:empty"].note.as_deref(),
        Some("no output files")
    );
    assert_eq!(
        why(&b, "//:d"),
        format!("File.digest {} disagrees with the URI's digest", hash(2))
    );
}

#[test]
fn test_outputs_bind_through_the_test_action() {
    let test_result = |files: Vec<File>| {
        event(
            build_event_id::Id::TestResult(build_event_id::TestResultId {
                label: "//:t".into(),
                run: 1,
                shard: 1,
                attempt: 1,
                ..Default::default()
            }),
            build_event::Payload::TestResult(TestResult {
                test_action_output: files,
                ..TestResult::default()
            }),
        )
    };
    let b = bind(
        &stream(vec![
            complete("//:t", true, &[]),
            test_result(vec![
                File {
                    name: "test.log".into(),
                    file: Some(file::File::Uri(uri(4))),
                    ..File::default()
                },
                out_file("test.xml", &uri(5)),
            ]),
        ]),
        // test.log is the test action's stdout, test.xml an output file.
        &[Op {
            stdout: Some(4),
            ..ran(&[5])
        }],
    );
    // test.log has no path prefix in Bazel 4.2.3's TestResult: still an
    // output of the test action, not a source file.
    let t = &b.targets["//:t"];
    assert_eq!(
        (t.status, t.files_bound, t.source_files),
        (BindingStatus::Bound, 2, 0),
        "{t:?}"
    );
}

#[test]
fn without_a_ledger_there_is_no_binding() {
    let mut b = EvidenceBuilder::new();
    for e in stream(vec![complete("//:a", true, &[])]) {
        b.push_event(&e).unwrap();
    }
    assert!(b.finish().unwrap().output_binding.is_none());
}

/// `ledger(now)` followed by `earlier`'s operations as AttestedResult
/// records of invocation "earlier" under `instance`.
fn with_attested(now: &[Op], earlier: &[Op], instance: &str) -> Vec<u8> {
    let mut out = ledger(now);
    let old = ledger(earlier);
    let recs = proof_stream::delimited::split_delimited(&old, usize::MAX).unwrap();
    for r in recs {
        if let Some(ledger_record::Record::Page(p)) = LedgerRecord::decode(r).unwrap().record {
            for op in p.response.unwrap().operations {
                push(
                    &mut out,
                    ledger_record::Record::Attested(proof_proto::ledger::AttestedResult {
                        invocation_id: "earlier".into(),
                        instance_name: instance.into(),
                        operation: Some(op),
                    }),
                );
            }
        }
    }
    out
}

fn bind_ledger(events: &[Vec<u8>], ledger: &[u8]) -> OutputBinding {
    let mut b = EvidenceBuilder::new();
    for e in events {
        b.push_event(e).unwrap();
    }
    b.push_executor_ledger(ledger).unwrap();
    b.finish().unwrap().output_binding.unwrap()
}

/// Targets //:tN with one output `fN` (the path the fixture's ActionResults use).
fn targets(ns: &[u32]) -> Vec<Vec<u8>> {
    let mut mid = Vec::new();
    for n in ns {
        mid.push(set(
            &n.to_string(),
            vec![out_file(&format!("f{n}"), &uri(*n))],
            &[],
        ));
        mid.push(complete(&format!("//:t{n}"), true, &[&n.to_string()]));
    }
    stream(mid)
}

#[test]
fn a_cache_hit_binds_only_to_an_attested_execution_of_the_same_output() {
    let earlier = |outputs: &[u32]| Op {
        queued: START - 500,
        completed: START - 400,
        ..ran(outputs)
    };
    // t1 executed now; t2 served from the cache, executed by an earlier
    // invocation the server witnessed; t3 served from the cache with no
    // witnessed execution (a rewritten entry points at digest 3).
    let b = bind_ledger(
        &targets(&[1, 2, 3]),
        &with_attested(&[ran(&[1])], &[earlier(&[2]), earlier(&[4])], ""),
    );
    assert_eq!(b.targets["//:t1"].status, BindingStatus::Bound);
    let t2 = &b.targets["//:t2"];
    assert_eq!(
        (t2.status, t2.files_cached_attested, t2.files_bound),
        (BindingStatus::CachedAttested, 1, 0)
    );
    assert!(why(&b, "//:t3").contains("no earlier execution the server witnessed produced it"));
    assert_eq!(
        (
            b.targets_bound,
            b.targets_cached_attested,
            b.targets_unbound
        ),
        (1, 1, 1)
    );
    assert_eq!((b.attested_results, b.files_cached_attested), (2, 1));
    // Attested executions never count as this invocation's.
    assert_eq!((b.operations_in_window, b.operations_outside), (1, 0));

    // The same digest at another path does not bind (an entry rewritten
    // to another action's output).
    let mut mid = vec![set("0", vec![out_file("other", &uri(2))], &[])];
    mid.push(complete("//:other", true, &["0"]));
    let b = bind_ledger(
        &stream(mid),
        &with_attested(&[ran(&[1])], &[earlier(&[2])], ""),
    );
    assert_eq!(b.targets["//:other"].status, BindingStatus::Unbound);
}

#[test]
fn attested_records_that_cannot_bind_are_refused_with_a_reason() {
    let at = |completed: i64| Op {
        queued: completed - 5,
        completed,
        ..ran(&[2])
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_attested(&[ran(&[1])], &[at(START - 100)], "other"),
            "not one this ledger asked",
        ),
        (
            with_attested(&[ran(&[1])], &[at(FINISH + 61)], ""),
            "completed after this stream finished",
        ),
        (
            with_attested(
                &[ran(&[1])],
                &[Op {
                    cached: true,
                    ..at(START - 100)
                }],
                "",
            ),
            "a cached answer, not an execution",
        ),
        (
            with_attested(
                &[ran(&[1])],
                &[Op {
                    exit: 1,
                    ..at(START - 100)
                }],
                "",
            ),
            "exit code 1",
        ),
    ];
    for (ledger, reason) in cases {
        let b = bind_ledger(&targets(&[1, 2]), &ledger);
        assert_eq!(
            b.targets["//:t2"].status,
            BindingStatus::Unbound,
            "{reason}"
        );
        assert_eq!(b.attested_refused.len(), 1, "{reason}");
        assert!(
            b.attested_refused[0].contains(reason),
            "{:?}",
            b.attested_refused
        );
    }
}

#[test]
fn the_server_indexes_executed_outputs_and_looks_up_claimed_ones() {
    let events = targets(&[1, 2]);
    let claimed = proof_evidence::binding::claimed_outputs(&events);
    let paths: Vec<&str> = claimed.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bazel-out/k8-fastbuild/bin/f1",
            "bazel-out/k8-fastbuild/bin/f2"
        ]
    );
    let witnessed = proof_evidence::binding::witnessed_results(&ledger(&[
        ran(&[1]),
        Op {
            cached: true,
            ..ran(&[2])
        },
        Op {
            exit: 2,
            ..ran(&[3])
        },
    ]))
    .unwrap();
    // Only the executed, successful operation is a witnessed result.
    assert_eq!(witnessed.len(), 1);
    assert_eq!(witnessed[0].0[0].0, "bazel-out/k8-fastbuild/bin/f1");
    assert_eq!(witnessed[0].1.invocation_id, ID);
}

fn file_node(name: &str, i: u32) -> proof_proto::reapi::FileNode {
    proof_proto::reapi::FileNode {
        name: name.into(),
        digest: Some(Digest {
            hash: hash(i),
            size_bytes: i64::from(i),
        }),
        ..Default::default()
    }
}

fn digest_of(b: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest {
        hash: hex::encode(sha2::Sha256::digest(b)),
        size_bytes: b.len() as i64,
    }
}

/// A Tree `d/` with `a` (digest 5) and `sub/b` (digest 6), encoded.
fn tree_blob(b_digest: u32) -> Vec<u8> {
    use proof_proto::reapi::{Directory, DirectoryNode, Tree};
    let child = Directory {
        files: vec![file_node("b", b_digest)],
        ..Default::default()
    };
    Tree {
        root: Some(Directory {
            files: vec![file_node("a", 5)],
            directories: vec![DirectoryNode {
                name: "sub".into(),
                digest: Some(digest_of(&child.encode_to_vec())),
            }],
            ..Default::default()
        }),
        children: vec![child],
    }
    .encode_to_vec()
}

/// `ledger(ops)` plus Blob records (digest, data).
fn with_blobs(ops: &[Op], blobs: &[(Digest, Vec<u8>)]) -> Vec<u8> {
    let mut out = ledger(ops);
    for (d, data) in blobs {
        push(
            &mut out,
            ledger_record::Record::Blob(proof_proto::ledger::Blob {
                instance_name: String::new(),
                digest: Some(d.clone()),
                data: data.clone(),
                ..Default::default()
            }),
        );
    }
    out
}

#[test]
fn files_inside_an_output_directory_bind_through_its_tree_blob_and_a_forged_tree_is_refused() {
    let tree = tree_blob(6);
    let td = digest_of(&tree);
    let op = || Op {
        dirs: vec![("bazel-out/k8-fastbuild/bin/d".into(), td.clone())],
        ..ran(&[])
    };
    let events = stream(vec![
        set(
            "0",
            vec![out_file("d/a", &uri(5)), out_file("d/sub/b", &uri(6))],
            &[],
        ),
        complete("//:d", true, &["0"]),
    ]);
    // The Tree blob as the CAS returned it: both files bind.
    let b = bind_ledger(&events, &with_blobs(&[op()], &[(td.clone(), tree.clone())]));
    let t = &b.targets["//:d"];
    assert_eq!(
        (t.status, t.files_bound),
        (BindingStatus::Bound, 2),
        "{t:?}"
    );
    assert_eq!(
        (b.output_directories_read, b.output_directories_unread),
        (1, 0)
    );

    // A forged Tree under the real digest (sub/b claims digest 7): its
    // bytes do not match the digest, nothing inside binds.
    let forged = tree_blob(7);
    let b = bind_ledger(&events, &with_blobs(&[op()], &[(td.clone(), forged)]));
    assert_eq!(b.targets["//:d"].status, BindingStatus::Unbound);
    assert_eq!(
        (b.output_directories_read, b.output_directories_unread),
        (0, 1)
    );
    assert!(
        b.tree_problems[0].contains("does not match its digest"),
        "{:?}",
        b.tree_problems
    );

    // No Tree blob at all: unread, unbound.
    let b = bind_ledger(&events, &ledger(&[op()]));
    assert_eq!(b.targets["//:d"].status, BindingStatus::Unbound);
    assert!(
        b.tree_problems[0].contains("was not read from the CAS"),
        "{:?}",
        b.tree_problems
    );
}

#[test]
fn the_servers_own_receive_times_make_the_window_when_it_signed() {
    let with_origin = |opened: i64, signed: i64| {
        let mut b = EvidenceBuilder::new();
        for e in &targets(&[1]) {
            b.push_event(e).unwrap();
        }
        let origin = proof_evidence::Origin {
            recorded_by: "proof serve".into(),
            tenant: None,
            opened_at_ms: Some(opened * 1000),
            signed_at_ms: Some(signed * 1000),
        };
        b.push_origin(origin.to_member().as_slice()).unwrap();
        b.push_executor_ledger(ledger(&[ran(&[1])]).as_slice())
            .unwrap();
        b.finish().unwrap().output_binding.unwrap()
    };
    // Received live: the operation (START+10..START+20) lies inside.
    let b = with_origin(START, FINISH + 2);
    assert_eq!(b.targets["//:t1"].status, BindingStatus::Bound);
    assert!(b
        .window
        .as_ref()
        .unwrap()
        .times
        .starts_with("the server's own times"));
    // The same stream replayed ten minutes later: the client's stamps still
    // say START..FINISH, but the server received it later, so the executor's
    // operation is not this stream's.
    let b = with_origin(START + 600, FINISH + 605);
    assert_eq!(b.targets["//:t1"].status, BindingStatus::Unbound);
    assert_eq!(b.operations_outside, 1);
    assert_eq!(
        b.outside[0].why,
        "queued before the stream started: not this build's"
    );
}
