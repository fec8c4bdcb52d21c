//! Posture evidence on the real Bazel 4.2.3 fixtures: the remote gRPC log,
//! external inputs and cache-write facts.

use std::fs::File;
use std::path::PathBuf;

use proof_evidence::{DigestSource, Evidence, EvidenceBuilder};
use proof_stream::delimited::DelimitedReader;

fn fixture(scenario: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file)
}

fn builder(scenario: &str, grpc: bool) -> EvidenceBuilder {
    let mut b = EvidenceBuilder::new();
    for r in DelimitedReader::new(File::open(fixture(scenario, "bep.bin")).unwrap()) {
        b.push_event(&r.unwrap()).unwrap();
    }
    b.push_exec_log(File::open(fixture(scenario, "execution_log.bin")).unwrap())
        .unwrap();
    if grpc {
        b.push_remote_grpc_log(File::open(fixture(scenario, "remote_grpc.log")).unwrap())
            .unwrap();
    }
    b
}

fn derive(scenario: &str, grpc: bool) -> Evidence {
    builder(scenario, grpc).finish().unwrap()
}

#[test]
fn grpc_log_of_a_4_2_3_remote_build_names_every_execute_digest() {
    let b = builder("remote-build", true);
    let (source, candidates) = b.corroboration_candidates();
    // 4.2.3's exec log has no digests: the gRPC log is the source.
    assert_eq!(source, Some(DigestSource::RemoteGrpcLog));
    // 8 remote spawns, 8 Execute calls, 8 distinct action digests.
    assert_eq!(candidates.len(), 8);
    let ev = b.finish().unwrap();
    let g = ev.remote_grpc_log.as_ref().unwrap();
    assert_eq!(g.execute_calls, 8);
    assert_eq!(g.execute_action_digests, candidates);
    for d in &candidates {
        assert_eq!(d.hash.len(), 64, "{d:?}");
        assert!(d.size_bytes > 0);
    }
    assert_eq!(g.execute_instance_names, vec![String::new()]);
    // The executor ran everything; Bazel wrote nothing to the AC.
    assert_eq!(g.update_action_result_calls, 0);
    assert_eq!(g.execute_cached_results, 0);
    assert!(
        g.methods.keys().any(|m| m.ends_with("Execution/Execute")),
        "{:?}",
        g.methods
    );
    assert_eq!(ev.cache_writes.update_action_result_calls, Some(0));
    // No repository downloads in this workspace.
    assert!(ev.external_inputs.fetches.is_empty());
    assert!(ev.external_inputs.network_fetches.is_empty());
    assert!(ev.corroboration.is_none());
}

#[test]
fn without_grpc_log_there_are_no_candidates_on_4_2_3() {
    let b = builder("remote-build", false);
    assert_eq!(b.corroboration_candidates(), (None, Vec::new()));
    let ev = b.finish().unwrap();
    assert!(ev.remote_grpc_log.is_none());
    assert_eq!(ev.cache_writes.update_action_result_calls, None);
}

#[test]
fn empty_posture_fields_are_left_out_of_the_json() {
    // Artifacts recorded before the posture fields existed re-derive to the
    // same JSON: without posture inputs none of the four keys appears.
    let ev = derive("local-only", false);
    // Not given on the command line: Bazel's default (true) applies.
    assert_eq!(ev.executor.remote_upload_local_results, None);
    let v = serde_json::to_value(&ev).unwrap();
    for key in [
        "external_inputs",
        "cache_writes",
        "remote_grpc_log",
        "corroboration",
    ] {
        assert!(v.get(key).is_none(), "{key} present: {}", v[key]);
    }
    // And the JSON reads back into equal evidence.
    let back: Evidence = serde_json::from_value(v).unwrap();
    assert_eq!(back, ev);
    // With a gRPC log they are there.
    let v = serde_json::to_value(derive("remote-build", true)).unwrap();
    assert_eq!(v["cache_writes"]["update_action_result_calls"], 0);
    assert!(v["external_inputs"].is_null());
}

#[test]
fn posture_fields_are_deterministic() {
    let a = serde_json::to_value(derive("remote-build", true)).unwrap();
    let b = serde_json::to_value(derive("remote-build", true)).unwrap();
    assert_eq!(a, b);
    assert!(a["remote_grpc_log"]["execute_action_digests"].is_array());
}

#[test]
fn a_damaged_grpc_log_is_an_error_that_says_what_to_pass() {
    let mut bytes = std::fs::read(fixture("remote-build", "remote_grpc.log")).unwrap();
    bytes.truncate(bytes.len() - 3);
    let mut b = EvidenceBuilder::new();
    let err = b.push_remote_grpc_log(&bytes[..]).unwrap_err().to_string();
    assert!(err.contains("--experimental_remote_grpc_log"), "{err}");
}

/// A Bazel 6+-style binary exec log: remote spawns carry their digests and
/// exit codes, so the digests (and the stream's exit codes) come from it.
#[test]
fn exec_log_digests_take_precedence_and_give_the_stream_exit_codes() {
    use proof_proto::corroboration::{corroboration_record, Answer, CorroborationRecord, Header};
    use proof_proto::execlog as xl;
    use proof_proto::reapi::{ActionResult, Digest};
    use prost::Message;

    fn delimit(out: &mut Vec<u8>, body: &[u8]) {
        proof_stream::delimited::encode_varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut log = Vec::new();
    for (h, exit_code, runner) in [
        ("a", 0, "remote"),
        ("b", 2, "remote"),
        ("c", 0, "linux-sandbox"),
    ] {
        let s = xl::SpawnExec {
            runner: runner.into(),
            digest: Some(xl::Digest {
                hash: h.repeat(64),
                size_bytes: 10,
                ..Default::default()
            }),
            exit_code,
            ..Default::default()
        };
        delimit(&mut log, &s.encode_to_vec());
    }
    let answer = |h: &str, exit_code: i32| {
        let rec = CorroborationRecord {
            record: Some(corroboration_record::Record::Answer(Answer {
                action_digest: Some(Digest {
                    hash: h.repeat(64),
                    size_bytes: 10,
                }),
                status_code: 0,
                status_message: String::new(),
                action_result: ActionResult {
                    exit_code,
                    ..Default::default()
                }
                .encode_to_vec(),
            })),
        };
        rec.encode_to_vec()
    };
    let mut records = Vec::new();
    let header = CorroborationRecord {
        record: Some(corroboration_record::Record::Header(Header {
            executor: "grpc://127.0.0.1:50051".into(),
            instance_name: String::new(),
            sample_size: 16,
        })),
    };
    delimit(&mut records, &header.encode_to_vec());
    delimit(&mut records, &answer("a", 0));
    // The executor says 0 where the exec log says 2.
    delimit(&mut records, &answer("b", 0));

    let mut b = builder("remote-build", true);
    b.push_exec_log(&log[..]).unwrap();
    let (source, cands) = b.corroboration_candidates();
    assert_eq!(source, Some(DigestSource::ExecLog));
    // Only the remote spawns' digests; the sandboxed one is not a candidate.
    assert_eq!(cands.len(), 2);
    b.push_corroboration(&records[..]).unwrap();
    let c = b.finish().unwrap().corroboration.unwrap();
    assert!(c.sample_matches);
    assert_eq!((c.found, c.exit_code_mismatches), (2, 1));
    assert_eq!(c.results[1].stream_exit_code, Some(2));
    assert_eq!(c.results[1].exit_code, Some(0));
}

#[test]
fn corroboration_records_must_start_with_one_header() {
    let mut b = EvidenceBuilder::new();
    let err = b.push_corroboration(&[][..]).unwrap_err().to_string();
    assert!(
        err.contains("no header record") && err.contains("--corroborate"),
        "{err}"
    );
}

mod constructed {
    use proof_evidence::EvidenceBuilder;
    use proof_proto::bep::{self, build_event, build_event_id, BuildEvent, BuildEventId};
    use prost::Message;

    fn ev(id: build_event_id::Id, payload: build_event::Payload) -> Vec<u8> {
        BuildEvent {
            id: Some(BuildEventId { id: Some(id) }),
            payload: Some(payload),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// BuildStarted, OptionsParsed with `flags`, then one Fetch per (url, ok).
    fn derive(flags: &[&str], fetches: &[(&str, bool)]) -> proof_evidence::Evidence {
        let mut b = EvidenceBuilder::new();
        b.push_event(&ev(
            build_event_id::Id::Started(build_event_id::BuildStartedId {}),
            build_event::Payload::Started(bep::BuildStarted {
                uuid: "c0ffee00-0000-4000-8000-000000000001".into(),
                command: "build".into(),
                ..Default::default()
            }),
        ))
        .unwrap();
        b.push_event(&ev(
            build_event_id::Id::OptionsParsed(build_event_id::OptionsParsedId {}),
            build_event::Payload::OptionsParsed(bep::OptionsParsed {
                cmd_line: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            }),
        ))
        .unwrap();
        for (url, success) in fetches {
            b.push_event(&ev(
                build_event_id::Id::Fetch(build_event_id::FetchId {
                    url: url.to_string(),
                    ..Default::default()
                }),
                build_event::Payload::Fetch(bep::Fetch { success: *success }),
            ))
            .unwrap();
        }
        b.finish().unwrap()
    }

    const BCR: &str = "https://bcr.bazel.build/modules/zlib/1.3/MODULE.bazel";
    const GH: &str = "https://github.com/madler/zlib/archive/v1.3.tar.gz";

    #[test]
    fn registry_files_are_pinned_only_under_lockfile_mode_error() {
        let x = derive(&["--lockfile_mode=error"], &[(BCR, true), (GH, true)]).external_inputs;
        assert_eq!(x.lockfile_mode.as_deref(), Some("error"));
        assert_eq!(x.lockfile_pinned_fetches, vec![BCR.to_string()]);
        // The module's source archive is not under the registry: network.
        assert_eq!(x.network_fetches, vec![GH.to_string()]);

        let x = derive(&["--lockfile_mode=update"], &[(BCR, true)]).external_inputs;
        assert!(x.lockfile_pinned_fetches.is_empty());
        assert_eq!(x.network_fetches, vec![BCR.to_string()]);

        // Another registry: the default one is no longer trusted as pinned.
        let x = derive(
            &["--lockfile_mode=error", "--registry=https://reg.example/"],
            &[
                (BCR, true),
                ("https://reg.example/modules/a/1/source.json", true),
            ],
        )
        .external_inputs;
        assert_eq!(x.network_fetches, vec![BCR.to_string()]);
        assert_eq!(x.registries, vec!["https://reg.example/".to_string()]);
    }

    #[test]
    fn repository_options_and_failed_attempts_are_recorded() {
        let x = derive(
            &[
                "--distdir=/srv/a",
                "--experimental_distdir=/srv/b",
                "--repository_cache=",
                "--repository_disable_download",
            ],
            &[
                ("http://127.0.0.1:9/x", false),
                ("http://127.0.0.1:9/x", true),
                ("http://127.0.0.1:9/y", false),
            ],
        )
        .external_inputs;
        assert_eq!(x.distdirs, ["/srv/a", "/srv/b"]);
        assert_eq!(x.repository_cache.as_deref(), Some(""));
        assert_eq!(x.repository_disable_download, Some(true));
        // One URL retried successfully: one record, success; y never succeeded.
        assert_eq!(x.fetches.len(), 2);
        assert!(x.fetches[0].success && !x.fetches[1].success);
        assert_eq!(x.network_fetches, ["http://127.0.0.1:9/x"]);
    }
}

/// Truncated and bit-flipped gRPC logs and corroboration files give an
/// error or a result, never a panic; the evidence stays deterministic.
#[test]
fn damaged_posture_inputs_never_panic() {
    let log = std::fs::read(fixture("remote-build", "remote_grpc.log")).unwrap();
    let step = (log.len() / 97).max(1);
    for cut in (0..log.len()).step_by(step) {
        let mut b = EvidenceBuilder::new();
        let _ = b.push_remote_grpc_log(&log[..cut]);
        let mut flipped = log.clone();
        flipped[cut] ^= 0x5a;
        let mut b = EvidenceBuilder::new();
        if b.push_remote_grpc_log(&flipped[..]).is_ok() {
            let again = {
                let mut b2 = EvidenceBuilder::new();
                b2.push_remote_grpc_log(&flipped[..]).unwrap();
                b2.corroboration_candidates()
            };
            assert_eq!(b.corroboration_candidates(), again);
        }
        // The same bytes read as corroboration records.
        let mut b = EvidenceBuilder::new();
        let _ = b.push_corroboration(&flipped[..cut]);
    }
}
