//! An in-process fake executor (BuildGrid-shaped `ListOperations` + `BatchReadBlobs` on
//! loopback) that misbehaves on purpose, holding what an honest executor ran for the
//! remote-build fixture.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proof_proto::longrunning::operations_server::{Operations, OperationsServer};
use proof_proto::longrunning::{
    operation, ListOperationsRequest, ListOperationsResponse, Operation,
};
use proof_proto::reapi::batch_read_blobs_response;
use proof_proto::reapi::content_addressable_storage_server::{
    ContentAddressableStorage, ContentAddressableStorageServer,
};
use proof_proto::reapi::{
    platform, Action, ActionResult, BatchReadBlobsRequest, BatchReadBlobsResponse, Command, Digest,
    ExecuteOperationMetadata, ExecuteResponse, ExecutedActionMetadata, Platform,
};
use prost::Message;
use sha2::Digest as _;
use tonic::{Request, Response, Status};

pub const PINNED: &str = "docker://example.invalid/worker@sha256:8621c0a36753232616aae4571118fc3f48e9ef17ddd36c18ce0f4995d4722217";

/// How the fake executor answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 8 executed actions on `image` (`None`: their Action and Command name
    /// no container-image), one page.
    Honest { image: Option<String> },
    /// The same page with the same next_page_token, forever.
    RepeatToken,
    /// Pages of `ops` operations, each padded with `pad` bytes, with a new
    /// page token every time, forever.
    Endless { ops: usize, pad: usize },
    /// 8 executed actions on the pinned image, served `max` per page; a
    /// page size above `max` (and 0 when `zero_refused`) is refused the way
    /// BuildGrid refuses it.
    SmallPages { max: i32, zero_refused: bool },
}

pub struct FakeExecutor {
    mode: Mode,
    blobs: HashMap<(String, i64), Vec<u8>>,
    ops: Vec<Operation>,
    pub list_calls: AtomicU64,
    pub page_sizes: std::sync::Mutex<Vec<i32>>,
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest {
        hash: hex::encode(sha2::Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

fn any(name: &str, m: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/build.bazel.remote.execution.v2.{name}"),
        value: m.encode_to_vec(),
    }
}

/// An operation that ran `action` to exit code `exit`, padded with `pad`
/// bytes of stdout_raw.
pub fn operation(name: String, action: &[u8], exit: i32, pad: usize) -> Operation {
    operation_with(name, action, exit, pad, ActionResult::default())
}

/// [`operation`] whose ActionResult starts from `result` (outputs, times).
pub fn operation_with(
    name: String,
    action: &[u8],
    exit: i32,
    pad: usize,
    result: ActionResult,
) -> Operation {
    Operation {
        name,
        metadata: Some(any(
            "ExecuteOperationMetadata",
            &ExecuteOperationMetadata {
                stage: 4,
                action_digest: Some(digest_of(action)),
                ..Default::default()
            },
        )),
        done: true,
        result: Some(operation::Result::Response(any(
            "ExecuteResponse",
            &ExecuteResponse {
                result: Some(ActionResult {
                    exit_code: exit,
                    stdout_raw: vec![b'x'; pad],
                    execution_metadata: Some(ExecutedActionMetadata {
                        worker: "fake-bot".into(),
                        ..result.execution_metadata.clone().unwrap_or_default()
                    }),
                    ..result
                }),
                ..Default::default()
            },
        ))),
    }
}

/// Action and Command of action `i` (Bazel 4.x: the platform on the Command).
pub fn action(i: usize, image: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let command = Command {
        arguments: vec!["/bin/true".into(), i.to_string()],
        platform: image.map(|image| Platform {
            properties: vec![platform::Property {
                name: "container-image".into(),
                value: image.into(),
            }],
        }),
        ..Command::default()
    }
    .encode_to_vec();
    let action = Action {
        command_digest: Some(digest_of(&command)),
        input_root_digest: Some(digest_of(format!("root {i}").as_bytes())),
        ..Action::default()
    }
    .encode_to_vec();
    (action, command)
}

impl FakeExecutor {
    pub fn new(mode: Mode) -> Arc<Self> {
        let image = match &mode {
            Mode::Honest { image } => image.clone(),
            _ => Some(PINNED.to_string()),
        };
        let mut blobs = HashMap::new();
        let mut ops = Vec::new();
        // What an honest executor ran for the fixture's build: its outputs
        // (spread over the operations), inside the build's own time.
        let (outputs, started) = fixture_outputs_and_start();
        for i in 0..8 {
            let (a, c) = action(i, image.as_deref());
            let at = |secs| prost_types::Timestamp {
                seconds: started.seconds + secs,
                nanos: started.nanos,
            };
            let result = ActionResult {
                output_files: outputs.iter().skip(i).step_by(8).cloned().collect(),
                execution_metadata: Some(ExecutedActionMetadata {
                    queued_timestamp: Some(at(1)),
                    worker_completed_timestamp: Some(at(2)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            ops.push(operation_with(format!("op-{i}"), &a, 0, 0, result));
            for b in [a, c] {
                let d = digest_of(&b);
                blobs.insert((d.hash, d.size_bytes), b);
            }
        }
        Arc::new(FakeExecutor {
            mode,
            blobs,
            ops,
            list_calls: AtomicU64::new(0),
            page_sizes: std::sync::Mutex::new(Vec::new()),
        })
    }
}

struct Ops(Arc<FakeExecutor>);
struct Cas(Arc<FakeExecutor>);

#[tonic::async_trait]
impl Operations for Ops {
    async fn list_operations(
        &self,
        req: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let f = &self.0;
        let n = f.list_calls.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        f.page_sizes.lock().unwrap().push(req.page_size);
        let resp = match &f.mode {
            Mode::Honest { .. } => ListOperationsResponse {
                operations: f.ops.clone(),
                next_page_token: String::new(),
            },
            Mode::RepeatToken => ListOperationsResponse {
                operations: f.ops.clone(),
                next_page_token: "again".into(),
            },
            Mode::Endless { ops, pad } => {
                let (a, _) = action(0, Some(PINNED));
                ListOperationsResponse {
                    operations: (0..*ops)
                        .map(|i| operation(format!("op-{n}-{i}"), &a, 0, *pad))
                        .collect(),
                    next_page_token: format!("page-{}", n + 1),
                }
            }
            Mode::SmallPages { max, zero_refused } => {
                if req.page_size > *max || (req.page_size == 0 && *zero_refused) {
                    return Err(Status::invalid_argument(format!(
                        "The maximum page size is {max}."
                    )));
                }
                let size = if req.page_size == 0 {
                    *max
                } else {
                    req.page_size
                } as usize;
                let start: usize = req.page_token.parse().unwrap_or(0);
                let end = (start + size).min(f.ops.len());
                ListOperationsResponse {
                    operations: f.ops[start..end].to_vec(),
                    next_page_token: if end < f.ops.len() {
                        end.to_string()
                    } else {
                        String::new()
                    },
                }
            }
        };
        Ok(Response::new(resp))
    }
}

#[tonic::async_trait]
impl ContentAddressableStorage for Cas {
    async fn batch_read_blobs(
        &self,
        req: Request<BatchReadBlobsRequest>,
    ) -> Result<Response<BatchReadBlobsResponse>, Status> {
        let responses = req
            .into_inner()
            .digests
            .into_iter()
            .map(|d| {
                let data = self.0.blobs.get(&(d.hash.clone(), d.size_bytes)).cloned();
                batch_read_blobs_response::Response {
                    status: Some(proof_proto::rpc::Status {
                        code: if data.is_some() { 0 } else { 5 },
                        message: String::new(),
                        details: Vec::new(),
                    }),
                    data: data.unwrap_or_default(),
                    digest: Some(d),
                }
            })
            .collect();
        Ok(Response::new(BatchReadBlobsResponse { responses }))
    }
}

/// Serves `fake` on a loopback port until the test process ends; returns
/// its grpc:// endpoint.
pub async fn serve(fake: Arc<FakeExecutor>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                OperationsServer::new(Ops(fake.clone())).max_encoding_message_size(usize::MAX),
            )
            .add_service(ContentAddressableStorageServer::new(Cas(fake)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("grpc://{addr}")
}

/// A loopback port that accepts connections and never answers (a hung
/// executor); kept open until the test process ends.
pub fn dead_executor() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    format!("grpc://{addr}")
}

/// The output files the fixture's BEP names by `bytestream://…/blobs/HASH/SIZE`
/// (each once), and its BuildStarted time.
fn fixture_outputs_and_start() -> (Vec<proof_proto::reapi::OutputFile>, prost_types::Timestamp) {
    use proof_proto::bep::{build_event::Payload, file::File as FileKind, BuildEvent};
    let mut outputs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut started = prost_types::Timestamp::default();
    for e in fixture_events() {
        match BuildEvent::decode(&e[..]).unwrap().payload {
            Some(Payload::Started(st)) => {
                started = st.start_time.unwrap_or(prost_types::Timestamp {
                    seconds: st.start_time_millis / 1000,
                    nanos: (st.start_time_millis % 1000) as i32 * 1_000_000,
                })
            }
            Some(Payload::NamedSetOfFiles(set)) => {
                for f in set.files {
                    let Some(FileKind::Uri(uri)) = f.file else {
                        continue;
                    };
                    let Some((_, blob)) = uri.split_once("/blobs/") else {
                        continue;
                    };
                    let Some((hash, size)) = blob.split_once('/') else {
                        continue;
                    };
                    if seen.insert(hash.to_string()) {
                        outputs.push(proof_proto::reapi::OutputFile {
                            path: f.name.clone(),
                            digest: Some(Digest {
                                hash: hash.into(),
                                size_bytes: size.parse().unwrap(),
                            }),
                            ..Default::default()
                        });
                    }
                }
            }
            _ => {}
        }
    }
    assert!(!outputs.is_empty(), "the fixture names its outputs");
    (outputs, started)
}

/// The BEP events of the remote-build fixture, whose actions [`FakeExecutor`] ran.
pub fn fixture_events() -> Vec<Vec<u8>> {
    crate::fixtures::fixture_events("remote-build")
}
