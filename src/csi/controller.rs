//! The CSI Controller service: request validation, capacity-range rules,
//! topology, pagination; the volumes themselves are placed by a
//! [`VolumeBackend`] (this node's engine in standalone mode, LogicalVolume
//! resources under Kubernetes), which also says which node each is on.

use ferrolvm_proto::csi::v1::controller_server::Controller;
use ferrolvm_proto::csi::v1::controller_service_capability::{self, rpc};
use ferrolvm_proto::csi::v1::volume_capability::AccessType;
use ferrolvm_proto::csi::v1::*;
use tonic::{Request, Response, Status};

use super::backend::{CreateRequest, Placed, VolumeBackend};
use super::capabilities::{check_capabilities, minimum_size, topology};
use super::{DEVICE_CLASS_PARAM, TOPOLOGY_KEY};
use crate::node::{Snapshot, Source};

const DEFAULT_SIZE: u64 = 1 << 30;

/// The Controller service, on any [`VolumeBackend`].
pub struct ControllerService<B: VolumeBackend> {
    pub backend: B,
}

/// `(required, limit)` from a capacity range, with CSI's rules.
fn range(r: Option<&CapacityRange>) -> Result<(u64, u64), Status> {
    let (req, lim) = r
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or((0, 0));
    if req < 0 || lim < 0 {
        return Err(Status::invalid_argument(
            "capacity range must not be negative",
        ));
    }
    if lim > 0 && lim < req {
        return Err(Status::invalid_argument(
            "capacity limit is below the required capacity",
        ));
    }
    let mut required = if req == 0 && lim == 0 {
        DEFAULT_SIZE
    } else {
        req as u64
    };
    if required == 0 {
        required = (lim as u64).min(DEFAULT_SIZE);
    }
    Ok((required.div_ceil(4096) * 4096, lim as u64))
}

/// One page of `all` for CSI's List RPCs: the token is the index to start
/// at; a bad token is ABORTED, a negative size INVALID_ARGUMENT.
fn paginate<'a, T>(
    all: &'a [T],
    max_entries: i32,
    token: &str,
) -> Result<(&'a [T], String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let start: usize = if token.is_empty() {
        0
    } else {
        token
            .parse()
            .map_err(|_| Status::aborted(format!("invalid starting token {token:?}")))?
    };
    if start > all.len() {
        return Err(Status::aborted(format!(
            "starting token {start} is past the end"
        )));
    }
    let take = if max_entries == 0 {
        all.len() - start
    } else {
        (max_entries as usize).min(all.len() - start)
    };
    let next = start + take;
    Ok((
        &all[start..next],
        if next < all.len() {
            next.to_string()
        } else {
            String::new()
        },
    ))
}

fn csi_snapshot(s: &Snapshot) -> ferrolvm_proto::csi::v1::Snapshot {
    ferrolvm_proto::csi::v1::Snapshot {
        size_bytes: s.bytes as i64,
        snapshot_id: s.id.clone(),
        source_volume_id: s.source.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created as i64,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
        // Unset without SNAPSHOT_ACCESSIBILITY_CONSTRAINTS; a restore is
        // placed on the source's node by the controller regardless.
        accessible_topology: vec![],
    }
}

fn csi_volume(p: &Placed) -> ferrolvm_proto::csi::v1::Volume {
    ferrolvm_proto::csi::v1::Volume {
        capacity_bytes: p.volume.bytes as i64,
        volume_id: p.volume.id.clone(),
        accessible_topology: topology(&p.node),
        ..Default::default()
    }
}

/// The nodes a volume may go on, from CSI's accessibility requirements:
/// the preferred segments in order, then any other requisite one. Segments
/// without our topology key say nothing about nodes.
fn candidate_nodes(req: Option<&TopologyRequirement>) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    if let Some(r) = req {
        for t in r.preferred.iter().chain(&r.requisite) {
            if let Some(n) = t.segments.get(TOPOLOGY_KEY) {
                if !nodes.contains(n) {
                    nodes.push(n.clone());
                }
            }
        }
    }
    nodes
}

#[tonic::async_trait]
impl<B: VolumeBackend> Controller for ControllerService<B> {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("volume name missing"));
        }
        check_capabilities(&r.volume_capabilities)?;
        let source = match r
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref())
        {
            None => None,
            Some(volume_content_source::Type::Snapshot(s)) => {
                Some(Source::Snapshot(s.snapshot_id.clone()))
            }
            Some(volume_content_source::Type::Volume(v)) => {
                Some(Source::Volume(v.volume_id.clone()))
            }
        };
        let (required, limit) = range(r.capacity_range.as_ref())?;
        let required = required.max(minimum_size(&r.volume_capabilities, &r.parameters));
        if limit > 0 && required > limit {
            return Err(Status::out_of_range(format!(
                "the filesystem needs at least {required} bytes, over the limit of {limit}"
            )));
        }
        let class = r.parameters.get(DEVICE_CLASS_PARAM).cloned();
        let v = self
            .backend
            .create(CreateRequest {
                name: r.name.clone(),
                class,
                required,
                limit,
                source,
                nodes: candidate_nodes(r.accessibility_requirements.as_ref()),
            })
            .await?;
        if limit > 0 && v.volume.bytes > limit {
            return Err(Status::out_of_range(format!(
                "the smallest volume that fits is {} bytes, over the limit of {limit}",
                v.volume.bytes
            )));
        }
        let mut volume = csi_volume(&v);
        volume.content_source = r.volume_content_source.clone();
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = req.into_inner().volume_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        self.backend.delete(id).await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are node-local: nothing to publish",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are node-local: nothing to unpublish",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume capabilities missing"));
        }
        self.backend
            .find(r.volume_id.clone())
            .await?
            .ok_or_else(|| Status::not_found(format!("volume {} not found", r.volume_id)))?;
        let confirmed = check_capabilities(&r.volume_capabilities).is_ok().then(|| {
            validate_volume_capabilities_response::Confirmed {
                volume_context: r.volume_context.clone(),
                volume_capabilities: r.volume_capabilities.clone(),
                parameters: r.parameters.clone(),
                mutable_parameters: r.mutable_parameters.clone(),
            }
        });
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed,
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let mut all = self.backend.list().await?;
        all.sort_by(|a, b| a.volume.id.cmp(&b.volume.id));
        let (page, next_token) = paginate(&all, r.max_entries, &r.starting_token)?;
        Ok(Response::new(ListVolumesResponse {
            entries: page
                .iter()
                .map(|v| list_volumes_response::Entry {
                    volume: Some(csi_volume(v)),
                    status: None,
                })
                .collect(),
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        req: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = req.into_inner();
        let node = r
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(TOPOLOGY_KEY).cloned());
        let class = r.parameters.get(DEVICE_CLASS_PARAM).cloned();
        let room = self.backend.capacity(class, node).await?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: room.available as i64,
            maximum_volume_size: Some(room.maximum_volume as i64),
            ..Default::default()
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: t as i32 },
            )),
        };
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::CreateDeleteVolume),
                cap(rpc::Type::GetCapacity),
                cap(rpc::Type::ListVolumes),
                cap(rpc::Type::ExpandVolume),
                cap(rpc::Type::CreateDeleteSnapshot),
                cap(rpc::Type::ListSnapshots),
                cap(rpc::Type::GetSnapshot),
                cap(rpc::Type::CloneVolume),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        req: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("snapshot name missing"));
        }
        if r.source_volume_id.is_empty() {
            return Err(Status::invalid_argument("source volume id missing"));
        }
        let s = self
            .backend
            .create_snapshot(r.name, r.source_volume_id)
            .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(&s)),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = req.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("snapshot id missing"));
        }
        self.backend.delete_snapshot(id).await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let mut all = self.backend.snapshots().await?;
        all.retain(|s| {
            (r.snapshot_id.is_empty() || s.id == r.snapshot_id)
                && (r.source_volume_id.is_empty() || s.source == r.source_volume_id)
        });
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (page, next_token) = paginate(&all, r.max_entries, &r.starting_token)?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: page
                .iter()
                .map(|s| list_snapshots_response::Entry {
                    snapshot: Some(csi_snapshot(s)),
                })
                .collect(),
            next_token,
        }))
    }

    async fn get_snapshot(
        &self,
        req: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let id = req.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("snapshot id missing"));
        }
        let snapshot = self
            .backend
            .snapshots()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Status::not_found(format!("snapshot {id} not found")))?;
        Ok(Response::new(GetSnapshotResponse {
            snapshot: Some(csi_snapshot(&snapshot)),
        }))
    }

    async fn controller_expand_volume(
        &self,
        req: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id missing"));
        }
        let cr = r
            .capacity_range
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("capacity range missing"))?;
        let (required, limit) = range(Some(cr))?;
        let block = r
            .volume_capability
            .as_ref()
            .is_some_and(|c| matches!(c.access_type, Some(AccessType::Block(_))));
        let bytes = self
            .backend
            .expand(r.volume_id.clone(), required, limit)
            .await?;
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: bytes as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerGetVolume is not offered"))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume is not offered",
        ))
    }

    // A node-local volume's health is only known on its node
    // (NodeGetVolumeHealth); the controller has nothing to add.
    async fn controller_list_volume_health(
        &self,
        _: Request<ControllerListVolumeHealthRequest>,
    ) -> Result<Response<ControllerListVolumeHealthResponse>, Status> {
        Err(Status::unimplemented(
            "volume health is reported by the node (NodeGetVolumeHealth)",
        ))
    }

    async fn controller_get_volume_health(
        &self,
        _: Request<ControllerGetVolumeHealthRequest>,
    ) -> Result<Response<ControllerGetVolumeHealthResponse>, Status> {
        Err(Status::unimplemented(
            "volume health is reported by the node (NodeGetVolumeHealth)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let all = [1, 2, 3, 4, 5];
        assert_eq!(paginate(&all, 0, "").unwrap(), (&all[..], String::new()));
        assert_eq!(paginate(&all, 2, "").unwrap(), (&all[..2], "2".to_string()));
        assert_eq!(paginate(&all, 2, "4").unwrap(), (&all[4..], String::new()));
        assert_eq!(
            paginate(&all, 0, "9").unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            paginate(&all, 0, "x").unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            paginate(&all, -1, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn capacity_ranges_follow_csi() {
        let r = |req: i64, lim: i64| {
            range(Some(&CapacityRange {
                required_bytes: req,
                limit_bytes: lim,
            }))
        };
        assert_eq!(range(None).unwrap(), (1 << 30, 0), "1 GiB by default");
        assert_eq!(r(1, 0).unwrap(), (4096, 0), "rounded up to 4 KiB");
        assert_eq!(
            r(0, 1 << 20).unwrap(),
            (1 << 20, 1 << 20),
            "a small limit caps the default"
        );
        assert_eq!(r(-1, 0).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(r(10, 5).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
