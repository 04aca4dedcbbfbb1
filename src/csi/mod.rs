//! The CSI driver: gRPC services on a Unix socket. Only the Identity
//! service exists so far (issue #4 tracks the node engine, Controller and
//! Node services).

pub mod client;
pub mod config;
pub mod controller;
pub mod engine;
pub mod identity;
pub mod node;
pub mod watch;

use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// The plugin name ferrolvm registers with the container orchestrator.
pub const PLUGIN_NAME: &str = "ferrolvm.io";

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
