//! Compiles the project's own .proto files (../../proto) with protox, a pure
//! Rust protobuf compiler, so no system `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "google/devtools/build/v1/publish_build_event.proto",
        "build_event_stream/build_event_stream.proto",
        "action_cache/action_cache.proto",
        "command_line/command_line.proto",
        "options/option_filters.proto",
        "tools/protos/spawn.proto",
        "build/bazel/remote/execution/v2/remote_execution.proto",
        "google/rpc/error_details.proto",
        "remote_logging/remote_execution_log.proto",
        "remote_logging/corroboration.proto",
        "google/longrunning/operations.proto",
        "remote_logging/executor_ledger.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor_set.bin"),
        prost::Message::encode_to_vec(&reflection_set(
            &fds,
            "build_event_stream/build_event_stream.proto",
        )),
    )?;
    tonic_prost_build::configure()
        .btree_map(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

/// The files reflection needs (`root` and what it imports, transitively), without source
/// info (comments and spans): a smaller set decodes faster at every start of the CLI.
fn reflection_set(
    fds: &prost_types::FileDescriptorSet,
    root: &str,
) -> prost_types::FileDescriptorSet {
    let mut want = vec![root.to_string()];
    let mut keep = std::collections::BTreeSet::new();
    while let Some(name) = want.pop() {
        if keep.insert(name.clone()) {
            if let Some(f) = fds.file.iter().find(|f| f.name() == name) {
                want.extend(f.dependency.iter().cloned());
            }
        }
    }
    let file = fds
        .file
        .iter()
        .filter(|f| keep.contains(f.name()))
        .map(|f| prost_types::FileDescriptorProto {
            source_code_info: None,
            ..f.clone()
        })
        .collect();
    prost_types::FileDescriptorSet { file }
}
