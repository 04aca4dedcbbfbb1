//! kubelet's plugin registration (`pluginregistration/v1`), served by the
//! node plugin itself instead of a node-driver-registrar sidecar: kubelet
//! watches `<kubelet-dir>/plugins_registry/`, finds this socket, asks
//! `GetInfo` where the CSI socket is, calls `NodeGetInfo` there and answers
//! with `NotifyRegistrationStatus`. The last answer is kept for `/readyz`
//! and the log: a plugin kubelet refused serves no pod.
//!
//! `ferrolvm register-plugin` serves the same exchange for another CSI
//! driver (the side-by-side race registers TopoLVM's node with it, where
//! node-driver-registrar cannot be had).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferrolvm_proto::pluginregistration::registration_server::Registration;
use ferrolvm_proto::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tonic::{Request, Response, Status};

/// kubelet's plugin type for CSI drivers.
pub const CSI_PLUGIN: &str = "CSIPlugin";
/// The CSI versions ferrolvm speaks, as node-driver-registrar reports them.
pub const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

/// The registration socket of `driver` in kubelet's watched directory.
pub fn socket_path(kubelet_dir: &Path, driver: &str) -> PathBuf {
    kubelet_dir
        .join("plugins_registry")
        .join(format!("{driver}-reg.sock"))
}

/// A CSI driver name as the spec allows it (at most 63 characters,
/// alphanumerics, `-` and `.`, beginning and ending alphanumeric); the name
/// is also a file name in kubelet's directory, so nothing else may pass.
pub fn is_driver_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// What kubelet last said, if anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Registered {
    #[default]
    NotYet,
    Yes,
    Refused(String),
}

impl Registered {
    /// Ready unless kubelet refused the plugin (before kubelet asks, the
    /// node still serves the controller's LogicalVolumes).
    pub fn ready(&self) -> Result<(), String> {
        match self {
            Registered::Refused(why) => Err(format!("kubelet refused the plugin: {why}")),
            _ => Ok(()),
        }
    }
}

pub struct RegistrationService {
    /// The CSI driver's name (ferrolvm's is `PLUGIN_NAME`).
    pub driver: String,
    /// The CSI socket's path as kubelet sees it on the host.
    pub endpoint: String,
    pub status: Arc<Mutex<Registered>>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN.into(),
            name: self.driver.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let r = req.into_inner();
        let now = if r.plugin_registered {
            tracing::info!(endpoint = %self.endpoint, "kubelet registered the plugin");
            Registered::Yes
        } else {
            tracing::error!(error = %r.error, "kubelet refused the plugin");
            Registered::Refused(r.error)
        };
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolvm_proto::pluginregistration::registration_client::RegistrationClient;
    use ferrolvm_proto::pluginregistration::registration_server::RegistrationServer;

    #[test]
    fn driver_names_are_checked_before_they_name_a_socket() {
        for ok in ["ferrolvm.io", "topolvm.io", "a", "csi-1.example.com"] {
            assert!(is_driver_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "../x", "a/b", ".io", "io-", "a b", long.as_str()] {
            assert!(!is_driver_name(bad), "{bad:?}");
        }
        assert!(socket_path(Path::new("/k"), "topolvm.io").ends_with("topolvm.io-reg.sock"));
    }

    /// The exchange kubelet makes, over a real socket.
    #[tokio::test]
    async fn kubelet_learns_the_csi_socket_and_its_answer_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sock = socket_path(dir.path(), crate::csi::PLUGIN_NAME);
        assert!(sock.ends_with("plugins_registry/ferrolvm.io-reg.sock"));
        let status = Arc::new(Mutex::new(Registered::NotYet));
        let router = tonic::transport::Server::builder()
            .layer(crate::metrics::grpc::CsiMetrics::default().layer())
            .add_service(RegistrationServer::new(RegistrationService {
                driver: crate::csi::PLUGIN_NAME.into(),
                endpoint: "/var/lib/kubelet/plugins/ferrolvm.io/csi.sock".into(),
                status: status.clone(),
            }));
        let (stop, server) = crate::csi::serve_in_background(sock.clone(), router).await;
        let mut client = RegistrationClient::new(crate::csi::unix_channel(sock).await.unwrap());
        let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "ferrolvm.io");
        assert_eq!(
            info.endpoint,
            "/var/lib/kubelet/plugins/ferrolvm.io/csi.sock"
        );
        assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);
        client
            .notify_registration_status(RegistrationStatus {
                plugin_registered: false,
                error: "version 1.0.0 not supported".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            *status.lock().unwrap(),
            Registered::Refused("version 1.0.0 not supported".into())
        );
        assert!(
            status.lock().unwrap().ready().is_err(),
            "not ready once refused"
        );
        client
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(*status.lock().unwrap(), Registered::Yes);
        assert!(status.lock().unwrap().ready().is_ok());
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
