//! The CSI driver's gRPC surface: the Identity, Controller and Node
//! services, served on a Unix socket. Only request validation and the
//! mapping of errors to gRPC codes ([`status`]) live here; the work is done
//! behind the [`backend`] seam — this node's engine (`node/`) in standalone
//! mode, or in the Kubernetes-backed controller, the API server.

pub mod backend;
pub mod capabilities;
pub mod controller;
pub mod identity;
pub mod lvmd;
pub mod node;
pub mod registration;
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

/// A gRPC channel to a CSI server on the Unix socket at `path` (clients,
/// tests and benchmarks; the URI is a placeholder tonic requires).
pub async fn unix_channel(
    path: std::path::PathBuf,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
}

/// A CSI server's routes, every call counted (`metrics::grpc`).
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<crate::metrics::grpc::CountLayer, tower::layer::util::Identity>,
>;

/// Serves `router` on the Unix socket at `path` (see [`bind_socket`]) until
/// `shutdown` completes; in-flight calls finish first.
pub async fn serve_unix(
    path: &Path,
    group: Option<u32>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = bind_socket(path, group)?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Binds the CSI socket so that only root (and `group`, when given) can
/// reach it: the socket is 0600 (0660 with a group) from the moment it
/// appears at `path` — it is bound in a private directory, restricted, then
/// renamed into place — and missing parent directories are made 0750. A
/// stale socket at `path` is replaced; anything else there is refused,
/// never deleted.
pub fn bind_socket(
    path: &Path,
    group: Option<u32>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{}: no parent directory", path.display()),
            )
        })?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(parent)?;
    let private = parent.join(format!(".ferrolvm-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let tmp = private.join("csi.sock");
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Tests: serves `router` on `sock` in the background until the returned
/// sender fires; returns once the socket is there.
#[cfg(test)]
pub(crate) async fn serve_in_background(
    sock: std::path::PathBuf,
    router: Router,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let path = sock.clone();
    let server = tokio::spawn(async move {
        serve_unix(&path, None, router, async {
            stopped.await.ok();
        })
        .await
        .unwrap()
    });
    while !sock.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (stop, server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_socket_is_private_and_its_new_parents_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugins/ferrolvm.io/csi.sock");
        let listener = bind_socket(&path, None).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        assert_eq!(mode(&dir.path().join("plugins")), 0o750);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no leftovers"
        );
        std::os::unix::net::UnixStream::connect(&path).expect("the renamed socket accepts");
        drop(listener);
        // A stale socket is replaced; with a group the socket is 0660 and the group's.
        let gid = nix::unistd::getgid().as_raw();
        let _again = bind_socket(&path, Some(gid)).unwrap();
        assert_eq!(mode(&path), 0o660);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
    }

    #[test]
    fn anything_but_a_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = bind_socket(&path, None).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(bind_socket(&link, None).is_err());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
