//! The web pages, the JSON API and /metrics of `proof serve --executor
//! --http` show the verdict of each invocation's signed proof, never one
//! re-derived from the stream: on the loopback rig, a real remote build of
//! the spoke is `proven`; the forged spoke stream (a real local-only Bazel
//! 4.2.3 run edited to claim 8 remote executions on a forced, pinned
//! executor, replayed under a fresh id) passes every client-side check yet
//! is `not proven`, naming `executor_attested`, and counts as a failed
//! signing; a stream cut short is `no proof`; a stream still open is
//! `pending`. Headless Chromium screenshots both pages
//! (target/web-screenshots/verdict-*.png). One Bazel build.
//! Needs the rig: `bash tests/run-all.sh`, or `. tests/rig/env.sh` with the rig
//! and PostgreSQL started by hand.

use std::path::Path;
use std::time::{Duration, Instant};

use proof_e2e::{
    bep_invocation_id, chromium, delimited_records, fixture, http_get, keypair, rig,
    wait_for_proof, Rig, Server,
};

/// A fresh UUID-shaped id (time and pid), never seen by the shared executor.
fn fresh_id(tag: u16) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:08x}-{tag:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        (n >> 48) as u16 & 0xfff,
        (n >> 36) as u16 & 0xfff,
        n as u64 & 0xffff_ffff_ffff
    )
}

/// A real remote build of a fresh copy of the spoke, every action executed
/// (unique input, --noremote_accept_cached), streamed to `bes`.
fn remote_build(rig: &Rig, ws: &Path, bes: &str, bep: &Path) {
    rig.spoke(ws);
    let nonce = format!("--action_env=PROOF_WEB_NONCE={}", fresh_id(0));
    let out = rig.bazel(
        ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend={bes}"),
            "--noremote_accept_cached",
            &nonce,
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    rig.shutdown(ws);
    assert_eq!(out.code, 0, "bazel failed:\n{}", out.output);
    assert!(out.output.contains("8 remote"), "{}", out.output);
}

fn json(http: &str, path: &str) -> serde_json::Value {
    let (st, body) = http_get(http, path, None);
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The `<tr>` of the list page that links to `id`.
fn list_row<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("href=\"/invocations/{id}\""))
        .unwrap_or_else(|| panic!("{id} is not listed: {page}"));
    let start = page[..at].rfind("<tr>").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    &page[start..end]
}

/// The value of the sample `line` (name and labels) in /metrics text.
fn sample(metrics: &str, line: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {line} in /metrics:\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn pages_api_and_metrics_show_the_signed_verdict_of_a_real_build_and_a_forged_stream() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let (key, _public) = keypair(tmp.path());
    let proofs = tmp.path().join("proofs");
    let server = Server::start(
        "127.0.0.1:0",
        &tmp.path().join("store"),
        &[
            "--key",
            key.to_str().unwrap(),
            "--proofs",
            proofs.to_str().unwrap(),
            "--executor",
            &rig.remote_executor,
            "--executor-retry-secs",
            "5",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let http = server
        .printed("proof serve: HTTP on http://")
        .trim()
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // 1. A real remote build through --config=proof.
    let bep = tmp.path().join("real.bep");
    remote_build(&rig, &tmp.path().join("ws"), &server.target(), &bep);
    let real = bep_invocation_id(&bep);
    wait_for_proof(&proofs, &real);

    // 2. The forged spoke stream under a fresh id.
    let forged = fresh_id(1);
    proof_e2e::replay_stream_on(
        &rt,
        &server.target(),
        &forged,
        proof_e2e::forge::forged_local_only(&rig.remote_executor, &forged),
        true,
    );
    wait_for_proof(&proofs, &forged);

    // 3. A stream cut short (no BuildFinished): finalized incomplete.
    let events = delimited_records(&fixture("remote-build", "bep.bin"));
    let cut = fresh_id(2);
    proof_e2e::replay_stream_on(
        &rt,
        &server.target(),
        &cut,
        proof_e2e::renamed(&events[..30], &cut),
        true,
    );
    // 4. A stream still open.
    let open = fresh_id(3);
    proof_e2e::replay_stream_on(
        &rt,
        &server.target(),
        &open,
        proof_e2e::renamed(&events[..20], &open),
        false,
    );
    let t = Instant::now();
    loop {
        let v = json(&http, &format!("/api/v1/invocations/{cut}"));
        if v["finalized"] == true {
            assert_eq!(v["complete"], false, "{v}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{cut} not finalized: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The API: the list and each invocation carry the signed verdict.
    let list = json(&http, "/api/v1/invocations");
    let state = |id: &str| {
        list["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["invocation_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))["proof"]["state"]
            .clone()
    };
    assert_eq!(state(&real), "proven", "{list}");
    assert_eq!(state(&forged), "not proven", "{list}");
    assert_eq!(state(&cut), "no proof", "{list}");
    assert_eq!(state(&open), "pending", "{list}");

    let v = json(&http, &format!("/api/v1/invocations/{real}"));
    assert_eq!(v["proof"]["state"], "proven", "{v}");
    assert_eq!(v["proof"]["attested_executions"], 8, "{v}");
    let checks: Vec<&str> = v["proof"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"executor_attested"), "{checks:?}");
    let sha = v["proof"]["artifact_sha256"].as_str().unwrap().to_string();

    let v = json(&http, &format!("/api/v1/invocations/{forged}/proof"));
    assert_eq!(v["state"], "not proven", "{v}");
    let failed: Vec<&str> = v["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(failed.contains(&"executor_attested"), "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("executor_attested"),
        "{v}"
    );
    // The stream's own claims pass every client-side check: the forgery.
    assert_eq!(v["client_claims"]["claims_pass"], true, "{v}");
    let v = json(&http, &format!("/api/v1/invocations/{cut}"));
    assert!(
        v["proof"]["reason"]
            .as_str()
            .unwrap()
            .contains("ended incomplete"),
        "{v}"
    );

    // /metrics: one proof signed that passes, one that fails executor_attested.
    let (st, metrics) = http_get(&http, "/metrics", None);
    assert_eq!(st, 200);
    assert_eq!(
        sample(&metrics, "proof_proofs_signed_total{verdict=\"pass\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "proof_proofs_signed_total{verdict=\"fail\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "proof_proof_check_failures_total{check=\"executor_attested\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "proof_kpi_proof_invocations{tenant=\"(none)\",state=\"proven\"}"
        ),
        1.0
    );
    let fleet = json(&http, "/api/v1/fleet");
    assert_eq!(
        fleet["proofs"]["overall"],
        serde_json::json!({"proven": 1, "not proven": 1, "pending": 1, "no proof": 1}),
        "{fleet}"
    );

    // The pages, in headless Chromium.
    let base = format!("http://{http}");
    let page = chromium::dom(&format!("{base}/invocations"));
    let r = list_row(&page, &real);
    assert!(
        r.contains("data-proof=\"proven\">PROVEN REMOTE</span>"),
        "{r}"
    );
    assert!(r.contains("the executor attests 8"), "{r}");
    let r = list_row(&page, &forged);
    assert!(
        r.contains("data-proof=\"not proven\">NOT PROVEN</span>"),
        "{r}"
    );
    assert!(r.contains("executor_attested"), "{r}");
    assert!(list_row(&page, &cut).contains("data-proof=\"no proof\">NO PROOF</span>"));
    assert!(list_row(&page, &open).contains("data-proof=\"pending\">PENDING</span>"));

    let page = chromium::dom(&format!("{base}/invocations/{forged}"));
    let at = page.find("id=\"proof\"").expect("a proof box");
    let proof_box = &page[at..at + page[at..].find("</div>").unwrap()];
    assert!(proof_box.contains(">NOT PROVEN</span>"), "{proof_box}");
    assert!(
        proof_box.contains("<code>executor_attested</code>"),
        "{proof_box}"
    );
    assert!(!page.contains("PROVEN REMOTE"), "{page}");
    assert!(page.contains("Client's view: what the stream claims"));
    let page = chromium::dom(&format!("{base}/invocations/{real}"));
    assert!(page.contains("data-proof=\"proven\">PROVEN REMOTE</span>"));
    assert!(page.contains(&sha), "the page names the artifact's sha256");

    let dir = chromium::screenshot_dir();
    chromium::screenshot(
        &format!("{base}/invocations"),
        &dir.join("verdict-list.png"),
        1280,
        700,
    );
    chromium::screenshot(
        &format!("{base}/invocations/{forged}"),
        &dir.join("verdict-forged.png"),
        1280,
        1400,
    );
    chromium::screenshot(
        &format!("{base}/invocations/{real}"),
        &dir.join("verdict-real.png"),
        1280,
        1400,
    );
    drop(server);
}
