//! Trust posture on real Bazel (Debian's 4.2.3) against the loopback rig:
//! executor corroboration against BuildGrid's ActionCache (a real run
//! passes, a forged gRPC log fails), read-only vs uploading lanes, and
//! external inputs fetched from a local HTTP origin vs a --distdir.
//! Needs the rig: `bash tests/run-all.sh`, or start it and
//! `set -a; . /tmp/rbe-proof-rig/run/rig.env; set +a`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proof_e2e::{action_nonce, keypair, rig, run_proof, verify_json, Rig};

/// `proof record` into `out`; returns the artifact path.
fn record(key: &Path, out: &Path, args: &[&str]) -> PathBuf {
    let mut full = vec!["record", "--json", "--key", key.to_str().unwrap()];
    full.extend(["--out", out.to_str().unwrap()]);
    full.extend(args);
    let (code, text) = run_proof(&full);
    assert_eq!(code, 0, "proof record failed:\n{text}");
    let line = text.lines().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

/// `proof verify --json` with `flags`; returns (exit code, checks by name).
fn verify(public: &Path, artifact: &Path, flags: &[&str]) -> (i32, serde_json::Value) {
    let (code, checks, _) = verify_json(public, artifact, flags);
    (code, checks)
}

fn ok(checks: &serde_json::Value, name: &str) -> (bool, String) {
    let c = &checks[name];
    assert!(c.is_object(), "no check {name} in {checks}");
    (
        c["ok"].as_bool().unwrap(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

fn build(rig: &Rig, ws: &Path, args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rig.bazel(ws, &refs);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
}

/// The digests of the Execute calls in a gRPC log.
fn execute_digests(grpc_log: &Path) -> Vec<proof_evidence::ActionDigest> {
    let mut b = proof_evidence::EvidenceBuilder::new();
    b.push_remote_grpc_log(std::fs::File::open(grpc_log).unwrap())
        .unwrap();
    b.corroboration_candidates().1
}

#[test]
fn corroboration_passes_for_a_real_remote_run_and_fails_for_a_forged_log() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let (bep, grpc) = (tmp.path().join("b.bep"), tmp.path().join("b.grpc"));
    let execlog = ws.join("bazel-proof-execlog.bin");
    build(
        &rig,
        &ws,
        &[
            "build".into(),
            "--config=proof".into(),
            "//...".into(),
            "--bes_backend=".into(),
            "--remote_instance_name=main".into(),
            action_nonce("POSTURE"),
            format!("--build_event_binary_file={}", bep.display()),
            format!("--experimental_remote_grpc_log={}", grpc.display()),
        ],
    );
    rig.shutdown(&ws);
    let digests = execute_digests(&grpc);
    assert!(digests.len() >= 5, "{digests:?}");
    let proofs = tmp.path().join("proofs");
    let common = [
        bep.to_str().unwrap(),
        "--execlog",
        execlog.to_str().unwrap(),
        "--corroborate",
        rig.remote_executor.as_str(),
        "--sample",
        "4",
    ];
    let mut args = common.to_vec();
    args.extend(["--remote-grpc-log", grpc.to_str().unwrap()]);
    let art = record(&key, &proofs, &args);
    let flags = [
        "--require-corroboration",
        "--require-read-only",
        "--require-instance",
        "main",
    ];
    let (code, checks) = verify(&public, &art, &flags);
    let (c_ok, c_detail) = ok(&checks, "corroborated");
    assert!(c_ok, "{c_detail}");
    // 4 of the run's digests were asked; the executor ran all of them.
    assert!(
        c_detail.starts_with(&format!(
            "4 of 4 sampled action digest(s) (of {})",
            digests.len()
        )),
        "{c_detail}"
    );
    assert!(c_detail.contains("rig-bot"), "{c_detail}");
    assert!(ok(&checks, "read_only").0, "{}", ok(&checks, "read_only").1);
    assert!(ok(&checks, "instance").0);
    assert_eq!(code, 0, "{checks}");

    // Forge: the same log with every Execute digest replaced (same length,
    // so the framing holds): actions this executor never saw.
    let mut forged = std::fs::read(&grpc).unwrap();
    for d in &digests {
        let fake: String = d.hash.chars().rev().collect();
        let (from, to) = (d.hash.as_bytes(), fake.as_bytes());
        let mut i = 0;
        while let Some(p) = forged[i..].windows(64).position(|w| w == from) {
            forged[i + p..i + p + 64].copy_from_slice(to);
            i += p + 64;
        }
    }
    let forged_path = tmp.path().join("forged.grpc");
    std::fs::write(&forged_path, &forged).unwrap();
    assert!(execute_digests(&forged_path)
        .iter()
        .all(|d| !digests.contains(d)));
    let forged_proofs = tmp.path().join("forged-proofs");
    let mut args = common.to_vec();
    args.extend(["--remote-grpc-log", forged_path.to_str().unwrap()]);
    let art = record(&key, &forged_proofs, &args);
    let (code, checks) = verify(&public, &art, &flags);
    assert_eq!(code, 1);
    // The artifact itself is intact: only corroboration fails.
    assert!(ok(&checks, "rederived").0);
    let (c_ok, c_detail) = ok(&checks, "corroborated");
    assert!(!c_ok);
    assert!(
        c_detail.contains("none of the 4 sampled action digest(s)")
            && c_detail.contains("never saw"),
        "{c_detail}"
    );
}

#[test]
fn a_read_only_lane_passes_and_an_uploading_lane_fails() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let proofs = tmp.path().join("proofs");
    let nonce = action_nonce("POSTURE");
    // (name, extra flags, read_only expected)
    let lanes: [(&str, Vec<String>, bool); 2] = [
        (
            "read-only",
            vec!["--config=proof".into(), "--bes_backend=".into()],
            true,
        ),
        (
            "uploading",
            vec![
                format!("--remote_executor={}", rig.remote_executor),
                "--spawn_strategy=local".into(),
            ],
            false,
        ),
    ];
    for (name, extra, want) in lanes {
        rig.bazel(&ws, &["clean"]);
        let (bep, grpc) = (
            tmp.path().join(format!("{name}.bep")),
            tmp.path().join(format!("{name}.grpc")),
        );
        let mut args = vec!["build".to_string(), "//...".into(), nonce.clone()];
        args.extend(extra);
        args.push(format!("--build_event_binary_file={}", bep.display()));
        args.push(format!("--experimental_remote_grpc_log={}", grpc.display()));
        build(&rig, &ws, &args);
        let art = record(
            &key,
            &proofs,
            &[
                bep.to_str().unwrap(),
                "--remote-grpc-log",
                grpc.to_str().unwrap(),
            ],
        );
        let (code, checks) = verify(&public, &art, &["--require-read-only"]);
        let (ro, detail) = ok(&checks, "read_only");
        assert_eq!(ro, want, "{name}: {detail}");
        if want {
            assert!(detail.contains("no UpdateActionResult call"), "{detail}");
            assert_eq!(code, 0, "{name}: {checks}");
        } else {
            // Bazel's default uploads local results: the log shows the writes.
            assert!(detail.contains("Bazel's default is true"), "{detail}");
            assert!(
                detail.contains("ActionCache.UpdateActionResult call(s)"),
                "{detail}"
            );
            assert_eq!(code, 1);
        }
    }
    rig.shutdown(&ws);
}

/// `python3 -m http.server` on 127.0.0.1, killed on drop.
struct Origin {
    child: Child,
    port: u16,
}

impl Origin {
    fn start(dir: &Path) -> Origin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Origin { child, port }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_input_fetched_from_the_network_fails_and_the_same_from_the_repository_cache_or_a_distdir_passes(
) {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let content = format!("posture input {}\n", action_nonce("POSTURE"));
    std::fs::write(served.join("input.txt"), &content).unwrap();
    let sha = {
        let out = Command::new("sha256sum")
            .arg(served.join("input.txt"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let origin = Origin::start(&served);
    let url = format!("http://127.0.0.1:{}/input.txt", origin.port);
    // The test's own copy of the spoke gets an http_file and a rule using it.
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let mut workspace = std::fs::read_to_string(ws.join("WORKSPACE")).unwrap();
    workspace.push_str(&format!(
        "\nload(\"@bazel_tools//tools/build_defs/repo:http.bzl\", \"http_file\")\n\nhttp_file(\n    name = \"posture_input\",\n    urls = [\"{url}\"],\n    sha256 = \"{sha}\",\n    downloaded_file_path = \"input.txt\",\n)\n"
    ));
    std::fs::write(ws.join("WORKSPACE"), workspace).unwrap();
    let mut build_file = std::fs::read_to_string(ws.join("BUILD.bazel")).unwrap();
    build_file.push_str(
        "\ngenrule(\n    name = \"uses_input\",\n    srcs = [\"@posture_input//file\"],\n    outs = [\"uses_input.txt\"],\n    cmd = \"cat $< > $@\",\n)\n",
    );
    std::fs::write(ws.join("BUILD.bazel"), build_file).unwrap();
    let distdir = tmp.path().join("distdir");
    std::fs::create_dir_all(&distdir).unwrap();
    std::fs::copy(served.join("input.txt"), distdir.join("input.txt")).unwrap();
    let proofs = tmp.path().join("proofs");

    // (name, extra flags, expect pinned)
    let runs: [(&str, Vec<String>, bool); 3] = [
        ("network", vec![], false),
        // The network run filled the repository cache (it lives under the
        // output user root, which `clean --expunge` keeps): no download.
        ("repository-cache", vec![], true),
        (
            "distdir",
            vec![
                format!("--distdir={}", distdir.display()),
                // No repository cache: the file can only come from the distdir.
                "--repository_cache=".into(),
            ],
            true,
        ),
    ];
    for (name, extra, pinned) in runs {
        // A fresh output base, so the external repository is needed again.
        rig.bazel(&ws, &["clean", "--expunge"]);
        let bep = tmp.path().join(format!("{name}.bep"));
        let mut args = vec![
            "build".to_string(),
            "--config=proof".into(),
            "--bes_backend=".into(),
            "//:uses_input".into(),
            // The second run's action equals the first's: execute it again
            // instead of taking the cache hit.
            "--noremote_accept_cached".into(),
            format!("--build_event_binary_file={}", bep.display()),
        ];
        args.extend(extra);
        build(&rig, &ws, &args);
        let art = record(&key, &proofs, &[bep.to_str().unwrap()]);
        let (code, checks) = verify(&public, &art, &["--require-pinned-inputs"]);
        let (p_ok, detail) = ok(&checks, "pinned_inputs");
        assert_eq!(p_ok, pinned, "{name}: {detail}");
        if pinned {
            assert_eq!(code, 0, "{name}: {checks}");
            assert!(detail.contains("0 Fetch event(s)"), "{detail}");
            if name == "distdir" {
                assert!(detail.contains(&distdir.display().to_string()), "{detail}");
            }
        } else {
            assert_eq!(code, 1);
            assert!(
                detail.contains(&format!("fetched from the network: {url}")),
                "{detail}"
            );
        }
    }
    rig.shutdown(&ws);
    drop(origin);
}
