//! The JSON API and /metrics, served in-process on 127.0.0.1:0 over a store
//! holding the five real Bazel 4.2.3 fixture invocations.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages() {
    let s = start().await;
    let (st, v) = get_json(s.addr, "/api/v1/invocations").await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = v["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["invocation_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![FAILING, LOCAL_ONLY, CACHE_HIT, REMOTE_TEST, REMOTE_BUILD],
        "newest first"
    );
    assert_eq!(v["next_offset"], serde_json::Value::Null);
    assert_eq!(v["invocations"][0]["exit_code"]["name"], "BUILD_FAILURE");
    assert_eq!(
        v["invocations"][0]["links"]["page"],
        format!("/invocations/{FAILING}")
    );

    let (_, v) = get_json(s.addr, "/api/v1/invocations?tenant=acme").await;
    let ids: Vec<&str> = v["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["invocation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![REMOTE_TEST, REMOTE_BUILD]);

    let (_, p1) = get_json(s.addr, "/api/v1/invocations?limit=2").await;
    assert_eq!(p1["invocations"].as_array().unwrap().len(), 2);
    assert_eq!(p1["next_offset"], 2);
    let (_, p2) = get_json(s.addr, "/api/v1/invocations?limit=2&offset=2").await;
    assert_eq!(p2["invocations"][0]["invocation_id"], CACHE_HIT);
    let (_, p3) = get_json(s.addr, "/api/v1/invocations?limit=2&offset=4").await;
    assert_eq!(p3["invocations"].as_array().unwrap().len(), 1);
    assert_eq!(p3["next_offset"], serde_json::Value::Null);

    let (st, v) = get_json(s.addr, "/api/v1/invocations?limit=0").await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("limit=0"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_evidence_proof_kpis_diagnosis() {
    let s = start().await;
    let (st, v) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["event_count"], 81);
    assert_eq!(v["complete"], true);
    assert_eq!(
        v["links"]["diagnosis"],
        format!("/api/v1/invocations/{REMOTE_BUILD}/diagnosis")
    );

    let (_, ev) = get_json(
        s.addr,
        &format!("/api/v1/invocations/{REMOTE_BUILD}/evidence"),
    )
    .await;
    assert_eq!(ev["predicate_version"], "v1");
    assert_eq!(ev["processes"]["remote_executions"], 8);

    // The proof state is the signed proof's verdict, every check of it.
    let (_, p) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}/proof")).await;
    assert_eq!(p["state"], "proven", "{p}");
    assert_eq!(p["failed_checks"], serde_json::json!([]));
    let names: Vec<&str> = p["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..4],
        ["envelope", "signature", "digests", "rederived"]
    );
    assert_eq!(names.last(), Some(&"matches_store"));
    assert_eq!(
        p["artifact"],
        format!("/api/v1/invocations/{REMOTE_BUILD}/artifact")
    );
    assert_eq!(p["artifact_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(p["client_claims"]["claims_pass"], true);
    let (_, p) = get_json(s.addr, &format!("/api/v1/invocations/{LOCAL_ONLY}/proof")).await;
    assert_eq!(p["state"], "not proven");
    assert!(
        p["failed_checks"]
            .as_array()
            .unwrap()
            .contains(&"executor_forced".into()),
        "{p}"
    );
    assert!(p["reason"].as_str().unwrap().contains("executor_forced"));
    assert_eq!(p["client_claims"]["claims_pass"], false);
    assert_eq!(p["client_claims"]["checks"][0]["name"], "executor_forced");
    assert_eq!(p["client_claims"]["checks"][0]["ok"], false);
    // The detail row carries the same proof object.
    let (_, v) = get_json(s.addr, &format!("/api/v1/invocations/{LOCAL_ONLY}")).await;
    assert_eq!(v["proof"]["state"], "not proven");
    assert_eq!(v["proof"]["failed_checks"], p["failed_checks"]);
    assert_eq!(v["proof"]["checks"], p["checks"]);

    // Without an exec log the counts come from the "process stats" tool log.
    let (_, k) = get_json(s.addr, &format!("/api/v1/invocations/{REMOTE_BUILD}/kpis")).await;
    assert_eq!(k["kpi_version"], "1");
    assert_eq!(k["process_mix"]["source"], "process_stats_log");
    assert_eq!(k["process_mix"]["remote_execution"], 8);
    assert_eq!(k["process_mix"]["internal"], 10);
    assert!(k["time_to_first_cache_hit"]["ms"].is_null());
    assert_eq!(k["critical_path"]["ms"], 2830);

    let (_, d) = get_json(
        s.addr,
        &format!("/api/v1/invocations/{LOCAL_ONLY}/diagnosis"),
    )
    .await;
    assert_eq!(d["diagnosis_version"], "1");
    assert_eq!(d["dominant_cause"], "eligibility");
    let (_, d) = get_json(
        s.addr,
        &format!("/api/v1/invocations/{CACHE_HIT}/diagnosis"),
    )
    .await;
    assert_eq!(d["dominant_cause"], "none");

    let (st, v) = get_json(s.addr, "/api/v1/invocations/no-such-invocation/kpis").await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("no-such-invocation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_per_tenant_and_class() {
    let s = start().await;
    let (st, f) = get_json(s.addr, "/api/v1/fleet").await;
    assert_eq!(st, 200);
    assert_eq!(f["fleet_version"], "1");
    assert_eq!(f["invocations"], 5);
    assert_eq!(f["skipped"].as_array().unwrap().len(), 0);
    // acme: remote-build (8 remote) + remote-test (2 remote), no hits.
    let acme = &f["by_tenant"]["acme"];
    assert_eq!(acme["invocations"], 2);
    assert_eq!(acme["remote_executions"], 10);
    assert_eq!(acme["remote_hit_rate"], 0.0);
    assert_eq!(acme["ttfre_ms"]["p50"], 566);
    assert_eq!(f["by_tenant"]["beta"]["remote_hit_rate"], 1.0);
    assert_eq!(f["by_tenant"]["(none)"]["invocations"], 2);
    // No exec-log metrics: fairness by remote executions (10 of 10 for acme).
    assert_eq!(f["fairness"]["basis"], "remote_executions");
    assert_eq!(f["fairness"]["shares"]["acme"], 1.0);
    assert_eq!(f["by_target_class"]["failing"]["invocations"], 1);
    assert_eq!(f["by_target_class"]["all"]["invocations"], 4);
    assert_eq!(f["poison"]["invocations_without_digests"], 5);
    // Proven builds by the signed proofs: remote-build and remote-test.
    assert_eq!(
        f["proofs"]["overall"],
        serde_json::json!({"proven": 2, "not proven": 3, "pending": 0, "no proof": 0}),
        "{f}"
    );
    assert_eq!(f["proofs"]["by_tenant"]["acme"]["proven"], 2);
    assert_eq!(f["proofs"]["by_tenant"]["(none)"]["not proven"], 2);
    let (_, b) = get_json(s.addr, "/api/v1/fleet?tenant=beta").await;
    assert_eq!(b["invocations"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics() {
    let s = start().await;
    proof_server::Metrics::add(&s.metrics.acks_sent, 7);
    let (st, ctype, body) = get(s.addr, "/metrics").await;
    assert_eq!(st, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(
        body.contains("\nproof_events_ingested_total 318\n"),
        "{body}"
    );
    assert!(body.contains("\nproof_acks_sent_total 7\n"));
    assert!(body.contains("proof_kpi_window_invocations 5\n"));
    assert!(
        body.contains("proof_kpi_remote_cache_hit_ratio{tenant=\"beta\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("proof_kpi_diagnosis_invocations{cause=\"eligibility\"} 1\n"));
    assert!(
        body.contains("proof_kpi_proof_invocations{tenant=\"acme\",state=\"proven\"} 2\n"),
        "{body}"
    );
    assert!(body.contains("proof_kpi_proof_invocations{tenant=\"beta\",state=\"proven\"} 0\n"));
    assert!(
        body.contains("proof_proof_verifications_total 5\n"),
        "{body}"
    );
    assert!(
        body.contains("proof_analyses_total 5\n"),
        "the window was analyzed once: {body}"
    );
    // A second scrape reuses the cached analyses of finalized invocations.
    let (_, _, body2) = get(s.addr, "/metrics").await;
    assert!(body2.contains("proof_analyses_total 5\n"));
    assert!(
        body2.contains("proof_analysis_cache_hits_total 5\n"),
        "{body2}"
    );
    // And the verdicts: no artifact is verified twice.
    assert!(
        body2.contains("proof_proof_verifications_total 5\n"),
        "{body2}"
    );
    assert!(
        body2.contains("proof_proof_verdict_cache_hits_total 5\n"),
        "{body2}"
    );
    for line in body.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP proof_") || line.starts_with("# TYPE proof_"),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("proof_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_logs_from_the_execlog_dir_enrich_the_kpis() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let store: Arc<dyn proof_store::Store> =
        Arc::new(proof_store::FsStore::open(dir.path()).unwrap());
    let build = store_fixture(&*store, "remote-build", None, 1);
    let failing = store_fixture(&*store, "failing-build", None, 2);
    let local = store_fixture(&*store, "local-only", None, 3);
    let fixture_dir = |s: &str| fixture(s).parent().unwrap().to_path_buf();
    std::fs::copy(
        fixture_dir("remote-build").join("execution_log.bin"),
        logs.path().join(format!("{build}.execlog")),
    )
    .unwrap();
    std::fs::copy(
        fixture_dir("failing-build").join("execution_log.bin"),
        logs.path().join(format!("{failing}.execlog")),
    )
    .unwrap();
    // Not an execution log.
    std::fs::copy(
        fixture("local-only"),
        logs.path().join(format!("{local}.execlog")),
    )
    .unwrap();
    let s = serve_store(store, dir, Some(logs.path().to_path_buf())).await;

    let (_, k) = get_json(s.addr, &format!("/api/v1/invocations/{build}/kpis")).await;
    assert_eq!(k["exec_log"], true);
    assert_eq!(k["process_mix"]["source"], "exec_log");
    assert_eq!(k["cas"]["remote_input_bytes"], 34572);
    assert_eq!(k["spawns_without_digest"], 8);
    // 4.2.3 counts the failed remote spawn only in the exec log.
    let (_, k) = get_json(s.addr, &format!("/api/v1/invocations/{failing}/kpis")).await;
    assert_eq!(k["process_mix"]["remote_execution"], 1);
    assert_eq!(k["signals"]["failed_remote_spawns"], 1);
    let (st, v) = get_json(s.addr, &format!("/api/v1/invocations/{local}/kpis")).await;
    assert_eq!(st, 422);
    assert!(
        v["error"].as_str().unwrap().contains("execution log"),
        "{v}"
    );
    let (_, f) = get_json(s.addr, "/api/v1/fleet").await;
    assert_eq!(f["invocations"], 2);
    assert_eq!(f["skipped"][0]["invocation_id"], local.as_str());
    assert_eq!(
        f["poison"]["invocations_without_digests"], 2,
        "4.2.3 logs carry no action digests"
    );
}

/// Stores the first `n` events of a fixture as an unfinished (live) invocation.
fn store_unfinished(store: &dyn proof_store::Store, scenario: &str, id: &str, n: usize) {
    let f = std::fs::File::open(fixture(scenario)).unwrap();
    let mut events: Vec<Vec<u8>> =
        proof_stream::delimited::DelimitedReader::new(std::io::BufReader::new(f))
            .collect::<Result<_, _>>()
            .unwrap();
    events.truncate(n);
    store
        .open_invocation(&proof_store::InvocationMeta {
            invocation_id: id.to_string(),
            build_id: None,
            source: proof_store::InvocationSource::Bes,
            tenant: None,
            instance: None,
            created_at_ms: 1_795_735_800_000,
        })
        .unwrap();
    let records = proof_store::JournalRecord::bep_events(events);
    store
        .append(id, &records, proof_store::AppendFlags::default())
        .unwrap();
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_invocations_are_not_reanalysed_on_every_fleet_and_metrics_request() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn proof_store::Store> =
        std::sync::Arc::new(proof_store::FsStore::open(dir.path()).unwrap());
    for i in 0..4 {
        store_unfinished(&*store, "remote-build", &format!("live-{i}"), 40);
    }
    let s = serve_store(store.clone(), dir, None).await;
    for _ in 0..3 {
        let (st, v) = get_json(s.addr, "/api/v1/fleet").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["invocations"], 4, "{v}");
        let (st, _, _) = get(s.addr, "/metrics").await;
        assert_eq!(st, 200);
    }
    let (_, _, text) = get(s.addr, "/metrics").await;
    assert_eq!(
        metric(&text, "proof_analyses_total"),
        4.0,
        "each unchanged live invocation is analyzed once, not once per request"
    );
    assert!(metric(&text, "proof_analysis_cache_hits_total") >= 24.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invocation_ids_are_400_and_unknown_ones_404() {
    let s = start().await;
    let long = "a".repeat(200);
    for path in [
        "/api/v1/invocations/bad%20id".to_string(),
        "/api/v1/invocations/.hidden/kpis".to_string(),
        format!("/api/v1/invocations/{long}/evidence"),
        "/api/v1/invocations/a%2Fb/proof".to_string(),
    ] {
        let (st, v) = get_json(s.addr, &path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("invocation id"),
            "{v}"
        );
    }
    let (st, _, _) = get(s.addr, "/invocations/bad%20id").await;
    assert_eq!(st, 400);
    let (st, v) = get_json(s.addr, "/api/v1/invocations/no-such-invocation").await;
    assert_eq!(st, 404, "{v}");
}
