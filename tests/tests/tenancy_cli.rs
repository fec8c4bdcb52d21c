//! Tenancy as an operator and a tenant use it, through the `proof` binary:
//! `proof tenants hash-token | check`, `proof serve --tenants --http`,
//! `proof replay --header`, the HTTP API scoped by bearer token, and
//! `proof list | show --tenant` on the store afterwards. No Bazel needed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use proof_e2e::{delimited_records, fixture, http_get, proof_bin, Server};
use proof_server::tenants::tenancy::hash_token;

fn proof(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(proof_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn uuid(scenario: &str) -> String {
    let first = delimited_records(&fixture(scenario, "bep.bin")).remove(0);
    proof_stream::probe::probe(&first)
        .unwrap()
        .started_uuid
        .unwrap()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn hash_token_reads_stdin_or_the_flag_and_refuses_empty_tokens() {
    let o = proof(&["tenants", "hash-token"], Some("s3cret\n"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        hash_token("s3cret")
    );
    let o = proof(&["tenants", "hash-token", "--token", "s3cret"], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        hash_token("s3cret")
    );
    let o = proof(&["tenants", "hash-token"], Some(""));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("the token is empty"), "{}", text(&o));
}

#[test]
fn check_accepts_the_example_and_names_what_is_wrong_in_a_bad_file() {
    let example = proof_e2e::repo_root().join("examples/tenants.toml");
    let o = proof(&["tenants", "check", example.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lane pr-read-only"), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tenant]]\nid = \"a\"\nlane = \"trusted-writer\"\ntokens_sha256 = [\"nothex\"]\nbes_instance_names = [\"\"]\nremote_instance_names = [\"\"]\npools = [\"\"]\n",
    )
    .unwrap();
    let o = proof(&["tenants", "check", bad.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("64 lowercase hex") && text(&o).contains("bad.toml"),
        "{}",
        text(&o)
    );
}

fn write_tenants(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tenants.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[[tenant]]
id = "a"
lane = "trusted-writer"
tokens_sha256 = ["{a}"]
bes_instance_names = ["team-a"]
remote_instance_names = [""]
pools = ["*"]

[[tenant]]
id = "b"
lane = "trusted-writer"
tokens_sha256 = ["{b}"]
bes_instance_names = ["team-b"]
remote_instance_names = [""]
pools = ["*"]
"#,
            a = hash_token("token-a"),
            b = hash_token("token-b")
        ),
    )
    .unwrap();
    p
}

#[test]
fn tenants_see_only_their_invocations_over_http_and_in_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let tenants = write_tenants(dir.path());
    let http = free_addr();
    let mut server = Server::start(
        "127.0.0.1:0",
        &store,
        &["--tenants", tenants.to_str().unwrap(), "--http", &http],
    );
    let target = server.target();
    let replay = |scenario: &str, instance: &str, token: Option<&str>| {
        let f = fixture(scenario, "bep.bin");
        let mut args = vec![
            "replay".to_string(),
            f.to_string_lossy().into_owned(),
            "--to".into(),
            target.clone(),
            "--instance".into(),
            instance.into(),
            "--max-retries".into(),
            "0".into(),
        ];
        if let Some(t) = token {
            args.push("--header".into());
            args.push(format!("authorization=Bearer {t}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        proof(&args, None)
    };
    let o = replay("remote-build", "team-a", None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("CREDENTIAL_MISSING"), "{}", text(&o));
    let o = replay("remote-build", "team-b", Some("token-a"));
    assert!(
        text(&o).contains("BES_INSTANCE_NOT_ALLOWED"),
        "{}",
        text(&o)
    );
    let o = replay("remote-build", "team-a", Some("token-a"));
    assert!(o.status.success(), "{}", text(&o));
    let o = replay("remote-test", "team-b", Some("token-b"));
    assert!(o.status.success(), "{}", text(&o));
    let (id_a, id_b) = (uuid("remote-build"), uuid("remote-test"));

    // HTTP: a token is required everywhere but /healthz.
    assert_eq!(http_get(&http, "/healthz", None).0, 200);
    for path in ["/api/v1/invocations", "/invocations", "/metrics"] {
        let (st, body) = http_get(&http, path, None);
        assert_eq!(st, 401, "{path}: {body}");
        assert!(body.contains("CREDENTIAL_MISSING"), "{body}");
        assert_eq!(http_get(&http, path, Some("token-x")).0, 401);
    }
    let (st, body) = http_get(&http, "/api/v1/invocations", Some("token-a"));
    assert_eq!(st, 200);
    assert!(body.contains(&id_a) && !body.contains(&id_b), "{body}");
    let (_, body) = http_get(&http, "/api/v1/invocations?tenant=b", Some("token-a"));
    assert!(!body.contains(&id_b), "{body}");
    let (_, body) = http_get(&http, "/invocations", Some("token-b"));
    assert!(body.contains(&id_b) && !body.contains(&id_a));
    for path in [
        format!("/api/v1/invocations/{id_b}"),
        format!("/api/v1/invocations/{id_b}/evidence"),
        format!("/invocations/{id_b}"),
    ] {
        assert_eq!(http_get(&http, &path, Some("token-a")).0, 404, "{path}");
        assert_eq!(http_get(&http, &path, Some("token-b")).0, 200, "{path}");
    }
    // Another tenant's signed proof cannot be downloaded: it is not there.
    let (st, body) = http_get(
        &http,
        &format!("/api/v1/invocations/{id_b}/artifact"),
        Some("token-a"),
    );
    assert_eq!(st, 404, "{body}");
    assert!(body.contains(&format!("no invocation {id_b}")), "{body}");
    let (st, body) = http_get(&http, "/metrics", Some("token-a"));
    assert_eq!(st, 200);
    assert!(
        body.contains("proof_bes_denials_total{reason=\"CREDENTIAL_MISSING\"} 1")
            && body.contains("proof_bes_denials_total{reason=\"BES_INSTANCE_NOT_ALLOWED\"} 1"),
        "{body}"
    );

    // The CLI reads the store directly (the operator's tool): stop the server first.
    server.kill9();
    let s = store.to_str().unwrap();
    let o = proof(&["list", "--store", s, "--tenant", "a"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&id_a) && !text(&o).contains(&id_b),
        "{}",
        text(&o)
    );
    let o = proof(&["list", "--store", s], None);
    assert!(
        text(&o).contains(&id_a) && text(&o).contains(&id_b),
        "{}",
        text(&o)
    );
    let o = proof(&["show", &id_b, "--store", s, "--tenant", "a"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no invocation"), "{}", text(&o));
    let o = proof(
        &["show", &id_b, "--store", s, "--tenant", "b", "--json"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\"tenant\": \"b\""), "{}", text(&o));
}
