//! Generates the hyperd.v1 messages, clients and servers from the .proto files.
//! `PROTOC` from the environment wins; otherwise the vendored protoc is used, so a
//! fresh machine needs no protobuf compiler installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "hyperd/v1/daemon.proto",
        "hyperd/v1/cores.proto",
        "hyperd/v1/peers.proto",
        "hyperd/v1/drives.proto",
        "hyperd/v1/swarm.proto",
        "hyperd/v1/extensions.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = prost_build::Config::new();
    // Blocks travel as `bytes::Bytes`: decoding slices the received buffer and replies
    // hand over the feed's own buffers, instead of copying every block.
    config.bytes(["."]);
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_with_config(config, &protos, &["."])?;
    Ok(())
}
