//! CSI Node service: makes a volume usable at a target path (a mounted
//! filesystem, or the block device bound there), grows filesystems online
//! and reports usage and health.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrolvm_csi::v1::node_server::Node;
use ferrolvm_csi::v1::node_service_capability::{self, rpc};
use ferrolvm_csi::v1::volume_capability::AccessType;
use ferrolvm_csi::v1::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::{Request, Response, Status};

use super::controller::{blocking, check_capabilities, topology};
use super::engine::{NodeEngine, Volume, VolumeError};

pub struct NodeService {
    pub engine: Arc<NodeEngine>,
    pub node: String,
}

/// The filesystem on a device, by its superblock magic.
pub fn detect_fs(dev: &Path) -> std::io::Result<Option<&'static str>> {
    use std::io::Read;
    let mut buf = vec![0u8; 65536 + 4096];
    let mut f = std::fs::File::open(dev)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(if n >= 1082 && buf[1080..1082] == [0x53, 0xEF] {
        Some("ext4")
    } else if n >= 4 && &buf[..4] == b"XFSB" {
        Some("xfs")
    } else if n >= 65536 + 72 && &buf[65536 + 64..65536 + 72] == b"_BHRfS_M" {
        Some("btrfs")
    } else {
        None
    })
}

/// Whether `path` is a mount point (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

fn run(cmd: &str, args: &[&str]) -> Result<(), VolumeError> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| {
            VolumeError::Engine(crate::engine::EngineError::Refused(format!(
                "running {cmd}: {e}"
            )))
        })?;
    if !out.status.success() {
        return Err(VolumeError::Engine(crate::engine::EngineError::Refused(
            format!(
                "{cmd} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )));
    }
    Ok(())
}

fn io(e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Engine(crate::engine::EngineError::Refused(e.to_string()))
}

fn find(engine: &NodeEngine, id: &str) -> Result<Volume, VolumeError> {
    engine
        .find(id)?
        .ok_or_else(|| VolumeError::NotFound(id.to_string()))
}

fn publish(
    engine: &NodeEngine,
    id: &str,
    target: &Path,
    block: bool,
    fs_type: &str,
    options: &[String],
    readonly: bool,
) -> Result<(), VolumeError> {
    let v = find(engine, id)?;
    let dev = engine.ensure_active(&v)?;
    if is_mounted(target) {
        return Ok(());
    }
    let ro = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if block {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        if !target.exists() {
            std::fs::File::create(target).map_err(io)?;
        }
        mount(
            Some(&dev),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io)?;
        if readonly {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(io)?;
        }
        return Ok(());
    }
    let fs = match detect_fs(&dev).map_err(io)? {
        Some(existing) => existing.to_string(),
        None => {
            let fs = if fs_type.is_empty() { "ext4" } else { fs_type };
            let d = dev.to_string_lossy().to_string();
            match fs {
                "ext4" => run("mkfs.ext4", &["-q", "-F", &d])?,
                "xfs" => run("mkfs.xfs", &["-q", "-f", &d])?,
                "btrfs" => run("mkfs.btrfs", &["-q", "-f", &d])?,
                other => {
                    return Err(io(format!(
                        "filesystem {other} is not supported (ext4, xfs, btrfs are)"
                    )))
                }
            }
            fs.to_string()
        }
    };
    std::fs::create_dir_all(target).map_err(io)?;
    let data = options.join(",");
    mount(
        Some(&dev),
        target,
        Some(fs.as_str()),
        ro,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(io)?;
    Ok(())
}

#[tonic::async_trait]
impl Node for NodeService {
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
        let engine = self.engine.clone();
        let target = PathBuf::from(r.target_path);
        blocking(move || {
            publish(
                &engine,
                &r.volume_id,
                &target,
                block,
                &fs_type,
                &flags,
                r.readonly,
            )
        })
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
        let target = PathBuf::from(r.target_path);
        blocking(move || {
            if is_mounted(&target) {
                umount2(&target, MntFlags::empty()).map_err(io)?;
            }
            if target.is_dir() {
                std::fs::remove_dir(&target).map_err(io)?;
            } else if target.exists() {
                std::fs::remove_file(&target).map_err(io)?;
            }
            Ok(())
        })
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
        let path = PathBuf::from(&r.volume_path);
        if !path.exists() {
            return Err(Status::not_found(format!(
                "{} does not exist",
                r.volume_path
            )));
        }
        let engine = self.engine.clone();
        let id = r.volume_id.clone();
        let v = blocking(move || find(&engine, &id)).await?;
        let name = crate::activate::dm_name(&v.vg, &v.lv, None);
        let trouble = match crate::activate::Dm::open() {
            Ok(dm) => dm.trouble(&name),
            Err(e) => Some(e.to_string()),
        };
        let condition = match trouble {
            None => VolumeCondition {
                abnormal: false,
                message: "device is active".into(),
            },
            Some(why) => VolumeCondition {
                abnormal: true,
                message: why,
            },
        };
        let usage = if path.is_dir() {
            let st = nix::sys::statvfs::statvfs(&path)
                .map_err(|e| Status::internal(format!("statvfs {}: {e}", path.display())))?;
            let f = st.fragment_size();
            vec![
                VolumeUsage {
                    available: (st.blocks_available() * f) as i64,
                    total: (st.blocks() * f) as i64,
                    used: ((st.blocks() - st.blocks_free()) * f) as i64,
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: st.files_available() as i64,
                    total: st.files() as i64,
                    used: (st.files() - st.files_free()) as i64,
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ]
        } else {
            vec![VolumeUsage {
                total: v.bytes as i64,
                unit: volume_usage::Unit::Bytes as i32,
                ..Default::default()
            }]
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        }))
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
        let engine = self.engine.clone();
        let path = PathBuf::from(&r.volume_path);
        let bytes = blocking(move || {
            let v = find(&engine, &r.volume_id)?;
            let dev = engine.ensure_active(&v)?;
            if path.is_dir() {
                let d = dev.to_string_lossy().to_string();
                let p = path.to_string_lossy().to_string();
                match detect_fs(&dev).map_err(io)? {
                    Some("ext4") => run("resize2fs", &[&d])?,
                    Some("xfs") => run("xfs_growfs", &[&p])?,
                    Some("btrfs") => run("btrfs", &["filesystem", "resize", "max", &p])?,
                    _ => return Err(io("no filesystem to grow")),
                }
            }
            Ok(v.bytes)
        })
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
                cap(rpc::Type::VolumeCondition),
            ],
        }))
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
