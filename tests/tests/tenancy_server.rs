//! Tenant enforcement at ingest, against the in-process BES server with
//! `TenantAdmission`, on the Bazel 4.2.3 `remote-build` fixture (its command
//! line: `--remote_instance_name` unset, no `Pool`, uploads on by default).
//!
//! Checked everywhere: the gRPC code, the `google.rpc.ErrorInfo` detail
//! (reason, domain, metadata), the denial counter, and that nothing of a
//! denied stream is left in the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proof_e2e::{delimited_records, fixture, stored_events};
use proof_proto::bep;
use proof_proto::bes::{
    build_event::Event, publish_build_event_client::PublishBuildEventClient,
    stream_id::BuildComponent, BuildEvent, OrderedBuildEvent, PublishBuildToolEventStreamRequest,
    PublishBuildToolEventStreamResponse, PublishLifecycleEventRequest, StreamId,
};
use proof_proto::command_line::command_line_section::SectionType;
use proof_server::replay::{replay, tool_events, ReplayError, ReplayOptions};
use proof_server::tenants::{error_info, tenancy::hash_token, tenancy::Tenants};
use proof_server::{Metrics, TenantAdmission};
use proof_store::ListFilter;
use proof_testkit::server::{ServerBuilder, TestServer};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const LIMIT: Duration = proof_testkit::timeouts::SCENARIO;

/// The in-process server with `tenants.toml` admission.
struct InProc(TestServer);

impl std::ops::Deref for InProc {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.0
    }
}

/// `builder` admitting by the tenants of `tenants_toml`.
fn tenanted(builder: ServerBuilder, tenants_toml: &str) -> ServerBuilder {
    let tenants = Arc::new(Tenants::parse(tenants_toml).unwrap());
    builder.admission(Arc::new(TenantAdmission::new(tenants)))
}

impl InProc {
    async fn start(tenants_toml: &str) -> InProc {
        Self::start_with(tenants_toml, proof_server::RpcLimits::default()).await
    }

    async fn start_with(tenants_toml: &str, limits: proof_server::RpcLimits) -> InProc {
        InProc(
            tenanted(TestServer::builder(), tenants_toml)
                .limits(limits)
                .start()
                .await,
        )
    }

    /// A second server on `other`'s store: a replica (another process's
    /// in-memory state, one store).
    async fn replica_of(other: &InProc, tenants_toml: &str) -> InProc {
        InProc(
            tenanted(TestServer::on(other.store.clone()), tenants_toml)
                .start()
                .await,
        )
    }

    fn denials(&self, reason: &str) -> u64 {
        self.metrics
            .denials()
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }

    fn nothing_stored(&self) {
        let all = self.store.list(&ListFilter::default()).unwrap();
        assert!(
            all.is_empty(),
            "a denied stream left invocations: {:?}",
            all.iter()
                .map(|r| &r.meta.invocation_id)
                .collect::<Vec<_>>()
        );
    }
}

/// Tenants: `a` (token-a) may use BES instance "a" or unset, remote instance
/// "" only, pools "" and "linux"; `pr` (token-pr) is pr-read-only on
/// anything; `tiny` (token-tiny) has small quotas.
fn tenants_toml(tiny_quota: &str) -> String {
    format!(
        r#"
[[tenant]]
id = "a"
lane = "trusted-writer"
tokens_sha256 = ["{a}"]
bes_instance_names = ["a", ""]
remote_instance_names = [""]
pools = ["", "linux"]

[[tenant]]
id = "b"
lane = "trusted-writer"
tokens_sha256 = ["{b}"]
bes_instance_names = ["b"]
remote_instance_names = ["main"]
pools = ["*"]

[[tenant]]
id = "pr"
lane = "pr-read-only"
tokens_sha256 = ["{pr}"]
bes_instance_names = ["*"]
remote_instance_names = ["*"]
pools = ["*"]

[[tenant]]
id = "ro"
lane = "pr-read-only"
tokens_sha256 = ["{ro}"]
bes_instance_names = ["*"]
remote_instance_names = ["a"]
pools = ["*"]

[[tenant]]
id = "tiny"
lane = "trusted-writer"
tokens_sha256 = ["{tiny}"]
bes_instance_names = ["*"]
remote_instance_names = ["*"]
pools = ["*"]
[tenant.quota]
{tiny_quota}
"#,
        a = hash_token("token-a"),
        b = hash_token("token-b"),
        pr = hash_token("token-pr"),
        tiny = hash_token("token-tiny"),
        ro = hash_token("token-ro"),
    )
}

fn fixture_events() -> Vec<Bytes> {
    delimited_records(&fixture("remote-build", "bep.bin"))
        .into_iter()
        .map(Bytes::from)
        .collect()
}

fn invocation_id(events: &[Bytes]) -> String {
    proof_stream::probe::probe(&events[0])
        .unwrap()
        .started_uuid
        .unwrap()
}

/// The fixture with `flags` appended to both OptionsParsed.cmd_line and the
/// canonical command line's "command options".
fn with_flags(events: &[Bytes], flags: &[(&str, &str)]) -> Vec<Bytes> {
    events
        .iter()
        .map(|b| {
            let mut ev = bep::BuildEvent::decode(b.as_ref()).unwrap();
            let mut changed = false;
            match &mut ev.payload {
                Some(bep::build_event::Payload::OptionsParsed(o)) => {
                    for (n, v) in flags {
                        o.cmd_line.push(format!("--{n}={v}"));
                    }
                    changed = true;
                }
                Some(bep::build_event::Payload::StructuredCommandLine(cl))
                    if cl.command_line_label == "canonical" =>
                {
                    for s in &mut cl.sections {
                        if let (true, Some(SectionType::OptionList(l))) =
                            (s.section_label == "command options", &mut s.section_type)
                        {
                            for (n, v) in flags {
                                l.option.push(proof_proto::command_line::Option {
                                    combined_form: format!("--{n}={v}"),
                                    option_name: n.to_string(),
                                    option_value: v.to_string(),
                                    ..Default::default()
                                });
                            }
                            changed = true;
                        }
                    }
                }
                _ => {}
            }
            if changed {
                Bytes::from(ev.encode_to_vec())
            } else {
                b.clone()
            }
        })
        .collect()
}

fn opts(target: &str, id: &str, token: Option<&str>, project_id: &str) -> ReplayOptions {
    ReplayOptions {
        target: target.into(),
        invocation_id: id.into(),
        build_id: format!("build-{id}"),
        project_id: project_id.into(),
        headers: token
            .map(|t| vec![("authorization".into(), format!("Bearer {t}"))])
            .unwrap_or_default(),
        max_retries: 0,
        backoff: Duration::from_millis(10),
        faults: Default::default(),
        finish: true,
    }
}

/// One RPC driven event by event: each send waits for its ack (or the status).
struct OneRpc {
    tx: mpsc::Sender<PublishBuildToolEventStreamRequest>,
    rx: tonic::Streaming<PublishBuildToolEventStreamResponse>,
    id: String,
    project_id: String,
}

async fn channel(target: &str) -> Channel {
    Endpoint::from_shared(target.replace("grpc://", "http://"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn open(target: &str, id: &str, token: Option<&str>, project_id: &str) -> OneRpc {
    let (tx, rx) = mpsc::channel(16);
    let mut req = tonic::Request::new(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
        rx,
    ));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let resp = PublishBuildEventClient::new(channel(target).await)
        .publish_build_tool_event_stream(req)
        .await
        .expect("the RPC opens; refusals come on the response stream");
    OneRpc {
        tx,
        rx: resp.into_inner(),
        id: id.into(),
        project_id: project_id.into(),
    }
}

/// Opens an RPC whose request stream never yields a message: the refusal
/// must come from the request head alone.
async fn open_refused(target: &str, token: Option<&str>) -> tonic::Status {
    let mut req = tonic::Request::new(tonic::codegen::tokio_stream::pending::<
        PublishBuildToolEventStreamRequest,
    >());
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut client = PublishBuildEventClient::new(channel(target).await);
    match tokio::time::timeout(LIMIT, client.publish_build_tool_event_stream(req))
        .await
        .unwrap()
    {
        Err(st) => st,
        Ok(resp) => {
            // Opened: the refusal, if any, can only come after a message.
            let mut rx = resp.into_inner();
            match tokio::time::timeout(Duration::from_secs(2), rx.message()).await {
                Err(_) => panic!("the RPC was admitted without any message and waits for one: no refusal from the request head"),
                Ok(Ok(m)) => panic!("the RPC opened and answered {m:?}"),
                Ok(Err(st)) => panic!("the RPC opened and was refused only later: {st:?}"),
            }
        }
    }
}

impl OneRpc {
    fn request(&self, seq: u64, event: Event) -> PublishBuildToolEventStreamRequest {
        PublishBuildToolEventStreamRequest {
            ordered_build_event: Some(OrderedBuildEvent {
                stream_id: Some(StreamId {
                    build_id: format!("build-{}", self.id),
                    component: BuildComponent::Tool as i32,
                    invocation_id: self.id.clone(),
                }),
                sequence_number: seq as i64,
                event: Some(BuildEvent {
                    event_time: None,
                    event: Some(event),
                }),
            }),
            notification_keywords: Vec::new(),
            project_id: self.project_id.clone(),
            check_preceding_lifecycle_events_present: false,
        }
    }

    async fn send(&mut self, seq: u64, event: Event) -> Result<u64, tonic::Status> {
        let req = self.request(seq, event);
        let _ = self.tx.send(req).await;
        match tokio::time::timeout(LIMIT, self.rx.message())
            .await
            .unwrap()
        {
            Ok(Some(ack)) => Ok(ack.sequence_number as u64),
            Ok(None) => panic!("the server ended the RPC without a status"),
            Err(s) => Err(s),
        }
    }

    /// Sends events `from..=to` (1-based) of `events` without waiting, then
    /// reads their acks (a tenant's events before its canonical command line
    /// are only acked once it arrived).
    async fn send_all(
        &mut self,
        events: &[Event],
        from: u64,
        to: u64,
    ) -> Result<(), tonic::Status> {
        for seq in from..=to {
            let req = self.request(seq, events[seq as usize - 1].clone());
            let _ = self.tx.send(req).await;
        }
        for seq in from..=to {
            match tokio::time::timeout(LIMIT, self.rx.message())
                .await
                .unwrap()
            {
                Ok(Some(ack)) => assert_eq!(ack.sequence_number as u64, seq),
                Ok(None) => panic!("the server ended the RPC without a status"),
                Err(s) => return Err(s),
            }
        }
        Ok(())
    }

    /// Sends events `from..=to` (1-based) of `events`, one ack at a time.
    async fn send_range(
        &mut self,
        events: &[Event],
        from: u64,
        to: u64,
    ) -> Result<(), tonic::Status> {
        for seq in from..=to {
            let acked = self.send(seq, events[seq as usize - 1].clone()).await?;
            assert_eq!(acked, seq);
        }
        Ok(())
    }
}

/// Asserts the code, the ErrorInfo reason/domain and returns the metadata.
fn denied(
    status: &tonic::Status,
    code: Code,
    reason: &str,
) -> std::collections::BTreeMap<String, String> {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().ends_with(&format!("[{reason}]")),
        "message names the reason: {}",
        status.message()
    );
    let info = error_info(status).expect("status details hold a google.rpc.ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "rbe-proof.dev");
    info.metadata
}

fn refused(e: ReplayError) -> (Code, String) {
    match e {
        ReplayError::Refused { code, message, .. }
        | ReplayError::Exhausted { code, message, .. } => (code, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Tries `attempt` up to `tries` times, 20 ms apart, while it is refused with
/// ResourceExhausted (a slot not given back yet); whether it was let in.
async fn let_in_within<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    tries: usize,
    mut attempt: impl FnMut() -> F,
) -> bool {
    for _ in 0..tries {
        match attempt().await {
            Ok(_) => return true,
            Err(st) => {
                assert_eq!(st.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    false
}

#[tokio::test]
async fn a_tenant_with_its_token_streams_and_owns_the_invocation() {
    let s = InProc::start(&tenants_toml("")).await;
    let events = fixture_events();
    let id = invocation_id(&events);
    replay(
        events.clone(),
        &opts(&s.target(), &id, Some("token-a"), "a"),
    )
    .await
    .unwrap();
    let rec = s.store.get(&id).unwrap().unwrap();
    assert_eq!(rec.meta.tenant.as_deref(), Some("a"));
    assert_eq!(rec.meta.instance.as_deref(), Some("a"));
    assert_eq!(
        stored_events(s.store.as_ref(), &id),
        events.iter().map(|b| b.to_vec()).collect::<Vec<_>>()
    );
    let of = |t: &str| {
        s.store
            .list(&ListFilter {
                tenant: Some(t.into()),
                ..Default::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!((of("a"), of("b")), (1, 0));
    assert!(s.metrics.denials().is_empty(), "{:?}", s.metrics.denials());
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    let s = InProc::start(&tenants_toml("")).await;
    let events = tool_events(fixture_events(), true);
    let id = invocation_id(&fixture_events());
    let _ = &events;
    for (token, reason) in [
        (None, "CREDENTIAL_MISSING"),
        (Some("token-x"), "CREDENTIAL_UNKNOWN"),
    ] {
        let st = open_refused(&s.target(), token).await;
        let md = denied(&st, Code::Unauthenticated, reason);
        assert!(!md.values().any(|v| v.contains("token-x")), "{md:?}");
        assert!(!st.message().contains("token-x"));
    }
    // A header that is not `Bearer TOKEN`.
    let (code, msg) = refused(
        replay(
            fixture_events(),
            &ReplayOptions {
                headers: vec![("authorization".into(), "token-a".into())],
                ..opts(&s.target(), &id, None, "a")
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("--bes_header=Authorization=Bearer"), "{msg}");
    assert_eq!(s.denials("CREDENTIAL_MISSING"), 2);
    assert_eq!(s.denials("CREDENTIAL_UNKNOWN"), 1);
    s.nothing_stored();
}

#[tokio::test]
async fn another_tenants_bes_instance_name_is_permission_denied() {
    let s = InProc::start(&tenants_toml("")).await;
    let events = tool_events(fixture_events(), true);
    let id = invocation_id(&fixture_events());
    let mut rpc = open(&s.target(), &id, Some("token-a"), "b").await;
    let st = rpc.send(1, events[0].clone()).await.unwrap_err();
    let md = denied(&st, Code::PermissionDenied, "BES_INSTANCE_NOT_ALLOWED");
    assert_eq!(md["tenant"], "a");
    assert_eq!(md["bes_instance_name"], "b");
    assert_eq!(s.denials("BES_INSTANCE_NOT_ALLOWED"), 1);
    s.nothing_stored();
}

/// 1-based position of the canonical command line (by payload).
fn canonical_seq(events: &[Bytes]) -> u64 {
    events
        .iter()
        .position(|b| is_canonical(b))
        .expect("the fixture has a canonical command line") as u64
        + 1
}

fn is_canonical(b: &[u8]) -> bool {
    matches!(
        bep::BuildEvent::decode(b).unwrap().payload,
        Some(bep::build_event::Payload::StructuredCommandLine(cl)) if cl.command_line_label == "canonical"
    )
}

/// The stream with the first progress event after the canonical command line
/// replaced by a second canonical command line with `flags` added (its id
/// stays `progress`): what the evidence would read as the build's options.
fn with_hostile_progress(events: &[Bytes], flags: &[(&str, &str)]) -> (Vec<Bytes>, u64) {
    let canonical = canonical_seq(events) as usize - 1;
    let at = (canonical + 1..events.len())
        .find(|&i| proof_tenancy_kind(&events[i]) == "progress")
        .expect("a progress event after the command line");
    let hostile =
        bep::BuildEvent::decode(with_flags(&events[canonical..=canonical], flags)[0].as_ref())
            .unwrap();
    let mut ev = bep::BuildEvent::decode(events[at].as_ref()).unwrap();
    ev.payload = hostile.payload;
    let mut out = events.to_vec();
    out[at] = Bytes::from(ev.encode_to_vec());
    assert_eq!(proof_tenancy_kind(&out[at]), "progress");
    (out, at as u64 + 1)
}

#[tokio::test]
async fn a_second_canonical_command_line_under_a_progress_id_is_checked_by_its_payload() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    // Tenant ro: remote instance "a" only, read-only lane. Its real command
    // line complies; a progress event carries a second canonical command line
    // that uses instance b and uploads.
    let good = with_flags(
        &bep,
        &[
            ("remote_instance_name", "a"),
            ("remote_upload_local_results", "0"),
        ],
    );
    let (hostile, _) = with_hostile_progress(
        &good,
        &[
            ("remote_instance_name", "b"),
            ("remote_upload_local_results", "1"),
        ],
    );
    let (code, msg) = refused(
        replay(hostile, &opts(&s.target(), &id, Some("token-ro"), ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains("REMOTE_INSTANCE_NOT_ALLOWED") && msg.contains("\"b\""),
        "{msg}"
    );
    s.nothing_stored();
    // The compliant stream alone is stored.
    let id2 = "0a0a0a0a-0000-4000-8000-000000000005";
    ro_ok(&s, rewrite_uuid(&good, &id, id2), id2).await;
}

#[tokio::test]
async fn a_stream_without_a_canonical_command_line_is_refused_and_nothing_is_stored() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let without: Vec<Bytes> = bep.iter().filter(|b| !is_canonical(b)).cloned().collect();
    assert_eq!(without.len(), bep.len() - 1);
    let (code, msg) = refused(
        replay(
            without.clone(),
            &opts(&s.target(), &id, Some("token-a"), "a"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("COMMAND_LINE_MISSING"), "{msg}");
    s.nothing_stored();
    assert_eq!(s.denials("COMMAND_LINE_MISSING"), 1);

    // Event by event: the first events are held, unacked and unstored, and
    // the stream ending without the command line is refused with the reason.
    let id2 = "0a0a0a0a-0000-4000-8000-000000000006";
    let events = tool_events(rewrite_uuid(&without, &id, id2), false);
    let mut rpc = open(&s.target(), id2, Some("token-a"), "a").await;
    for seq in 1..=3u64 {
        let req = rpc.request(seq, events[seq as usize - 1].clone());
        rpc.tx.send(req).await.unwrap();
    }
    drop(rpc.tx);
    let st = tokio::time::timeout(LIMIT, rpc.rx.message())
        .await
        .unwrap()
        .expect_err("no ack before the command line, then the refusal");
    let md = denied(&st, Code::PermissionDenied, "COMMAND_LINE_MISSING");
    assert_eq!(md["events"], "3");
    s.nothing_stored();
}

#[tokio::test]
async fn a_denied_command_line_after_stored_events_deletes_the_invocation_and_retries_get_the_same_answer(
) {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = with_flags(&fixture_events(), &[("remote_instance_name", "main")]);
    let id = invocation_id(&bep);
    // Tenant b may only use --remote_instance_name=main: the command line
    // complies, a later event's payload does not.
    let (bad, bad_seq) = with_hostile_progress(&bep, &[("remote_instance_name", "x")]);
    let events = tool_events(bad, true);
    let canonical = canonical_seq(&bep);
    assert!(bad_seq > canonical + 1);
    let mut rpc = open(&s.target(), &id, Some("token-b"), "b").await;
    rpc.send_all(&events, 1, canonical).await.unwrap();
    rpc.send_range(&events, canonical + 1, bad_seq - 1)
        .await
        .unwrap();
    assert_eq!(
        s.store.state(&id).unwrap().unwrap().last_seq,
        bad_seq - 1,
        "the events before the hostile one were stored"
    );
    let st = rpc
        .send(bad_seq, events[bad_seq as usize - 1].clone())
        .await
        .unwrap_err();
    let md = denied(&st, Code::PermissionDenied, "REMOTE_INSTANCE_NOT_ALLOWED");
    assert_eq!(md["remote_instance_name"], "x");
    assert!(st.message().contains("\"main\""), "{}", st.message());
    s.nothing_stored();
    assert_eq!(Metrics::get(&s.metrics.denied_invocations_deleted), 1);

    // Bazel retries PERMISSION_DENIED: the re-sent event gets the same denial,
    // not a sequence error, and nothing comes back.
    let mut retry = open(&s.target(), &id, Some("token-b"), "b").await;
    let st = retry
        .send(bad_seq, events[bad_seq as usize - 1].clone())
        .await
        .unwrap_err();
    denied(&st, Code::PermissionDenied, "REMOTE_INSTANCE_NOT_ALLOWED");
    s.nothing_stored();
    assert_eq!(s.denials("REMOTE_INSTANCE_NOT_ALLOWED"), 2);

    // The unmodified fixture (instance unset) is refused at its first
    // options event, before anything is stored.
    let plain = fixture_events();
    let id3 = "0a0a0a0a-0000-4000-8000-000000000007";
    let (code, msg) = refused(
        replay(
            rewrite_uuid(&plain, &id, id3),
            &opts(&s.target(), id3, Some("token-b"), "b"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("REMOTE_INSTANCE_NOT_ALLOWED"), "{msg}");
    s.nothing_stored();
}

fn proof_tenancy_kind(b: &[u8]) -> &'static str {
    proof_stream::probe::probe(b).unwrap().kind
}

#[tokio::test]
async fn a_pool_outside_the_tenants_pools_is_denied_and_an_allowed_one_is_stored() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let gpu = with_flags(&bep, &[("remote_default_exec_properties", "Pool=gpu")]);
    let (code, msg) = refused(
        replay(gpu, &opts(&s.target(), &id, Some("token-a"), "a"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        msg.contains("POOL_NOT_ALLOWED") && msg.contains("\"gpu\""),
        "{msg}"
    );
    s.nothing_stored();
    let linux = with_flags(&bep, &[("remote_default_exec_properties", "Pool=linux")]);
    // The same invocation id was denied and is remembered: use a fresh one.
    let id2 = "0a0a0a0a-0000-4000-8000-000000000001";
    let linux = rewrite_uuid(&linux, &id, id2);
    replay(linux, &opts(&s.target(), id2, Some("token-a"), ""))
        .await
        .unwrap();
    assert_eq!(
        s.store.get(id2).unwrap().unwrap().meta.tenant.as_deref(),
        Some("a")
    );
}

/// The events with BuildStarted.uuid replaced.
fn rewrite_uuid(events: &[Bytes], _old: &str, new: &str) -> Vec<Bytes> {
    let mut out = events.to_vec();
    let mut ev = bep::BuildEvent::decode(out[0].as_ref()).unwrap();
    if let Some(bep::build_event::Payload::Started(st)) = &mut ev.payload {
        st.uuid = new.into();
    }
    out[0] = Bytes::from(ev.encode_to_vec());
    out
}

#[tokio::test]
async fn the_pr_lane_must_not_upload_local_results() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let (code, msg) = refused(
        replay(bep.clone(), &opts(&s.target(), &id, Some("token-pr"), "pr"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        msg.contains("LANE_READ_ONLY") && msg.contains("--noremote_upload_local_results"),
        "{msg}"
    );
    s.nothing_stored();
    let id2 = "0a0a0a0a-0000-4000-8000-000000000002";
    let ro = rewrite_uuid(
        &with_flags(&bep, &[("remote_upload_local_results", "0")]),
        &id,
        id2,
    );
    replay(ro, &opts(&s.target(), id2, Some("token-pr"), "pr"))
        .await
        .unwrap();
    assert_eq!(
        s.store.get(id2).unwrap().unwrap().meta.tenant.as_deref(),
        Some("pr")
    );
    assert_eq!(s.denials("LANE_READ_ONLY"), 1);
}

#[tokio::test]
async fn the_byte_quota_discards_the_invocation() {
    let s = InProc::start(&tenants_toml("bytes_per_invocation = 4000")).await;
    let bep = fixture_events();
    let total: usize = bep.iter().map(|b| b.len()).sum();
    assert!(
        total > 4000,
        "the fixture is larger than the quota ({total})"
    );
    let id = invocation_id(&bep);
    let (code, msg) = refused(
        replay(bep, &opts(&s.target(), &id, Some("token-tiny"), "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::ResourceExhausted);
    assert!(
        msg.contains("INVOCATION_BYTES_EXCEEDED") && msg.contains("4000"),
        "{msg}"
    );
    s.nothing_stored();
    assert_eq!(s.denials("INVOCATION_BYTES_EXCEEDED"), 1);
}

#[tokio::test]
async fn concurrent_streams_are_limited_and_the_slot_is_released_when_the_rpc_ends() {
    let s = InProc::start(&tenants_toml("concurrent_streams = 1")).await;
    let bep = fixture_events();
    let events = tool_events(bep.clone(), true);
    let id = invocation_id(&bep);
    let canonical = canonical_seq(&bep);
    let mut first = open(&s.target(), &id, Some("token-tiny"), "x").await;
    first.send_all(&events, 1, canonical).await.unwrap();
    let id2 = "0a0a0a0a-0000-4000-8000-000000000003";
    let events2 = tool_events(rewrite_uuid(&bep, &id, id2), true);
    let mut second = open(&s.target(), id2, Some("token-tiny"), "x").await;
    let st = second.send(1, events2[0].clone()).await.unwrap_err();
    let md = denied(&st, Code::ResourceExhausted, "CONCURRENT_STREAMS_EXCEEDED");
    assert_eq!(md["limit"], "1");
    assert!(s.store.get(id2).unwrap().is_none());
    // The first RPC ends (half-close): its slot is free again.
    first
        .send_range(&events, canonical + 1, events.len() as u64)
        .await
        .unwrap();
    drop(first.tx);
    assert!(first.rx.message().await.unwrap().is_none());
    let (s, events2) = (&s, &events2);
    let ok = let_in_within(50, || async move {
        let mut third = open(&s.target(), id2, Some("token-tiny"), "x").await;
        third.send_all(events2, 1, canonical).await
    })
    .await;
    assert!(ok, "the slot was never released");
}

#[tokio::test]
async fn invocations_per_hour_and_a_retry_of_an_existing_invocation_is_not_a_new_one() {
    let s = InProc::start(&tenants_toml("invocations_per_hour = 1")).await;
    let bep = fixture_events();
    let events = tool_events(bep.clone(), true);
    let id = invocation_id(&bep);
    let canonical = canonical_seq(&bep);
    let mut first = open(&s.target(), &id, Some("token-tiny"), "x").await;
    first.send_all(&events, 1, canonical).await.unwrap();
    drop(first);
    // Resuming the same invocation on a new RPC is admitted.
    let mut resumed = open(&s.target(), &id, Some("token-tiny"), "x").await;
    resumed
        .send_range(&events, canonical + 1, events.len() as u64)
        .await
        .unwrap();
    let id2 = "0a0a0a0a-0000-4000-8000-000000000004";
    let events2 = tool_events(rewrite_uuid(&bep, &id, id2), true);
    let mut second = open(&s.target(), id2, Some("token-tiny"), "x").await;
    let st = second.send(1, events2[0].clone()).await.unwrap_err();
    let md = denied(
        &st,
        Code::ResourceExhausted,
        "INVOCATIONS_PER_HOUR_EXCEEDED",
    );
    assert!(md["retry_after_seconds"].parse::<u64>().unwrap() > 3000);
    assert!(s.store.get(id2).unwrap().is_none());
    assert_eq!(
        s.store.state(&id).unwrap().unwrap().last_seq,
        events.len() as u64
    );
}

#[tokio::test]
async fn a_tenant_cannot_continue_another_tenants_invocation() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let events = tool_events(bep.clone(), true);
    let id = invocation_id(&bep);
    let canonical = canonical_seq(&bep);
    let mut a = open(&s.target(), &id, Some("token-a"), "a").await;
    a.send_all(&events, 1, canonical).await.unwrap();
    drop(a);
    let mut pr = open(&s.target(), &id, Some("token-pr"), "a").await;
    let next = canonical as usize;
    let st = pr
        .send(canonical + 1, events[next].clone())
        .await
        .unwrap_err();
    let md = denied(&st, Code::PermissionDenied, "INVOCATION_OF_OTHER_TENANT");
    assert_eq!(md["tenant"], "pr");
    // a's invocation is untouched.
    let rec = s.store.get(&id).unwrap().unwrap();
    assert_eq!(rec.meta.tenant.as_deref(), Some("a"));
    assert_eq!(rec.state.last_seq, canonical);
}

#[tokio::test]
async fn lifecycle_requests_need_a_token_too() {
    let s = InProc::start(&tenants_toml("")).await;
    let mut client = PublishBuildEventClient::new(channel(&s.target()).await);
    let req = |token: Option<&str>| {
        let mut r = tonic::Request::new(PublishLifecycleEventRequest {
            service_level: 0,
            build_event: Some(OrderedBuildEvent {
                stream_id: Some(StreamId {
                    build_id: "b1".into(),
                    component: BuildComponent::Controller as i32,
                    invocation_id: String::new(),
                }),
                sequence_number: 1,
                event: Some(BuildEvent {
                    event_time: None,
                    event: Some(Event::BuildEnqueued(Default::default())),
                }),
            }),
            stream_timeout: None,
            notification_keywords: vec![],
            project_id: "a".into(),
            check_preceding_lifecycle_events_present: false,
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let st = client.publish_lifecycle_event(req(None)).await.unwrap_err();
    denied(&st, Code::Unauthenticated, "CREDENTIAL_MISSING");
    let st = client
        .publish_lifecycle_event(req(Some("token-b")))
        .await
        .unwrap_err();
    denied(&st, Code::PermissionDenied, "BES_INSTANCE_NOT_ALLOWED");
    client
        .publish_lifecycle_event(req(Some("token-a")))
        .await
        .unwrap();
}

fn lifecycle_req(
    build_id: &str,
    invocation_id: &str,
    project_id: &str,
    token: &str,
    at_secs: i64,
) -> tonic::Request<PublishLifecycleEventRequest> {
    let mut r = tonic::Request::new(PublishLifecycleEventRequest {
        service_level: 0,
        build_event: Some(OrderedBuildEvent {
            stream_id: Some(StreamId {
                build_id: build_id.into(),
                component: BuildComponent::Controller as i32,
                invocation_id: invocation_id.into(),
            }),
            sequence_number: 1,
            event: Some(BuildEvent {
                event_time: Some(prost_types::Timestamp {
                    seconds: at_secs,
                    nanos: 0,
                }),
                event: Some(Event::InvocationAttemptStarted(Default::default())),
            }),
        }),
        stream_timeout: None,
        notification_keywords: vec![],
        project_id: project_id.into(),
        check_preceding_lifecycle_events_present: false,
    });
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn lifecycle_rows_belong_to_their_tenant_and_another_tenants_invocation_is_refused() {
    let s = InProc::start(&tenants_toml("")).await;
    let mut client = PublishBuildEventClient::new(channel(&s.target()).await);
    let events = fixture_events();
    let id = invocation_id(&events);
    let build = format!("build-{id}");
    // Before the stream: tenant b writes first for a's future invocation, then a.
    client
        .publish_lifecycle_event(lifecycle_req(&build, &id, "b", "token-b", 100))
        .await
        .unwrap();
    client
        .publish_lifecycle_event(lifecycle_req(&build, &id, "a", "token-a", 200))
        .await
        .unwrap();
    replay(events, &opts(&s.target(), &id, Some("token-a"), "a"))
        .await
        .unwrap();
    let rec = s.store.get(&id).unwrap().unwrap();
    assert_eq!(rec.meta.tenant.as_deref(), Some("a"));
    assert_eq!(
        rec.lifecycle.attempt_started_at_ms,
        Some(200_000),
        "a's invocation shows a's lifecycle row, not b's earlier one"
    );
    // Now that the invocation is a's, b is refused and nothing of it is stored.
    let st = client
        .publish_lifecycle_event(lifecycle_req(&build, &id, "b", "token-b", 300))
        .await
        .unwrap_err();
    let md = denied(&st, Code::PermissionDenied, "INVOCATION_OF_OTHER_TENANT");
    assert_eq!(md.get("invocation_id"), Some(&id));
    assert_eq!(s.store.get(&id).unwrap().unwrap().lifecycle, rec.lifecycle);
}

#[tokio::test]
async fn an_unauthenticated_rpc_is_refused_from_its_head_before_any_message_is_read() {
    let s = InProc::start(&tenants_toml("")).await;
    for _ in 0..8 {
        let st = open_refused(&s.target(), None).await;
        denied(&st, Code::Unauthenticated, "CREDENTIAL_MISSING");
    }
    let st = open_refused(&s.target(), Some("token-x")).await;
    denied(&st, Code::Unauthenticated, "CREDENTIAL_UNKNOWN");
    assert_eq!(s.denials("CREDENTIAL_MISSING"), 8);
    // The same for lifecycle requests (unary): an unknown token is refused.
    let mut client = PublishBuildEventClient::new(channel(&s.target()).await);
    let mut req = tonic::Request::new(PublishLifecycleEventRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer token-x".parse().unwrap());
    let st = client.publish_lifecycle_event(req).await.unwrap_err();
    denied(&st, Code::Unauthenticated, "CREDENTIAL_UNKNOWN");
    s.nothing_stored();
}

#[tokio::test]
async fn rpcs_per_peer_are_limited_and_a_closed_rpc_frees_its_place() {
    let s = InProc::start_with(
        &tenants_toml(""),
        proof_server::RpcLimits {
            rpcs_per_peer: 2,
            ..Default::default()
        },
    )
    .await;
    let id = invocation_id(&fixture_events());
    let first = open(&s.target(), &id, Some("token-a"), "a").await;
    let _second = open(&s.target(), &id, Some("token-a"), "a").await;
    let st = open_refused(&s.target(), Some("token-a")).await;
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("per peer"), "{}", st.message());
    assert_eq!(Metrics::get(&s.metrics.stream_errors_peer_limit), 1);
    drop(first);
    let s = &s;
    let ok = let_in_within(100, || async move {
        let mut req = tonic::Request::new(tonic::codegen::tokio_stream::pending::<
            PublishBuildToolEventStreamRequest,
        >());
        req.metadata_mut()
            .insert("authorization", "Bearer token-a".parse().unwrap());
        let mut client = PublishBuildEventClient::new(channel(&s.target()).await);
        client.publish_build_tool_event_stream(req).await
    })
    .await;
    assert!(ok, "the closed RPC never gave its place back");
}

#[tokio::test]
async fn an_rpc_that_sends_nothing_is_closed_after_the_bound() {
    let s = InProc::start_with(
        &tenants_toml(""),
        proof_server::RpcLimits {
            first_message_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    // No first message.
    let mut silent = open(&s.target(), &id, Some("token-a"), "a").await;
    let st = tokio::time::timeout(LIMIT, silent.rx.message())
        .await
        .expect("the server closes a silent RPC")
        .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    // Silent after a complete command line: closed, and what was acked stays.
    let events = tool_events(bep.clone(), true);
    let canonical = canonical_seq(&bep);
    let mut rpc = open(&s.target(), &id, Some("token-a"), "a").await;
    rpc.send_all(&events, 1, canonical).await.unwrap();
    let st = tokio::time::timeout(LIMIT, rpc.rx.message())
        .await
        .expect("the server closes an idle RPC")
        .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    assert_eq!(Metrics::get(&s.metrics.stream_errors_idle), 2);
    assert_eq!(s.store.state(&id).unwrap().unwrap().last_seq, canonical);
}

#[tokio::test]
async fn a_remembered_denial_is_only_answered_to_the_tenant_it_was_given_to() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    // Tenant b may only use remote instance "main": denied and remembered.
    let (code, msg) = refused(
        replay(bep.clone(), &opts(&s.target(), &id, Some("token-b"), "b"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("\"main\""), "{msg}");
    // Anyone else sending that invocation id learns nothing of b's limits.
    let st = open_refused(&s.target(), None).await;
    assert!(!st.message().contains("main"), "{}", st.message());
    replay(bep.clone(), &opts(&s.target(), &id, Some("token-a"), "a"))
        .await
        .expect("tenant a is judged on its own stream, not on b's remembered denial");
    assert_eq!(
        s.store.get(&id).unwrap().unwrap().meta.tenant.as_deref(),
        Some("a")
    );
}

/// Sends `(seq, event)` without waiting for anything.
async fn push(rpc: &OneRpc, seq: u64, event: &Event) {
    rpc.tx.send(rpc.request(seq, event.clone())).await.unwrap();
}

/// [trust 4] finding 1, on two replicas of one store (so no in-memory state
/// of one server protects the other's streams): tenant b opens an RPC for
/// tenant a's invocation id before it exists and sends one event, which is
/// held (no command line yet). a streams its invocation through the other
/// replica. b's half-close used to delete a's invocation; b's events
/// numbered after a's last used to be appended to a's journal.
#[tokio::test]
async fn a_held_rpc_of_another_tenant_can_neither_delete_nor_extend_an_invocation() {
    let toml = tenants_toml("");
    let r1 = InProc::start(&toml).await;
    let r2 = InProc::replica_of(&r1, &toml).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let a_events = tool_events(bep.clone(), true);
    let n = a_events.len() as u64;
    let b_events = tool_events(with_flags(&bep, &[("remote_instance_name", "main")]), true);
    let canonical = canonical_seq(&bep);

    // Half-close: b holds one event, a streams everything, b closes.
    let b = open(&r1.target(), &id, Some("token-b"), "b").await;
    push(&b, 1, &b_events[0]).await;
    replay(bep.clone(), &opts(&r2.target(), &id, Some("token-a"), "a"))
        .await
        .unwrap();
    let OneRpc { tx, mut rx, .. } = b;
    drop(tx);
    let st = tokio::time::timeout(LIMIT, rx.message())
        .await
        .unwrap()
        .expect_err("b's stream never had a command line");
    denied(&st, Code::PermissionDenied, "COMMAND_LINE_MISSING");
    let rec = r1
        .store
        .get(&id)
        .unwrap()
        .expect("a's invocation is still there");
    assert_eq!(rec.meta.tenant.as_deref(), Some("a"));
    assert!(rec.state.finalized && rec.state.complete, "{:?}", rec.state);
    assert_eq!(rec.state.last_seq, n);
    assert_eq!(Metrics::get(&r1.metrics.denied_invocations_deleted), 0);

    // Append: a's stream is open (all but its last event stored); b's held
    // event is numbered after a's last, then b's own command line opens its gate.
    let id2 = "0a0a0a0a-0000-4000-8000-0000000000f1";
    let a_events = tool_events(rewrite_uuid(&bep, &id, id2), true);
    let mut b = open(&r1.target(), id2, Some("token-b"), "b").await;
    push(&b, n - 1, &b_events[canonical as usize]).await;
    let mut a = open(&r2.target(), id2, Some("token-a"), "a").await;
    a.send_all(&a_events, 1, canonical).await.unwrap();
    a.send_range(&a_events, canonical + 1, n - 2).await.unwrap();
    let st = b
        .send(n, b_events[canonical as usize - 1].clone())
        .await
        .unwrap_err();
    denied(&st, Code::PermissionDenied, "INVOCATION_OF_OTHER_TENANT");
    assert!(
        !st.message().contains("\"a\""),
        "the owner is not named: {st:?}"
    );
    let rec = r1.store.get(id2).unwrap().unwrap();
    assert_eq!(
        (rec.meta.tenant.as_deref(), rec.state.last_seq),
        (Some("a"), n - 2)
    );
    // a finishes its own stream; its journal holds only its own events.
    a.send_range(&a_events, n - 1, n).await.unwrap();
    drop(a);
    let stored = stored_events(r1.store.as_ref(), id2);
    let sent: Vec<Vec<u8>> = rewrite_uuid(&bep, &id, id2)
        .iter()
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(stored, sent);
}

/// [trust 4] finding 1 on one server: an id reserved by one tenant's open
/// RPC is refused to another tenant until that RPC ends; the owner then
/// streams as usual.
#[tokio::test]
async fn an_id_reserved_by_another_tenants_open_rpc_is_refused() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let b_events = tool_events(with_flags(&bep, &[("remote_instance_name", "main")]), true);
    let b = open(&s.target(), &id, Some("token-b"), "b").await;
    push(&b, 1, &b_events[0]).await;
    // b's held event carries no ack to wait for: give its batch time to be
    // admitted (loopback, one message) before a arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a = open(&s.target(), &id, Some("token-a"), "a").await;
    let st = a
        .send(1, tool_events(bep.clone(), true)[0].clone())
        .await
        .expect_err("a's event 1 is refused while b's RPC holds the id");
    denied(&st, Code::PermissionDenied, "INVOCATION_OF_OTHER_TENANT");
    s.nothing_stored();
    drop(b);
    // b's RPC ended: a (Bazel retries) streams its invocation.
    let mut ok = false;
    for _ in 0..100 {
        match replay(bep.clone(), &opts(&s.target(), &id, Some("token-a"), "a")).await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(ok, "a streams once b's RPC is gone");
    assert_eq!(
        s.store.get(&id).unwrap().unwrap().meta.tenant.as_deref(),
        Some("a")
    );
}

/// The payload field (number, bytes) of a fixture event: `[number: bytes]`.
fn payload_field(event: &[u8]) -> (u32, Vec<u8>) {
    let (n, body) = proof_stream::probe::shape(event)
        .unwrap()
        .payload
        .expect("a payload");
    let mut out = Vec::new();
    prost::encoding::encode_key(n, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    (n, out)
}

/// Streams `events` as tenant ro (instance "a" only, read-only lane) and
/// returns the status the stream ended with.
async fn ro_refusal(s: &InProc, events: Vec<Bytes>, id: &str) -> (Code, String) {
    refused(
        replay(events, &opts(&s.target(), id, Some("token-ro"), ""))
            .await
            .unwrap_err(),
    )
}

/// [trust 4] finding 2: the tenant gate read fields 22 and 13 as independent
/// fields (and merged a repeated 22) while the evidence decodes the real
/// `BuildEvent`, where the last payload field on the wire wins. Both splits
/// of the review are now refused as what they are, malformed events, before
/// the gate or the store sees them.
#[tokio::test]
async fn oneof_splits_of_the_command_line_are_refused_before_the_gate() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let good = with_flags(
        &bep,
        &[
            ("remote_instance_name", "a"),
            ("remote_upload_local_results", "0"),
        ],
    );
    let bad = with_flags(
        &bep,
        &[
            ("remote_instance_name", "other-inst"),
            ("remote_default_exec_properties", "Pool=gpu"),
            ("remote_upload_local_results", "1"),
        ],
    );
    let c = canonical_seq(&bep) as usize - 1;
    let progress = (0..bep.len())
        .find(|&i| proof_tenancy_kind(&bep[i]) == "progress")
        .unwrap();
    // [id][22: allowed CL][3: Progress][22: forbidden CL]
    assert_eq!(payload_field(&good[c]).0, 22);
    let (_, forbidden) = payload_field(&bad[c]);
    let (_, prog) = payload_field(&bep[progress]);
    let mut split = good[c].to_vec();
    split.extend_from_slice(&prog);
    split.extend_from_slice(&forbidden);
    let mut events = good.clone();
    events[c] = Bytes::from(split);
    let (code, msg) = ro_refusal(&s, events, &id).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("two payloads, fields 22 and 3"), "{msg}");
    s.nothing_stored();

    // [id][22: {label "x"}][13: OptionsParsed with forbidden options]
    let id2 = "0a0a0a0a-0000-4000-8000-0000000000f2";
    let options_parsed = (0..bad.len())
        .find(|&i| proof_tenancy_kind(&bad[i]) == "options_parsed")
        .unwrap();
    let (n, parsed) = payload_field(&bad[options_parsed]);
    assert_eq!(n, 13);
    let mut decoy = bep::BuildEvent::decode(good[c].as_ref()).unwrap();
    if let Some(bep::build_event::Payload::StructuredCommandLine(cl)) = &mut decoy.payload {
        cl.command_line_label = "x".into();
        cl.sections.clear();
    }
    let mut behind = decoy.encode_to_vec();
    behind.extend_from_slice(&parsed);
    let mut events = rewrite_uuid(&good, &id, id2);
    events.insert(c + 1, Bytes::from(behind));
    let (code, msg) = ro_refusal(&s, events, id2).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("two payloads, fields 22 and 13"), "{msg}");
    // What came before it (the real command line) was stored; the split
    // event and everything after it were not (an incomplete stream: no proof).
    assert_eq!(s.store.state(id2).unwrap().unwrap().last_seq, c as u64 + 1);

    // The compliant stream alone is stored.
    let id3 = "0a0a0a0a-0000-4000-8000-0000000000f3";
    ro_ok(&s, rewrite_uuid(&good, &id, id3), id3).await;
}

async fn ro_ok(s: &InProc, events: Vec<Bytes>, id: &str) {
    replay(events, &opts(&s.target(), id, Some("token-ro"), ""))
        .await
        .unwrap();
    assert_eq!(
        s.store.get(id).unwrap().unwrap().meta.tenant.as_deref(),
        Some("ro")
    );
}

/// [trust 4] finding 3: event 1 `[5: BuildStarted X][3: Progress]` passed the
/// first-event check while the evidence (last payload wins) saw no
/// BuildStarted, so a later BuildStarted naming a victim's id Y became the
/// proof's id (and file name). Both events are refused now.
#[tokio::test]
async fn a_masked_or_second_build_started_is_refused() {
    let s = InProc::start(&tenants_toml("")).await;
    let good = with_flags(
        &fixture_events(),
        &[
            ("remote_instance_name", "a"),
            ("remote_upload_local_results", "0"),
        ],
    );
    let id = invocation_id(&good);
    let progress = (0..good.len())
        .find(|&i| proof_tenancy_kind(&good[i]) == "progress")
        .unwrap();
    let (_, prog) = payload_field(&good[progress]);
    let mut masked = good[0].to_vec();
    masked.extend_from_slice(&prog);
    let mut events = good.clone();
    events[0] = Bytes::from(masked);
    let (code, msg) = ro_refusal(&s, events, &id).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("two payloads, fields 5 and 3"), "{msg}");
    s.nothing_stored();

    // A BuildStarted for the victim's id after event 1.
    let x = "0a0a0a0a-0000-4000-8000-0000000000f4";
    let victim = rewrite_uuid(&good, &id, "0a0a0a0a-0000-4000-8000-0000000000f5");
    let mut events = rewrite_uuid(&good, &id, x);
    events.insert(progress + 1, victim[0].clone());
    let (code, msg) = ro_refusal(&s, events, x).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("second BuildStarted"), "{msg}");
}

/// [trust 4] finding 11: an id of 81-128 characters was stored but could never
/// get a proof (a proof file is named by it); it is refused before anything is
/// stored.
#[tokio::test]
async fn an_invocation_id_too_long_for_a_proof_is_refused() {
    let s = InProc::start(&tenants_toml("")).await;
    let bep = fixture_events();
    let id = invocation_id(&bep);
    let long = format!(
        "{id}-{}",
        "x".repeat(proof_artifact::MAX_INVOCATION_ID_LEN - id.len())
    );
    assert_eq!(long.len(), proof_artifact::MAX_INVOCATION_ID_LEN + 1);
    let (code, msg) = refused(
        replay(
            rewrite_uuid(&bep, &id, &long),
            &opts(&s.target(), &long, Some("token-a"), "a"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("longer than the 80 a proof can be named with"),
        "{msg}"
    );
    s.nothing_stored();
    // 80 characters are fine.
    let ok = &long[..proof_artifact::MAX_INVOCATION_ID_LEN];
    replay(
        rewrite_uuid(&bep, &id, ok),
        &opts(&s.target(), ok, Some("token-a"), "a"),
    )
    .await
    .unwrap();
    assert!(s.store.get(ok).unwrap().is_some());
}
