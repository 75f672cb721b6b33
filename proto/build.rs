//! Generates the `hav.v1` gRPC code from `proto/hav/v1/*.proto` with the pure-Rust `protox`
//! compiler: no system `protoc` is needed to build hav.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = ["hav/v1/agent.proto", "hav/v1/fleet.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The generated `Client::connect(url)` constructor would clash with the `Connect` rpc and
        // would dial without our mTLS checks; clients use `hav_proto::transport::connect`.
        .build_transport(false)
        // Small starting buffers: a coordinator keeps one stream per agent (see `codec.rs`).
        .codec_path("crate::codec::HavCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
