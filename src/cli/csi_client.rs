//! `ferrolvm csi …`: a small CSI client for operators (and the demo), to
//! talk to a running `ferrolvm node` over its socket.

use std::path::PathBuf;

use ferrolvm_proto::csi::v1::controller_client::ControllerClient;
use ferrolvm_proto::csi::v1::node_client::NodeClient;
use ferrolvm_proto::csi::v1::volume_capability::{
    access_mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use ferrolvm_proto::csi::v1::*;
use tonic::transport::Channel;

#[derive(clap::Subcommand, Debug)]
pub enum CsiCmd {
    /// CreateVolume; prints the volume id.
    CreateVolume {
        name: String,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: i64,
        #[arg(long)]
        class: Option<String>,
        /// Content source: a snapshot id.
        #[arg(long)]
        from_snapshot: Option<String>,
    },
    DeleteVolume {
        id: String,
    },
    /// NodePublishVolume: mount (or, with --block, bind the device) at TARGET.
    Publish {
        id: String,
        target: PathBuf,
        #[arg(long, default_value = "ext4")]
        fstype: String,
        #[arg(long)]
        block: bool,
    },
    Unpublish {
        id: String,
        target: PathBuf,
    },
    /// ControllerExpandVolume, then NodeExpandVolume at TARGET.
    Expand {
        id: String,
        bytes: i64,
        target: PathBuf,
    },
    /// CreateSnapshot; prints the snapshot id.
    Snapshot {
        name: String,
        source: String,
    },
    DeleteSnapshot {
        id: String,
    },
    /// GetCapacity of a class.
    Capacity {
        #[arg(long)]
        class: Option<String>,
    },
}

async fn channel(endpoint: &str) -> Result<Channel, String> {
    let path = PathBuf::from(
        endpoint
            .strip_prefix("unix://")
            .or_else(|| endpoint.strip_prefix("unix:"))
            .unwrap_or(endpoint),
    );
    crate::csi::unix_channel(path)
        .await
        .map_err(|e| format!("connecting to {endpoint}: {e}"))
}

fn capability(block: bool, fstype: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fstype.into(),
                ..Default::default()
            })
        }),
    }
}

pub fn run(endpoint: &str, cmd: CsiCmd) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ch = channel(endpoint).await?;
        let mut ctl = ControllerClient::new(ch.clone());
        let mut node = NodeClient::new(ch);
        let st = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        match cmd {
            CsiCmd::CreateVolume {
                name,
                bytes,
                class,
                from_snapshot,
            } => {
                let parameters = class
                    .map(|c| {
                        [(crate::csi::DEVICE_CLASS_PARAM.to_string(), c)]
                            .into_iter()
                            .collect()
                    })
                    .unwrap_or_default();
                let volume_content_source = from_snapshot.map(|id| VolumeContentSource {
                    r#type: Some(volume_content_source::Type::Snapshot(
                        volume_content_source::SnapshotSource { snapshot_id: id },
                    )),
                });
                let r = ctl
                    .create_volume(CreateVolumeRequest {
                        name,
                        capacity_range: Some(CapacityRange {
                            required_bytes: bytes,
                            limit_bytes: 0,
                        }),
                        volume_capabilities: vec![capability(false, "")],
                        parameters,
                        volume_content_source,
                        ..Default::default()
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                let v = r.volume.unwrap_or_default();
                println!("{} {}", v.volume_id, v.capacity_bytes);
            }
            CsiCmd::DeleteVolume { id } => {
                ctl.delete_volume(DeleteVolumeRequest {
                    volume_id: id,
                    secrets: Default::default(),
                })
                .await
                .map_err(st)?;
            }
            CsiCmd::Publish {
                id,
                target,
                fstype,
                block,
            } => {
                node.node_publish_volume(NodePublishVolumeRequest {
                    volume_id: id,
                    target_path: target.display().to_string(),
                    volume_capability: Some(capability(block, &fstype)),
                    ..Default::default()
                })
                .await
                .map_err(st)?;
            }
            CsiCmd::Unpublish { id, target } => {
                node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: id,
                    target_path: target.display().to_string(),
                })
                .await
                .map_err(st)?;
            }
            CsiCmd::Expand { id, bytes, target } => {
                let r = ctl
                    .controller_expand_volume(ControllerExpandVolumeRequest {
                        volume_id: id.clone(),
                        capacity_range: Some(CapacityRange {
                            required_bytes: bytes,
                            limit_bytes: 0,
                        }),
                        ..Default::default()
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                node.node_expand_volume(NodeExpandVolumeRequest {
                    volume_id: id,
                    volume_path: target.display().to_string(),
                    ..Default::default()
                })
                .await
                .map_err(st)?;
                println!("{}", r.capacity_bytes);
            }
            CsiCmd::Snapshot { name, source } => {
                let r = ctl
                    .create_snapshot(CreateSnapshotRequest {
                        name,
                        source_volume_id: source,
                        ..Default::default()
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{}", r.snapshot.unwrap_or_default().snapshot_id);
            }
            CsiCmd::DeleteSnapshot { id } => {
                ctl.delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: id,
                    secrets: Default::default(),
                })
                .await
                .map_err(st)?;
            }
            CsiCmd::Capacity { class } => {
                let parameters = class
                    .map(|c| {
                        [(crate::csi::DEVICE_CLASS_PARAM.to_string(), c)]
                            .into_iter()
                            .collect()
                    })
                    .unwrap_or_default();
                let r = ctl
                    .get_capacity(GetCapacityRequest {
                        parameters,
                        ..Default::default()
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{}", r.available_capacity);
            }
        }
        Ok(())
    })
}
