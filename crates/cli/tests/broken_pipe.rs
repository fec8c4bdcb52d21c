//! Every command writing to a pipe whose reader has gone (`proof list | head -1`)
//! ends quietly, with the exit code it has when its output is read in full.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(scenario: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bazel-4.2.3")
        .join(scenario)
        .join(file)
}

fn proof(args: &[&str], closed_stdout: bool) -> Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("proof"));
    cmd.args(args).env("PROOF_LOG", "warn").stdin(Stdio::null());
    if closed_stdout {
        // The reader end is closed before the child starts: its first write meets EPIPE,
        // exactly what `| head` does once it has read enough.
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        cmd.stdout(Stdio::from(writer));
    }
    cmd.output().unwrap()
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let o = proof(args, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn every_command_piped_into_a_closed_reader_exits_quietly_with_its_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (store, key) = (d("store"), d("k"));
    let bep = fixture("remote-build", "bep.bin");
    let v = json_of(&["ingest", bep.to_str().unwrap(), "--store", &store, "--json"]);
    let id = v["invocation_id"].as_str().unwrap().to_string();
    assert!(proof(&["keygen", "--out", &key], false).status.success());
    assert!(proof(&["keygen", "--out", &d("other")], false)
        .status
        .success());
    let v = json_of(&[
        "record",
        "--json",
        "--key",
        &format!("{key}.key"),
        "--out",
        &d("proofs"),
        bep.to_str().unwrap(),
        "--execlog",
        fixture("remote-build", "execution_log.bin")
            .to_str()
            .unwrap(),
    ]);
    let artifact = v["path"].as_str().unwrap().to_string();
    let (public, other) = (format!("{key}.pub"), format!("{}.pub", d("other")));

    let cases: Vec<Vec<&str>> = vec![
        vec!["list", "--store", &store],
        vec!["list", "--store", &store, "--json"],
        vec!["show", &id, "--store", &store],
        vec!["show", &id, "--store", &store, "--json"],
        vec!["explain", &id, "--store", &store],
        vec!["explain", &id, "--store", &store, "--json"],
        vec!["export", &id, "--store", &store, "-o", "-"],
        vec!["verify", &artifact, "--key", &public],
        vec!["verify", &artifact, "--key", &public, "--json"],
        // A failing check keeps its exit code 1 when nobody reads the verdict.
        vec!["verify", &artifact, "--key", &other],
        vec!["--help"],
        vec!["--version"],
    ];
    for args in &cases {
        let full = proof(args, false);
        assert!(!full.stdout.is_empty(), "{args:?} printed nothing");
        let cut = proof(args, true);
        let stderr = String::from_utf8_lossy(&cut.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr,
            String::from_utf8_lossy(&full.stderr),
            "{args:?}: nothing more on stderr than when the output is read"
        );
        assert_eq!(cut.status.code(), full.status.code(), "{args:?}");
    }
    // keygen prints after writing the keys: still written, still quiet.
    let cut = proof(&["keygen", "--out", &d("third")], true);
    assert_eq!(cut.status.code(), Some(0));
    assert!(
        cut.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    assert!(Path::new(&d("third.key")).exists());
}
