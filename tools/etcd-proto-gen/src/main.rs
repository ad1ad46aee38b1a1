//! Compiles the etcd v3 .proto files in proto/ into the Rust client code committed under
//! src/etcd/gen/: messages and gRPC clients only, no servers. protox parses the .proto files in
//! pure Rust (with the well-known types built in), so this needs no protoc either.
//!
//! Usage: etcd-proto-gen [--out DIR]   (default: src/etcd/gen of the repository)
use std::path::{Path, PathBuf};

/// The protos whose services the client calls; their imports come along by themselves.
const PROTOS: &[&str] = &[
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
];

/// Imported files that need no Rust code (see `run`).
const SKIP: &[&str] = &["google/", "protoc-gen-openapiv2/"];

fn main() {
    if let Err(e) = run() {
        eprintln!("etcd-proto-gen: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = repo.join("src/etcd/gen");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            other => return Err(format!("unknown argument {other:?} (usage: [--out DIR])")),
        }
    }
    let include = repo.join("proto");
    let mut fds = protox::compile(PROTOS, [&include]).map_err(|e| format!("{e:?}"))?;
    // The grpc-gateway and HTTP annotations only decorate the services as options; no message
    // uses their types, so generating them would only add dead code.
    fds.file.retain(|f| !SKIP.iter().any(|p| f.name().starts_with(p)));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // We build the Channel ourselves (connect/op timeouts, several endpoints).
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .include_file("mod.rs")
        .out_dir(&out)
        .compile_fds(fds)
        .map_err(|e| format!("generating into {}: {e}", out.display()))
}
