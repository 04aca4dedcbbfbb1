//! The CSI Node service: validates requests and hands them to a
//! [`NodeBackend`] (this node's engine, whose `node::mounts` makes a volume
//! usable at a target path, grows it and reports usage and health).

use std::path::PathBuf;

use ferrolvm_proto::csi::v1::node_server::Node;
use ferrolvm_proto::csi::v1::node_service_capability::{self, rpc};
use ferrolvm_proto::csi::v1::volume_capability::AccessType;
use ferrolvm_proto::csi::v1::*;
use tonic::{Request, Response, Status};

use super::backend::NodeBackend;
use super::capabilities::{check_capabilities, topology};
use crate::node::mounts::{Publish, Usage};

/// The Node service, on any [`NodeBackend`].
pub struct NodeService<N: NodeBackend> {
    pub backend: N,
    pub node: String,
}

#[tonic::async_trait]
impl<N: NodeBackend> Node for NodeService<N> {
    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "staging is not used: volumes are published directly",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "staging is not used: volumes are published directly",
        ))
    }

    async fn node_publish_volume(
        &self,
        req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        if r.target_path.is_empty() {
            return Err(Status::invalid_argument("target path missing"));
        }
        let cap = r
            .volume_capability
            .ok_or_else(|| Status::invalid_argument("volume capability missing"))?;
        check_capabilities(std::slice::from_ref(&cap))?;
        let (block, fs_type, flags) = match &cap.access_type {
            Some(AccessType::Block(_)) => (true, String::new(), vec![]),
            Some(AccessType::Mount(m)) => (false, m.fs_type.clone(), m.mount_flags.clone()),
            None => return Err(Status::invalid_argument("access type missing")),
        };
        let how = Publish {
            block,
            fs_type,
            mount_flags: flags,
            readonly: r.readonly,
        };
        self.backend
            .publish(r.volume_id, PathBuf::from(r.target_path), how)
            .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        if r.target_path.is_empty() {
            return Err(Status::invalid_argument("target path missing"));
        }
        self.backend
            .unpublish(r.volume_id, PathBuf::from(r.target_path))
            .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        if r.volume_path.is_empty() {
            return Err(Status::invalid_argument("volume path missing"));
        }
        let stats = self
            .backend
            .stats(r.volume_id, PathBuf::from(r.volume_path))
            .await?;
        let bytes = volume_usage::Unit::Bytes as i32;
        let usage = match stats.usage {
            Usage::Filesystem {
                bytes_total,
                bytes_used,
                bytes_available,
                inodes_total,
                inodes_used,
                inodes_available,
            } => vec![
                VolumeUsage {
                    available: bytes_available as i64,
                    total: bytes_total as i64,
                    used: bytes_used as i64,
                    unit: bytes,
                },
                VolumeUsage {
                    available: inodes_available as i64,
                    total: inodes_total as i64,
                    used: inodes_used as i64,
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            Usage::Block { bytes_total } => vec![VolumeUsage {
                total: bytes_total as i64,
                unit: bytes,
                ..Default::default()
            }],
        };
        Ok(Response::new(NodeGetVolumeStatsResponse { usage }))
    }

    async fn node_expand_volume(
        &self,
        req: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        if r.volume_path.is_empty() {
            return Err(Status::invalid_argument("volume path missing"));
        }
        let bytes = self
            .backend
            .grow(r.volume_id, PathBuf::from(r.volume_path))
            .await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: bytes as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        };
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::ExpandVolume),
                cap(rpc::Type::GetVolumeStats),
                cap(rpc::Type::GetVolumeHealth),
            ],
        }))
    }

    /// The device missing, suspended or failed is an adverse condition:
    /// kubelet 1.37 (CSIVolumeHealth) makes the volume Inaccessible in the
    /// pod's status. (CSI 1.13 dropped NodeGetVolumeStats' VolumeCondition
    /// for this call.)
    async fn node_get_volume_health(
        &self,
        req: Request<NodeGetVolumeHealthRequest>,
    ) -> Result<Response<NodeGetVolumeHealthResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        let trouble = self.backend.health(r.volume_id.clone()).await?;
        let health_statuses = trouble
            .into_iter()
            .map(|message| volume_health::VolumeHealthEntry {
                status: VolumeHealthErrorType::Inaccessible as i32,
                reason: "DeviceUnusable".into(),
                message,
            })
            .collect();
        Ok(Response::new(NodeGetVolumeHealthResponse {
            volume_health: Some(VolumeHealth {
                volume_id: r.volume_id,
                health_statuses,
            }),
        }))
    }

    async fn node_get_storage_health(
        &self,
        _: Request<NodeGetStorageHealthRequest>,
    ) -> Result<Response<NodeGetStorageHealthResponse>, Status> {
        Err(Status::unimplemented(
            "storage health is not reported (no GET_STORAGE_HEALTH capability)",
        ))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node.clone(),
            max_volumes_per_node: 0,
            accessible_topology: topology(&self.node).pop(),
        }))
    }
}
