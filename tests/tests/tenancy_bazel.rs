//! Tenant enforcement with real Bazel (Debian's 4.2.3) on the loopback rig:
//! `proof serve --tenants` refuses streams without a token, with an unknown
//! token, with another BES instance name (`--project_id`, 4.2.3's name for
//! `--bes_instance_name`) and with a `--remote_instance_name` the tenant may
//! not use; Bazel prints each reason, and nothing of a refused stream is in
//! the store afterwards. A control run with the right token is stored.
//!
//! Bazel 4.2.3 has no `--bes_header`, and its `--remote_header` is not sent
//! on the BES channel (checked here: a run with it is refused with
//! CREDENTIAL_MISSING). Runs that need a token therefore go through a
//! header-adding forwarder in this test, standing in for the local proxy a
//! 4.x spoke would use (docs/tenants.md). Needs the rig: `bash tests/run-all.sh`.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use proof_e2e::{bep_invocation_id, rig, Server};
use proof_proto::bes::{
    publish_build_event_client::PublishBuildEventClient,
    publish_build_event_server::{PublishBuildEvent, PublishBuildEventServer},
    PublishBuildToolEventStreamRequest, PublishBuildToolEventStreamResponse,
    PublishLifecycleEventRequest,
};
use proof_store::{FsStore, ListFilter, Store};
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Request, Response, Status, Streaming};

/// Forwards every BES call to `upstream`, adding `authorization: Bearer TOKEN`.
struct Forwarder {
    upstream: String,
    token: String,
}

impl Forwarder {
    async fn client(&self) -> Result<PublishBuildEventClient<tonic::transport::Channel>, Status> {
        PublishBuildEventClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(format!("forwarder: {e}")))
    }

    fn with_token<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }
}

type Acks = Pin<Box<dyn Stream<Item = Result<PublishBuildToolEventStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PublishBuildEvent for Forwarder {
    async fn publish_lifecycle_event(
        &self,
        request: Request<PublishLifecycleEventRequest>,
    ) -> Result<Response<()>, Status> {
        let mut c = self.client().await?;
        c.publish_lifecycle_event(self.with_token(request.into_inner()))
            .await
    }

    type PublishBuildToolEventStreamStream = Acks;

    async fn publish_build_tool_event_stream(
        &self,
        request: Request<Streaming<PublishBuildToolEventStreamRequest>>,
    ) -> Result<Response<Acks>, Status> {
        let inbound = tokio_stream::StreamExt::map_while(request.into_inner(), Result::ok);
        let mut c = self.client().await?;
        let acks = c
            .publish_build_tool_event_stream(self.with_token(inbound))
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(acks)))
    }
}

/// Starts a forwarder on a free port in its own runtime thread.
fn forwarder(upstream: &str, token: &str) -> SocketAddr {
    let f = Forwarder {
        upstream: upstream.replace("grpc://", "http://"),
        token: token.into(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let (l, addr) = proof_server::bind("127.0.0.1:0").await.unwrap();
            tx.send(addr).unwrap();
            tonic::transport::Server::builder()
                .add_service(PublishBuildEventServer::new(f))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}

const TOKEN: &str = "spoke-token-0123456789";

fn tenants_file(dir: &Path) -> std::path::PathBuf {
    let hash = proof_server::tenants::tenancy::hash_token(TOKEN);
    let p = dir.join("tenants.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[[tenant]]
id = "spoke"
lane = "trusted-writer"
tokens_sha256 = ["{hash}"]
bes_instance_names = ["spoke"]
remote_instance_names = [""]
pools = ["*"]
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn refused_streams_show_the_reason_in_bazel_and_leave_the_store_unchanged() {
    let rig = rig();
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let tenants = tenants_file(tmp.path());
    let mut server = Server::start(
        "127.0.0.1:0",
        &store_dir,
        &["--tenants", tenants.to_str().unwrap()],
    );
    let good = forwarder(&server.target(), TOKEN);
    let wrong = forwarder(&server.target(), "not-a-tenant-token");
    let ws = tmp.path().join("ws");
    rig.spoke(&ws);
    let remote = format!("--remote_executor={}", rig.remote_executor);

    // (name, BES backend, extra flags, what Bazel must print)
    let cases: Vec<(&str, String, Vec<&str>, &[&str])> = vec![
        (
            "no-token",
            server.target(),
            vec!["--project_id=spoke"],
            &["UNAUTHENTICATED", "CREDENTIAL_MISSING"],
        ),
        (
            "remote-header-is-not-sent-to-bes",
            server.target(),
            vec![
                "--project_id=spoke",
                "--remote_header=Authorization=Bearer spoke-token-0123456789",
            ],
            &["UNAUTHENTICATED", "CREDENTIAL_MISSING"],
        ),
        (
            "unknown-token",
            format!("grpc://{wrong}"),
            vec!["--project_id=spoke"],
            &["UNAUTHENTICATED", "CREDENTIAL_UNKNOWN"],
        ),
        (
            "other-bes-instance",
            format!("grpc://{good}"),
            vec!["--project_id=other-team"],
            &[
                "PERMISSION_DENIED",
                "BES_INSTANCE_NOT_ALLOWED",
                "--bes_instance_name=\"other-team\"",
            ],
        ),
        (
            "other-remote-instance",
            format!("grpc://{good}"),
            vec!["--project_id=spoke", "--remote_instance_name=main"],
            &[
                "PERMISSION_DENIED",
                "REMOTE_INSTANCE_NOT_ALLOWED",
                "--remote_instance_name=\"main\"",
            ],
        ),
    ];
    let mut denied_ids = Vec::new();
    for (name, backend, extra, expect) in &cases {
        let bep = tmp.path().join(format!("{name}.bep"));
        let mut args = vec![
            "build".to_string(),
            "--config=proof".into(),
            "//...".into(),
            format!("--bes_backend={backend}"),
            "--bes_timeout=30s".into(),
            remote.clone(),
            format!("--build_event_binary_file={}", bep.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rig.bazel(&ws, &args);
        for e in *expect {
            assert!(
                out.output.contains(e),
                "{name}: Bazel's output does not show {e:?}:\n{}",
                out.output
            );
        }
        assert!(
            out.output
                .contains("The Build Event Protocol upload failed"),
            "{name}: {}",
            out.output
        );
        denied_ids.push((name.to_string(), bep_invocation_id(&bep)));
    }

    // Control: the right token, instance names the tenant may use.
    let bep = tmp.path().join("allowed.bep");
    let out = rig.bazel(
        &ws,
        &[
            "build",
            "--config=proof",
            "//...",
            &format!("--bes_backend=grpc://{good}"),
            "--bes_timeout=30s",
            &remote,
            "--project_id=spoke",
            &format!("--build_event_binary_file={}", bep.display()),
        ],
    );
    assert_eq!(out.code, 0, "the allowed build failed:\n{}", out.output);
    assert!(
        !out.output.contains("upload failed"),
        "the allowed stream was refused:\n{}",
        out.output
    );
    let allowed_id = bep_invocation_id(&bep);
    rig.shutdown(&ws);

    // The store has one owner: stop the server, then read it.
    server.kill9();
    let store = FsStore::open(&store_dir).unwrap();
    for (name, id) in &denied_ids {
        assert!(
            store.get(id).unwrap().is_none(),
            "{name}: the refused invocation {id} is in the store"
        );
    }
    let all = store.list(&ListFilter::default()).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| r.meta.invocation_id.as_str())
            .collect::<Vec<_>>(),
        vec![allowed_id.as_str()],
        "only the allowed invocation is stored"
    );
    let rec = &all[0];
    assert_eq!(rec.meta.tenant.as_deref(), Some("spoke"));
    assert_eq!(rec.meta.instance.as_deref(), Some("spoke"));
    assert!(rec.state.complete, "{:?}", rec.state.incomplete_reason);
}
