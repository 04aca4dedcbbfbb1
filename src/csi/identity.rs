//! CSI Identity: who the plugin is, what it offers, whether it is ready.

use std::sync::Arc;

use ferrolvm_proto::csi::v1::identity_server::Identity;
use ferrolvm_proto::csi::v1::plugin_capability::{self, service, volume_expansion};
use ferrolvm_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use tonic::{Request, Response, Status};

/// Readiness check: `Err(why)` makes Probe fail with FAILED_PRECONDITION.
pub type ProbeFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub struct IdentityService {
    probe: ProbeFn,
    /// Whether this process also serves the Controller service.
    controller: bool,
}

impl IdentityService {
    pub fn new(probe: ProbeFn, controller: bool) -> Self {
        IdentityService { probe, controller }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: super::PLUGIN_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let mut capabilities = vec![
            service(service::Type::VolumeAccessibilityConstraints),
            PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            },
        ];
        if self.controller {
            capabilities.insert(0, service(service::Type::ControllerService));
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let probe = self.probe.clone();
        // The check scans devices: keep it off the async workers.
        match tokio::task::spawn_blocking(move || probe()).await {
            Ok(Ok(())) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Ok(Err(why)) => Err(Status::failed_precondition(format!("not ready: {why}"))),
            Err(e) => Err(Status::internal(format!("probe failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolvm_proto::csi::v1::identity_client::IdentityClient;
    use ferrolvm_proto::csi::v1::identity_server::IdentityServer;

    async fn client(path: std::path::PathBuf) -> IdentityClient<tonic::transport::Channel> {
        IdentityClient::new(crate::csi::unix_channel(path).await.unwrap())
    }

    /// Over a real Unix socket: name, version, capabilities, and Probe
    /// following the readiness check both ways.
    #[tokio::test]
    async fn identity_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = ready.clone();
        let probe: ProbeFn = Arc::new(move || {
            if r.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("VG vg0 not found".into())
            }
        });
        let router = tonic::transport::Server::builder()
            .layer(crate::metrics::grpc::CsiMetrics::default().layer())
            .add_service(IdentityServer::new(IdentityService::new(probe, true)));
        let (stop, server) = crate::csi::serve_in_background(sock.clone(), router).await;
        let mut c = client(sock.clone()).await;
        let info = c
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.name, "ferrolvm.io");
        assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
        let caps = c
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        let services: Vec<i32> = caps
            .iter()
            .filter_map(|c| match &c.r#type {
                Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
                _ => None,
            })
            .collect();
        assert!(services.contains(&(service::Type::ControllerService as i32)));
        assert!(services.contains(&(service::Type::VolumeAccessibilityConstraints as i32)));
        assert_eq!(
            c.probe(ProbeRequest {}).await.unwrap().into_inner().ready,
            Some(true)
        );
        ready.store(false, std::sync::atomic::Ordering::SeqCst);
        let err = c.probe(ProbeRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("vg0"), "{}", err.message());
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
