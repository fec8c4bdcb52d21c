//! Benchmark: verify a 1,000,000-event artifact and compare with the bare
//! cost of `zstd -d | sha256sum` over the same events member.
//!
//! Run: `cargo bench -p proof-artifact --bench verify` (EVENTS=n to resize).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use proof_artifact::tar::{scan, EVENTS};
use proof_artifact::{record, verify_path, Policy, SigningKey};
use proof_proto::bep::build_event::Payload;
use proof_proto::bep::build_event_id::{self as id, Id};
use proof_proto::bep::build_metrics::action_summary::RunnerCount;
use proof_proto::bep::build_metrics::ActionSummary;
use proof_proto::bep::{
    build_finished, BuildEvent, BuildEventId, BuildFinished, BuildMetrics, BuildStarted,
    OptionsParsed, Progress, TargetComplete,
};
use prost::Message;
use sha2::{Digest, Sha256};

fn event(id: Id, payload: Payload) -> BuildEvent {
    BuildEvent {
        id: Some(BuildEventId { id: Some(id) }),
        payload: Some(payload),
        ..Default::default()
    }
}

fn progress(n: i32, text: String) -> BuildEvent {
    let mut e = event(
        Id::Progress(id::ProgressId { opaque_count: n }),
        Payload::Progress(Progress {
            stdout: String::new(),
            stderr: text,
        }),
    );
    e.children = vec![BuildEventId {
        id: Some(Id::Progress(id::ProgressId {
            opaque_count: n + 1,
        })),
    }];
    e
}

/// A synthetic stream of `total` serialized events.
fn synthetic(total: usize) -> impl Iterator<Item = Result<Vec<u8>, std::convert::Infallible>> {
    let targets = total / 20;
    let executor = "grpc://rbe.example.invalid:8980";
    let head = vec![
        event(
            Id::Started(id::BuildStartedId {}),
            Payload::Started(BuildStarted {
                uuid: "00000000-1111-2222-3333-444444444444".into(),
                start_time_millis: 1_700_000_000_000,
                command: "build".into(),
                ..Default::default()
            }),
        ),
        event(
            Id::OptionsParsed(id::OptionsParsedId {}),
            Payload::OptionsParsed(OptionsParsed {
                cmd_line: vec![
                    format!("--remote_executor={executor}"),
                    "--spawn_strategy=remote".into(),
                    "--remote_default_exec_properties=container-image=docker://worker@sha256:\
                     8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217"
                        .into(),
                ],
                ..Default::default()
            }),
        ),
    ];
    let body_len = total - head.len() - 3;
    let body = (0..body_len).map(move |i| {
        if i % 20 == 19 && i / 20 < targets {
            event(
                Id::TargetCompleted(id::TargetCompletedId {
                    label: format!("//pkg{}/sub:target_{}", i % 97, i / 20),
                    ..Default::default()
                }),
                Payload::Completed(TargetComplete {
                    success: true,
                    ..Default::default()
                }),
            )
        } else {
            progress(
                i as i32,
                format!(
                    "[{} / {}] Compiling src/module_{}/file_{}.cc; {}s remote\n",
                    i,
                    body_len,
                    i % 311,
                    i % 1013,
                    i % 17
                ),
            )
        }
    });
    let remote = (body_len / 3) as i32;
    let tail = vec![
        progress(
            body_len as i32,
            format!(
                "INFO: {} processes: 12 internal, {remote} remote.\n",
                remote + 12
            ),
        ),
        event(
            Id::BuildFinished(id::BuildFinishedId {}),
            Payload::Finished(BuildFinished {
                overall_success: true,
                exit_code: Some(build_finished::ExitCode {
                    name: "SUCCESS".into(),
                    code: 0,
                }),
                finish_time_millis: 1_700_000_600_000,
                ..Default::default()
            }),
        ),
        BuildEvent {
            last_message: true,
            ..event(
                Id::BuildMetrics(id::BuildMetricsId {}),
                Payload::BuildMetrics(BuildMetrics {
                    action_summary: Some(ActionSummary {
                        actions_created: i64::from(remote) + 12,
                        actions_executed: i64::from(remote) + 12,
                        runner_count: vec![
                            RunnerCount {
                                name: "total".into(),
                                count: remote + 12,
                                exec_kind: String::new(),
                            },
                            RunnerCount {
                                name: "remote".into(),
                                count: remote,
                                exec_kind: "Remote".into(),
                            },
                        ],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            )
        },
    ];
    head.into_iter()
        .chain(body)
        .chain(tail)
        .map(|e| Ok(e.encode_to_vec()))
}

fn main() {
    let total: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        // `cargo test --all-targets` runs this without `--bench`: a smoke run.
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            1_000_000
        } else {
            20_000
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::from_bytes(&[7; 32]);

    let t = Instant::now();
    let out = record(synthetic(total), None, &key, dir.path()).expect("record");
    let record_s = t.elapsed().as_secs_f64();
    let artifact_len = std::fs::metadata(&out.path).expect("artifact").len();
    println!("events:            {total}");
    println!(
        "record:            {record_s:.2} s  ({:.0} events/s), artifact {:.1} MiB",
        total as f64 / record_s,
        artifact_len as f64 / 1048576.0
    );

    let t = Instant::now();
    let report =
        verify_path(&out.path, &[key.verifying_key()], &Policy::default()).expect("verify");
    let verify_s = t.elapsed().as_secs_f64();
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        report.check("rederived").is_some_and(|c| c.ok),
        "integrity failed: {:?}",
        report.checks
    );
    println!(
        "verify:            {verify_s:.2} s  ({:.0} events/s), ok={} failed={failed:?}",
        total as f64 / verify_s,
        report.ok
    );

    // The events member alone, for the baseline.
    let bytes = std::fs::read(&out.path).expect("read artifact");
    let scanned = scan(&bytes[..]).expect("scan");
    let m = scanned.member(EVENTS).expect("events member");
    let member = &bytes[m.offset as usize..(m.offset + m.size) as usize];
    let zst = dir.path().join("events.bep.zst");
    std::fs::write(&zst, member).expect("write member");

    let have_zstd = Command::new("zstd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let t = Instant::now();
    let (how, digest) = if have_zstd {
        let out = Command::new("sh")
            .arg("-c")
            .arg("zstd -dc \"$1\" | sha256sum")
            .arg("sh")
            .arg(&zst)
            .output()
            .expect("run zstd | sha256sum");
        assert!(out.status.success(), "zstd -d | sha256sum failed");
        (
            "`zstd -d | sha256sum`",
            String::from_utf8_lossy(&out.stdout)[..64].to_string(),
        )
    } else {
        let mut dec = zstd::stream::read::Decoder::new(member).expect("zstd");
        let mut h = Sha256::new();
        std::io::copy(&mut dec, &mut h).expect("decompress");
        (
            "in-process zstd + sha256 (zstd CLI not found)",
            hex::encode(h.finalize()),
        )
    };
    let base_s = t.elapsed().as_secs_f64();
    println!(
        "baseline:          {base_s:.2} s  {how}, sha256 {}…",
        &digest[..16]
    );
    println!("verify / baseline: {:.1}x", verify_s / base_s);
    let _ = std::io::stdout().flush();
}
