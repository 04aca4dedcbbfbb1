//! CSI Controller service in standalone mode: acts on this node's engine
//! directly (the Kubernetes-backed controller of a later issue will create
//! LogicalVolume resources instead). Request validation and gRPC codes live
//! here; the engine below returns typed errors.

use std::sync::Arc;

use ferrolvm_csi::v1::controller_server::Controller;
use ferrolvm_csi::v1::controller_service_capability::{self, rpc};
use ferrolvm_csi::v1::volume_capability::{access_mode, AccessType};
use ferrolvm_csi::v1::*;
use tonic::{Request, Response, Status};

use super::engine::{NodeEngine, Snapshot, Source, Volume, VolumeError};

pub const DEVICE_CLASS_PARAM: &str = "ferrolvm.io/device-class";
pub const TOPOLOGY_KEY: &str = "topology.ferrolvm.io/node";
const DEFAULT_SIZE: u64 = 1 << 30;

/// What the Controller service needs from whatever places volumes: this
/// node's engine in standalone mode; the Kubernetes API (LogicalVolume
/// resources reconciled by each node) in the later `ferrolvm controller`.
pub trait VolumeBackend: Send + Sync + 'static {
    fn create(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
    ) -> Result<Volume, VolumeError>;
    fn create_from(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
        source: &Source,
    ) -> Result<Volume, VolumeError>;
    fn delete(&self, id: &str) -> Result<bool, VolumeError>;
    fn find(&self, id: &str) -> Result<Option<Volume>, VolumeError>;
    fn list(&self) -> Result<Vec<Volume>, VolumeError>;
    fn capacity(&self, class: Option<&str>) -> Result<u64, VolumeError>;
    fn expand(&self, id: &str, bytes: u64) -> Result<u64, VolumeError>;
    fn snapshots(&self) -> Result<Vec<Snapshot>, VolumeError>;
    fn create_snapshot(&self, name: &str, source: &str) -> Result<Snapshot, VolumeError>;
    fn delete_snapshot(&self, id: &str) -> Result<bool, VolumeError>;
}

impl VolumeBackend for NodeEngine {
    fn create(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
    ) -> Result<Volume, VolumeError> {
        NodeEngine::create(self, name, class, required, limit)
    }
    fn create_from(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
        source: &Source,
    ) -> Result<Volume, VolumeError> {
        NodeEngine::create_from(self, name, class, required, limit, source)
    }
    fn delete(&self, id: &str) -> Result<bool, VolumeError> {
        NodeEngine::delete(self, id)
    }
    fn find(&self, id: &str) -> Result<Option<Volume>, VolumeError> {
        NodeEngine::find(self, id)
    }
    fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        NodeEngine::list(self)
    }
    fn capacity(&self, class: Option<&str>) -> Result<u64, VolumeError> {
        NodeEngine::capacity(self, class)
    }
    fn expand(&self, id: &str, bytes: u64) -> Result<u64, VolumeError> {
        NodeEngine::expand(self, id, bytes)
    }
    fn snapshots(&self) -> Result<Vec<Snapshot>, VolumeError> {
        NodeEngine::snapshots(self)
    }
    fn create_snapshot(&self, name: &str, source: &str) -> Result<Snapshot, VolumeError> {
        NodeEngine::create_snapshot(self, name, source)
    }
    fn delete_snapshot(&self, id: &str) -> Result<bool, VolumeError> {
        NodeEngine::delete_snapshot(self, id)
    }
}

pub struct ControllerService<B: VolumeBackend = NodeEngine> {
    pub engine: Arc<B>,
    pub node: String,
}

pub fn to_status(e: VolumeError) -> Status {
    match e {
        VolumeError::UnknownClass(c) => {
            Status::invalid_argument(format!("unknown device class {c:?}"))
        }
        VolumeError::Conflict { .. } => Status::already_exists(e.to_string()),
        VolumeError::NoSpace { .. } => Status::resource_exhausted(e.to_string()),
        VolumeError::NotFound(_) => Status::not_found(e.to_string()),
        VolumeError::NotThin(_) => Status::invalid_argument(e.to_string()),
        VolumeError::Engine(err) => Status::internal(err.to_string()),
    }
}

/// Runs blocking engine work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(to_status)
}

pub fn topology(node: &str) -> Vec<Topology> {
    vec![Topology {
        segments: [(TOPOLOGY_KEY.to_string(), node.to_string())]
            .into_iter()
            .collect(),
    }]
}

/// Checks capabilities: an access type, and a single-node access mode.
pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument("volume capabilities missing"));
    }
    for c in caps {
        if c.access_type.is_none() {
            return Err(Status::invalid_argument(
                "a volume capability needs an access type (block or mount)",
            ));
        }
        let mode = c.access_mode.as_ref().map(|m| m.mode).unwrap_or(0);
        let single = [
            access_mode::Mode::SingleNodeWriter,
            access_mode::Mode::SingleNodeReaderOnly,
            access_mode::Mode::SingleNodeSingleWriter,
            access_mode::Mode::SingleNodeMultiWriter,
        ]
        .iter()
        .any(|m| *m as i32 == mode);
        if !single {
            return Err(Status::invalid_argument(
                "only single-node access modes are supported: volumes are node-local",
            ));
        }
    }
    Ok(())
}

pub const FSTYPE_PARAM: &str = "csi.storage.k8s.io/fstype";

/// Smallest volume a filesystem (or a block volume) is made on, as TopoLVM's defaults.
pub fn minimum_size(
    caps: &[VolumeCapability],
    params: &std::collections::HashMap<String, String>,
) -> u64 {
    const MI: u64 = 1 << 20;
    if caps
        .iter()
        .any(|c| matches!(c.access_type, Some(AccessType::Block(_))))
    {
        return 8 * MI;
    }
    let fs = caps
        .iter()
        .find_map(|c| match &c.access_type {
            Some(AccessType::Mount(m)) if !m.fs_type.is_empty() => Some(m.fs_type.clone()),
            _ => None,
        })
        .or_else(|| params.get(FSTYPE_PARAM).cloned())
        .unwrap_or_else(|| "ext4".into());
    match fs.as_str() {
        "xfs" => 300 * MI,
        "btrfs" => 200 * MI,
        _ => 32 * MI,
    }
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

fn csi_snapshot(s: &Snapshot) -> ferrolvm_csi::v1::Snapshot {
    ferrolvm_csi::v1::Snapshot {
        size_bytes: s.bytes as i64,
        snapshot_id: s.id.clone(),
        source_volume_id: s.source.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created as i64,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

fn csi_volume(v: &Volume, node: &str) -> ferrolvm_csi::v1::Volume {
    ferrolvm_csi::v1::Volume {
        capacity_bytes: v.bytes as i64,
        volume_id: v.id.clone(),
        accessible_topology: topology(node),
        ..Default::default()
    }
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
        if let Some(req) = &r.accessibility_requirements {
            let ours = |t: &Topology| t.segments.get(TOPOLOGY_KEY).is_none_or(|n| *n == self.node);
            if !req.requisite.is_empty() && !req.requisite.iter().any(ours) {
                return Err(Status::resource_exhausted(format!(
                    "this driver serves node {} only",
                    self.node
                )));
            }
        }
        let class = r.parameters.get(DEVICE_CLASS_PARAM).cloned();
        let engine = self.engine.clone();
        let name = r.name.clone();
        let v = blocking(move || match source {
            None => engine.create(&name, class.as_deref(), required, limit),
            Some(src) => engine.create_from(&name, class.as_deref(), required, limit, &src),
        })
        .await?;
        if limit > 0 && v.bytes > limit {
            return Err(Status::out_of_range(format!(
                "the smallest volume that fits is {} bytes, over the limit of {limit}",
                v.bytes
            )));
        }
        let mut volume = csi_volume(&v, &self.node);
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
        let engine = self.engine.clone();
        blocking(move || engine.delete(&id)).await?;
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
        let engine = self.engine.clone();
        let id = r.volume_id.clone();
        blocking(move || engine.find(&id))
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
        let engine = self.engine.clone();
        let mut all = blocking(move || engine.list()).await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (page, next_token) = paginate(&all, r.max_entries, &r.starting_token)?;
        Ok(Response::new(ListVolumesResponse {
            entries: page
                .iter()
                .map(|v| list_volumes_response::Entry {
                    volume: Some(csi_volume(v, &self.node)),
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
        if let Some(t) = &r.accessible_topology {
            if t.segments
                .get(TOPOLOGY_KEY)
                .is_some_and(|n| *n != self.node)
            {
                return Ok(Response::new(GetCapacityResponse {
                    available_capacity: 0,
                    ..Default::default()
                }));
            }
        }
        let class = r.parameters.get(DEVICE_CLASS_PARAM).cloned();
        let engine = self.engine.clone();
        let bytes = blocking(move || engine.capacity(class.as_deref())).await?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes as i64,
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
        let engine = self.engine.clone();
        let s = blocking(move || engine.create_snapshot(&r.name, &r.source_volume_id)).await?;
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
        let engine = self.engine.clone();
        blocking(move || engine.delete_snapshot(&id)).await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let engine = self.engine.clone();
        let mut all = blocking(move || engine.snapshots()).await?;
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
        _: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not served yet"))
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
        let (required, _) = range(Some(cr))?;
        let block = r
            .volume_capability
            .as_ref()
            .is_some_and(|c| matches!(c.access_type, Some(AccessType::Block(_))));
        let engine = self.engine.clone();
        let id = r.volume_id.clone();
        let bytes = blocking(move || engine.expand(&id, required)).await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolvm_csi::v1::volume_capability::{BlockVolume, MountVolume};

    fn cap(access: AccessType) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(volume_capability::AccessMode {
                mode: access_mode::Mode::SingleNodeWriter as i32,
            }),
        }
    }

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

    #[test]
    fn minimums_per_filesystem() {
        let none = std::collections::HashMap::new();
        let mount = |fs: &str| {
            cap(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            }))
        };
        assert_eq!(
            minimum_size(&[cap(AccessType::Block(BlockVolume {}))], &none),
            8 << 20
        );
        assert_eq!(minimum_size(&[mount("xfs")], &none), 300 << 20);
        assert_eq!(minimum_size(&[mount("btrfs")], &none), 200 << 20);
        assert_eq!(
            minimum_size(&[mount("")], &none),
            32 << 20,
            "ext4 by default"
        );
        let xfs: std::collections::HashMap<_, _> = [(FSTYPE_PARAM.to_string(), "xfs".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            minimum_size(&[mount("")], &xfs),
            300 << 20,
            "the StorageClass parameter counts"
        );
        assert!(check_capabilities(&[mount("ext4")]).is_ok());
        let multi = VolumeCapability {
            access_mode: Some(volume_capability::AccessMode {
                mode: access_mode::Mode::MultiNodeMultiWriter as i32,
            }),
            ..mount("ext4")
        };
        assert_eq!(
            check_capabilities(&[multi]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            check_capabilities(&[]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
