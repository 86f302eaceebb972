//! Compiles `proto/coverwatch/v1/*.proto` with protox (pure Rust, so no system `protoc`) into a
//! FileDescriptorSet, generates the prost messages and tonic client/server from it, and keeps the
//! encoded set in OUT_DIR for gRPC reflection.

use std::path::PathBuf;

use prost::Message as _;
use prost_types::FileDescriptorSet;

const FILES: &[&str] = &[
    "coverwatch/v1/link.proto",
    "coverwatch/v1/policy.proto",
    "coverwatch/v1/events.proto",
    "coverwatch/v1/monitoring.proto",
    "coverwatch/v1/admin.proto",
    "coverwatch/v1/requirements.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // Directory granularity: a new .proto file must trigger a rebuild too.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors: FileDescriptorSet = protox::compile(FILES, [&proto_root])?;
    std::fs::write(
        out_dir.join("coverwatch_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Deterministic order, and the same map type as coverwatch-core's metadata.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
