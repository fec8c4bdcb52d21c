//! Generated protobuf types of rbe-proof. Nothing but the messages and the
//! gRPC service stubs compiled from the project's own `proto/` directory.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `google.devtools.build.v1`: the Build Event Service.
pub mod bes {
    tonic::include_proto!("google.devtools.build.v1");
}

/// `build_event_stream`: the Build Event Protocol (BEP) subset we read.
pub mod bep {
    tonic::include_proto!("build_event_stream");
    // Bazel declares the action cache statistics in package `blaze`; they
    // are re-exported here, where BuildMetrics uses them.
    pub use super::blaze::{action_cache_statistics, ActionCacheStatistics};
}

/// Bazel's package `blaze` (action_cache.proto).
pub mod blaze {
    tonic::include_proto!("blaze");
}

/// `command_line`: Bazel's structured command line.
pub mod command_line {
    tonic::include_proto!("command_line");
}

/// `tools.protos`: Bazel's execution log (SpawnExec, ExecLogEntry).
pub mod execlog {
    tonic::include_proto!("tools.protos");
}

/// `build.bazel.remote.execution.v2`: the REAPI subset used to ask an
/// executor's ActionCache about an action.
pub use build::bazel::remote::execution::v2 as reapi;

/// `google.rpc`: status details attached to denials.
pub mod rpc {
    tonic::include_proto!("google.rpc");
}

/// The serialized `FileDescriptorSet` of build_event_stream.proto and the files
/// it imports, without source info, for reflection (proto3 JSON to binary
/// conversion of BEP JSON files).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

/// The type URL Bazel puts on every `bazel_event` Any.
pub const BEP_EVENT_TYPE_URL: &str = "type.googleapis.com/build_event_stream.BuildEvent";

/// `options`: Bazel's option tag enums.
pub mod options {
    tonic::include_proto!("options");
}

/// `remote_logging`: the records of Bazel's `--experimental_remote_grpc_log`
/// (rbe-proof's own minimal declaration: only the fields read).
pub mod remote_logging {
    tonic::include_proto!("remote_logging");
}

/// `rbe_proof.corroboration`: the records of an artifact's
/// `corroboration.bin` (the executor's raw ActionCache answers).
pub mod rbe_proof {
    pub mod corroboration {
        tonic::include_proto!("rbe_proof.corroboration");
    }
    /// `rbe_proof.ledger`: the records of an artifact's `executor.bin` (the
    /// executor's raw answers about one invocation).
    pub mod ledger {
        tonic::include_proto!("rbe_proof.ledger");
    }
}
pub use rbe_proof::corroboration;
pub use rbe_proof::ledger;

/// `google.longrunning`: the Operations service subset used to read an
/// executor's ledger (ListOperations), and the path the generated code of
/// other packages uses for `google.rpc` and `google.longrunning` types.
pub mod google {
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    pub use crate::rpc;
}
pub use google::longrunning;

/// `build.bazel.remote.execution.v2` at its package path (the generated
/// code of other packages refers to it, and it to `google.rpc`, by relative
/// paths); use it as [`reapi`].
pub mod build {
    pub mod bazel {
        pub mod remote {
            pub mod execution {
                pub mod v2 {
                    tonic::include_proto!("build.bazel.remote.execution.v2");
                }
            }
        }
    }
}
