//! A user's first contact, as the README tells it: `proof serve` started with
//! the README's first command signs proofs out of the box (a key pair of its
//! own in the store), and `proof list | show | export | explain` work while it
//! runs. The first test needs the rig (real Bazel); the others replay fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proof_e2e::{
    bep_invocation_id, delimited_records, fixture, http_get, proof_bin, repo_root, rig,
    wait_for_file, Server,
};

/// Runs `proof ARGS` in `cwd`, as a user in a shell would (no PROOF_STORE).
fn proof(cwd: &Path, args: &[&str]) -> Output {
    Command::new(proof_bin())
        .current_dir(cwd)
        .args(args)
        .env_remove("PROOF_STORE")
        .env("PROOF_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = proof(cwd, args);
    assert!(o.status.success(), "proof {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The README's set-up block: exactly two commands, the first `cargo run ... -- serve ...`.
/// Returns the `proof` arguments of the first, with the fixed ports replaced by free
/// ones (the coordinator's own server may hold 8980/8981).
fn readme_serve_args() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let setup = readme
        .split("## Set-up")
        .nth(1)
        .expect("README has a Set-up section");
    let block = setup
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Set-up section starts with a sh block");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        2,
        "the README starts with exactly two set-up commands: {lines:?}"
    );
    assert_eq!(lines[1].trim(), "bash tests/run-all.sh");
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        words[..6],
        ["cargo", "run", "--release", "-p", "proof-cli", "--"],
        "{}",
        lines[0]
    );
    assert_eq!(words[6], "serve");
    assert!(!words.contains(&"--key"), "the first command has no --key");
    words[6..]
        .iter()
        .map(|w| match *w {
            "127.0.0.1:8980" | "127.0.0.1:8981" => "127.0.0.1:0".to_string(),
            w => w.to_string(),
        })
        .collect()
}

/// The `<tr>` of the invocations page that links to `id`.
fn list_row(page: &str, id: &str) -> String {
    let at = page
        .find(&format!("href=\"/invocations/{id}\""))
        .unwrap_or_else(|| panic!("{id} is not listed: {page}"));
    let start = page[..at].rfind("<tr>").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    page[start..end].to_string()
}

/// What `proof serve` printed about its key and proofs: (keyid, public key, proofs dir),
/// paths as printed (relative to the server's cwd).
fn signing_lines(server: &Server) -> (String, PathBuf, PathBuf, bool) {
    let key_line = server.printed("proof serve: signing proofs with ");
    let keyid = key_line
        .split("keyid ")
        .nth(1)
        .and_then(|k| k.strip_suffix(')'))
        .expect("keyid printed")
        .to_string();
    let public = PathBuf::from(server.printed("proof serve: public key ").trim());
    let proofs = server.printed("proof serve: proofs in ");
    let proofs = PathBuf::from(proofs.split(" (").next().unwrap());
    (keyid, public, proofs, key_line.contains("created now"))
}

fn key_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Events compared as Bazel's two transports write them: same events, any order.
fn same_events(a: &Path, b: &Path) -> bool {
    let (mut x, mut y) = (delimited_records(a), delimited_records(b));
    x.sort();
    y.sort();
    x == y
}

#[test]
fn the_readme_first_command_serves_readers_and_signs_proofs_of_a_real_bazel_build() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let args = readme_serve_args();
    let mut server = Server::start_args(Some(&cwd), &args);
    let http = server.printed("HTTP on http://").trim().to_string();
    let (keyid, public, proofs, created) = signing_lines(&server);
    assert!(created, "a first start creates the key pair");
    assert_eq!(public, Path::new("proof-store/proof.pub"));
    assert_eq!(proofs, Path::new("proof-store/proofs"));
    assert_eq!(key_mode(&cwd.join("proof-store/proof.key")), 0o600);

    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let bep = tmp.path().join("build.bep");
    let nonce = format!(
        "--action_env=PROOF_TEST_NONCE={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let out = rig.bazel(
        &ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend={}", server.target()),
            &format!("--bes_results_url=http://{http}/invocations"),
            &nonce,
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(&ws);
    assert_eq!(out.code, 0, "bazel build failed:\n{}", out.output);
    let id = bep_invocation_id(&bep);
    let artifact = cwd.join(&proofs).join(format!("{id}.proof.tar"));
    wait_for_file(&artifact, 60);

    // The server still runs; the readers work beside it, on the default store.
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
    let list = ok(&cwd, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("complete") && l.contains("SUCCESS")),
        "{list}"
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(&cwd, &["show", &id, "--json"])).unwrap();
    assert_eq!(show["complete"], true, "{show}");
    assert_eq!(show["command"], "build");
    assert_eq!(show["exit_code"]["name"], "SUCCESS");
    assert_eq!(
        show["event_count"].as_u64().unwrap(),
        delimited_records(&bep).len() as u64
    );
    ok(&cwd, &["export", &id, "-o", "exported.bep"]);
    assert!(
        same_events(&cwd.join("exported.bep"), &bep),
        "the exported stream differs from Bazel's --build_event_binary_file"
    );
    let explain = ok(&cwd, &["explain", &id]);
    assert!(explain.contains(&format!("invocation {id}")), "{explain}");

    // The artifact it wrote verifies with the public key it printed.
    let artifact_arg = proofs.join(format!("{id}.proof.tar"));
    let v: serde_json::Value = serde_json::from_str(&ok(
        &cwd,
        &[
            "verify",
            artifact_arg.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--json",
        ],
    ))
    .unwrap();
    assert!(
        v.to_string().contains(&keyid),
        "the artifact is signed by the printed key: {v}"
    );

    // The web list shows the proof status next to the build status.
    let (st, page) = http_get(&http, "/invocations", None);
    assert_eq!(st, 200);
    let row = list_row(&page, &id);
    assert!(
        row.contains(">SUCCESS</span>") && row.contains(">PROVEN REMOTE</span>"),
        "{row}"
    );
    assert!(row.contains(" remote execution"), "{row}");

    // A restart keeps the key pair: same key id, files untouched.
    let key_bytes = std::fs::read(cwd.join("proof-store/proof.key")).unwrap();
    let pub_bytes = std::fs::read(cwd.join(&public)).unwrap();
    server.kill9();
    let server = Server::start_args(Some(&cwd), &args);
    let (keyid2, _, _, created2) = signing_lines(&server);
    assert!(!created2);
    assert_eq!(keyid2, keyid);
    assert_eq!(
        std::fs::read(cwd.join("proof-store/proof.key")).unwrap(),
        key_bytes
    );
    assert_eq!(std::fs::read(cwd.join(&public)).unwrap(), pub_bytes);
}

#[test]
fn a_server_without_key_signs_with_its_store_key_and_readers_work_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let server = Server::start_args(
        Some(cwd),
        &["serve".into(), "--listen".into(), "127.0.0.1:0".into()],
    );
    let (_, public, proofs, created) = signing_lines(&server);
    assert!(created);
    let bep = fixture("remote-build", "bep.bin");
    let events = delimited_records(&bep).len() as u64;
    let id = bep_invocation_id(&bep);

    let replay: serde_json::Value = serde_json::from_str(&ok(
        cwd,
        &[
            "replay",
            bep.to_str().unwrap(),
            "--to",
            &server.target(),
            "--json",
        ],
    ))
    .unwrap();
    // Counts and ranges, not one number per ack.
    let acks = replay["acks"].as_u64().unwrap();
    assert!(acks > events, "{replay}");
    assert_eq!(replay["acked_ranges"], serde_json::json!([[1, acks]]));
    assert_eq!(replay["distinct_acked"], acks);
    assert!(replay.get("acked").is_none(), "{replay}");

    let artifact = cwd.join(&proofs).join(format!("{id}.proof.tar"));
    wait_for_file(&artifact, 60);
    let list = ok(cwd, &["list"]);
    assert!(list.contains(&id), "{list}");
    let show: serde_json::Value = serde_json::from_str(&ok(cwd, &["show", &id, "--json"])).unwrap();
    assert_eq!(show["complete"], true, "{show}");
    assert_eq!(show["event_count"], events);
    ok(cwd, &["export", &id, "-o", "exported.bep"]);
    assert_eq!(
        delimited_records(&cwd.join("exported.bep")),
        delimited_records(&bep)
    );
    ok(cwd, &["explain", &id, "--json"]);
    let o = proof(
        cwd,
        &[
            "verify",
            artifact.to_str().unwrap(),
            "--key",
            cwd.join(&public).to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Still one writer: ingesting beside the server is refused with what to do instead.
    let o = proof(cwd, &["ingest", bep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("in use") && text(&o).contains("proof replay"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_store_key_pair_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let start = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--store"];
        args.push(store.to_str().unwrap());
        args.extend_from_slice(extra);
        Command::new(proof_bin())
            .args(&args)
            .env("PROOF_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A public key without its private key: refuse, touch nothing.
    std::fs::create_dir_all(&store).unwrap();
    let (_, other_pub) = proof_artifact::generate().unwrap();
    std::fs::write(store.join("proof.pub"), &other_pub).unwrap();
    let o = start(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("restore the private key"), "{}", text(&o));
    assert!(!store.join("proof.key").exists());
    assert_eq!(
        std::fs::read_to_string(store.join("proof.pub")).unwrap(),
        other_pub
    );

    // A private key whose public key file does not match: refuse, touch nothing.
    let (private, _) = proof_artifact::generate().unwrap();
    std::fs::write(store.join("proof.key"), &private).unwrap();
    let o = start(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is not the public key of"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(store.join("proof.key")).unwrap(),
        private
    );

    // An unreadable key is reported, not replaced.
    std::fs::write(store.join("proof.key"), "not a key").unwrap();
    std::fs::remove_file(store.join("proof.pub")).unwrap();
    let o = start(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("never overwritten"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(store.join("proof.key")).unwrap(),
        "not a key"
    );
    assert!(!store.join("proof.pub").exists());

    // --key overrides the store's key pair: it is neither read nor created.
    std::fs::remove_file(store.join("proof.key")).unwrap();
    let key = tmp.path().join("k.key");
    std::fs::write(&key, &private).unwrap();
    let server = Server::start("127.0.0.1:0", &store, &["--key", key.to_str().unwrap()]);
    let line = server.printed("proof serve: signing proofs with ");
    assert!(line.starts_with(key.to_str().unwrap()), "{line}");
    assert!(!store.join("proof.key").exists());
    assert!(!store.join("proof.pub").exists());
}
