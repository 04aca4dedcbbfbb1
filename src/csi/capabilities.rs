//! Request checks shared by the Controller and Node services: volume
//! capabilities (an access type, a single-node mode), the topology of a
//! node-local volume, and the smallest volume each filesystem is made on.

use std::collections::HashMap;

use ferrolvm_proto::csi::v1::volume_capability::{access_mode, AccessType};
use ferrolvm_proto::csi::v1::{Topology, VolumeCapability};
use tonic::Status;

use super::{FSTYPE_PARAM, TOPOLOGY_KEY};

/// The accessible topology of a volume on `node`.
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

/// Smallest volume a filesystem (or a block volume) is made on, as TopoLVM's defaults.
pub fn minimum_size(caps: &[VolumeCapability], params: &HashMap<String, String>) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolvm_proto::csi::v1::volume_capability::{self, BlockVolume, MountVolume};

    fn cap(access: AccessType) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(volume_capability::AccessMode {
                mode: access_mode::Mode::SingleNodeWriter as i32,
            }),
        }
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
