//! Compiles the vendored protocols with protox (a pure-Rust protobuf
//! compiler), so the build needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let csi = dir.join("csi.proto");
    // kubelet's plugin registration, which `ferrolvm node` serves itself.
    let registration = dir.join("pluginregistration/api.proto");
    // TopoLVM's lvmd protocol, which `ferrolvm lvmd` serves.
    let lvmd = dir.join("lvmd/lvmd.proto");
    for p in [&csi, &registration, &lvmd] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile([&csi, &registration, &lvmd], [dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
