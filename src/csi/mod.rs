//! The CSI driver's gRPC surface: the Identity, Controller and Node
//! services, served on a Unix socket. Only request validation and the
//! mapping of errors to gRPC codes ([`status`]) live here; the work is done
//! behind the [`backend`] seam — this node's engine (`node/`) in standalone
//! mode, or in the Kubernetes-backed controller, the API server.

pub mod backend;
pub mod capabilities;
pub mod controller;
pub mod identity;
pub mod node;
pub mod standalone;
pub mod status;

use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// The plugin name ferrolvm registers with the container orchestrator.
pub const PLUGIN_NAME: &str = "ferrolvm.io";
/// The topology segment of a node-local volume: the node's name.
pub const TOPOLOGY_KEY: &str = "topology.ferrolvm.io/node";
/// StorageClass parameter naming the device class.
pub const DEVICE_CLASS_PARAM: &str = "ferrolvm.io/device-class";
/// StorageClass parameter naming the filesystem (the external-provisioner's).
pub const FSTYPE_PARAM: &str = "csi.storage.k8s.io/fstype";

/// Serves `router` on the Unix socket at `path` (replacing a stale socket
/// file) until `shutdown` completes; in-flight calls finish first.
pub async fn serve_unix(
    path: &Path,
    router: tonic::transport::server::Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
