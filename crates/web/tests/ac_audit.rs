//! The continuous AC audit's HTTP side: `/metrics` exports its figures only
//! when it is on; `/ac-audit` lists the last run's suspects; with tenants,
//! a tenant sees only the suspects its own proofs relied on, naming only
//! its own proofs.

use std::sync::Arc;

use proof_acaudit::report::{finish, plan, ProofInput};
use proof_acaudit::{read_ledger, Current, TargetOutputs};
use proof_proto::ledger::{ledger_record, Header, LedgerRecord, OperationsPage};
use proof_proto::longrunning::{operation, ListOperationsResponse, Operation};
use proof_proto::reapi::{
    ActionResult, Digest, ExecuteOperationMetadata, ExecuteResponse, ExecutedActionMetadata,
    OutputFile,
};
use proof_server::Metrics;
use prost::Message;

fn result(hash: &str) -> ActionResult {
    ActionResult {
        output_files: vec![OutputFile {
            path: "bazel-out/k8-fastbuild/bin/hello.txt".into(),
            digest: Some(Digest {
                hash: hash.into(),
                size_bytes: 6,
            }),
            ..Default::default()
        }],
        execution_metadata: Some(ExecutedActionMetadata {
            worker: "bot-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn any(t: &str, value: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/build.bazel.remote.execution.v2.{t}"),
        value,
    }
}

/// A proof of `tenant` whose ledger executed action `aa…/140` with `result("11…")`.
fn input(proof: &str, tenant: &str) -> ProofInput {
    let op = Operation {
        name: "op".into(),
        metadata: Some(any(
            "ExecuteOperationMetadata",
            ExecuteOperationMetadata {
                stage: 4,
                action_digest: Some(Digest {
                    hash: "a".repeat(64),
                    size_bytes: 140,
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        )),
        done: true,
        result: Some(operation::Result::Response(any(
            "ExecuteResponse",
            ExecuteResponse {
                result: Some(result(&"1".repeat(64))),
                ..Default::default()
            }
            .encode_to_vec(),
        ))),
    };
    let mut bytes = Vec::new();
    for rec in [
        ledger_record::Record::Header(Header {
            executor: "grpc://127.0.0.1:1".into(),
            invocation_id: proof.into(),
            instance_names: vec!["main".into()],
            ..Default::default()
        }),
        ledger_record::Record::Page(OperationsPage {
            instance_name: "main".into(),
            response: Some(ListOperationsResponse {
                operations: vec![op],
                next_page_token: String::new(),
            }),
            ..Default::default()
        }),
    ] {
        LedgerRecord { record: Some(rec) }
            .encode_length_delimited(&mut bytes)
            .unwrap();
    }
    ProofInput {
        proof: format!("{proof}.proof.tar"),
        invocation_id: proof.into(),
        classes: vec![],
        tenant: Some(tenant.into()),
        ledger: read_ledger(&bytes).unwrap(),
        outputs: TargetOutputs::default(),
    }
}

async fn serve(metrics: Arc<Metrics>, tenants: Option<&str>) -> std::net::SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn proof_store::Store> =
        Arc::new(proof_store::FsStore::open(dir.path()).unwrap());
    std::mem::forget(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = proof_web::WebConfig {
        store,
        metrics,
        classes: proof_kpi::fleet::TargetClassMap::default(),
        execlog_dir: None,
        proofs: None,
    };
    let tenants = tenants.map(|t| Arc::new(proof_tenancy::Tenants::parse(t).unwrap()));
    tokio::spawn(proof_web::serve_http_for(
        listener,
        cfg,
        tenants,
        std::future::pending(),
    ));
    addr
}

async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn tenants_file() -> String {
    let mut s = String::new();
    for id in ["acme", "beta", "gamma"] {
        s.push_str(&format!(
            "[[tenant]]\nid = \"{id}\"\nlane = \"trusted-writer\"\ntokens_sha256 = [\"{}\"]\nbes_instance_names = [\"*\"]\nremote_instance_names = [\"*\"]\npools = [\"*\"]\n\n",
            proof_tenancy::hash_token(&format!("token-{id}"))
        ));
    }
    s
}

#[tokio::test]
async fn suspects_are_shown_and_scoped_to_the_tenant() {
    let metrics = Arc::new(Metrics::default());
    // Off: no AC metrics, and the page says how to turn it on.
    let addr = serve(metrics.clone(), None).await;
    let (_, m) = get(addr, "/metrics", "").await;
    assert!(!m.contains("proof_ac_"), "{m}");
    let (status, page) = get(addr, "/ac-audit", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("--audit-interval"), "{page}");

    // One entry, relied on by an acme and a beta proof, rewritten.
    let p = plan(&[input("inv-acme", "acme"), input("inv-beta", "beta")]);
    let report = finish(
        &p,
        &[Current::Found(Box::new(result(&"2".repeat(64))))],
        "grpc://127.0.0.1:1",
        "2026-12-06T22:00:00Z",
        vec![],
        &|_, _| None,
    );
    assert_eq!(report.exit_code, 1);
    metrics.ac_audit.enable();
    metrics.ac_audit.record(report, 1_796_000_000.0);

    let (_, m) = get(addr, "/metrics", "").await;
    assert!(
        m.contains("proof_ac_poison_suspects{instance_name=\"main\"} 1"),
        "{m}"
    );
    assert!(m.contains("proof_ac_entries_audited_total 1"), "{m}");
    assert!(
        m.contains("proof_ac_audit_last_success_timestamp_seconds 1796000000"),
        "{m}"
    );
    let (_, page) = get(addr, "/ac-audit", "").await;
    let table = &page[page.find("id=\"ac-suspects\"").expect("a suspects table")..];
    assert!(table.contains("inv-acme.proof.tar") && table.contains("inv-beta.proof.tar"));

    // With tenants: acme sees its own proof only, gamma nothing.
    let addr = serve(metrics.clone(), Some(&tenants_file())).await;
    let (status, _) = get(addr, "/api/v1/ac-audit", "wrong").await;
    assert_eq!(status, 401);
    let (status, body) = get(addr, "/api/v1/ac-audit", "token-acme").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["suspects"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(
        v["suspects"][0]["proofs"],
        serde_json::json!(["inv-acme.proof.tar"])
    );
    assert!(!body.contains("inv-beta"), "{body}");
    assert!(v.get("report").is_none());
    let (_, page) = get(addr, "/ac-audit", "token-acme").await;
    assert!(
        page.contains("inv-acme.proof.tar") && !page.contains("inv-beta"),
        "{page}"
    );
    let (_, body) = get(addr, "/api/v1/ac-audit", "token-gamma").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["suspects"], serde_json::json!([]));
    let (_, page) = get(addr, "/ac-audit", "token-gamma").await;
    assert!(
        page.contains("id=\"ac-clean\"") && !page.contains("inv-"),
        "{page}"
    );
}
