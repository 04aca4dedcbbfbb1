//! What the node's `/metrics` shows, read in one pass: one scan of the
//! node's devices, the kernel's status of each thin pool. The figures are
//! lvm2's own (`vgs` vg_size, vg_free, vg_mda_free; `lvs` data_percent,
//! metadata_percent), so an operator can hold one against the other.

use ferrolvm_metadata::alloc::FreeMap;
use ferrolvm_metadata::scan::{CopyState, FoundVg};
use ferrolvm_metadata::Vg;

use super::wipe::wiping;
use super::NodeEngine;
use crate::lvm::activate::Dm;
use crate::node::config::ClassType;
use crate::node::volume::VolumeError;

/// One device class as `/metrics` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassReport {
    pub class: String,
    pub volume_group: String,
    /// vgs vg_size and vg_free.
    pub vg_size: u64,
    pub vg_free: u64,
    /// Bytes a new volume of the class can get (the capacity published).
    pub capacity: u64,
    /// Volumes ferrolvm made in the class.
    pub volumes: u64,
    pub thin_pool: Option<PoolReport>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolReport {
    pub size: u64,
    /// lvs data_percent and metadata_percent; `None` while the pool is not
    /// active (the kernel has no figures for it).
    pub data_percent: Option<f64>,
    pub metadata_percent: Option<f64>,
}

/// One volume group as `/metrics` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VgReport {
    pub name: String,
    /// vgs vg_mda_free: room left for the metadata text in the fullest
    /// metadata area. At zero every change to the VG is refused.
    pub mda_free: u64,
    /// Bytes held by deleted volumes whose extents are not yet wiped.
    pub wipe_backlog: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeReport {
    pub classes: Vec<ClassReport>,
    pub vgs: Vec<VgReport>,
}

/// lvm2's free space of one metadata area holding a text of `used` bytes
/// (the size in its header, NUL included): half of the ring after the
/// header (two copies must fit while one is written), less a sector of
/// slack, less the text, in whole sectors. This is also the most the text
/// can grow before ferrolvm's placement refuses a commit
/// (`MdaHeader::max_text_len`). Measured against lvm2 2.03.16's `vgs -o
/// vg_mda_free` over a VG's first 50 commits, wrapped or not.
pub fn mda_free(area_size: u64, used: u64) -> u64 {
    let room = (area_size.saturating_sub(512) / 2).saturating_sub(512);
    room.saturating_sub(used) / 512 * 512
}

/// The least free space over every metadata area holding the VG's text.
fn vg_mda_free(scan: &crate::lvm::scan::Scan, found: &FoundVg) -> u64 {
    found
        .copies
        .iter()
        .filter(|c| c.state == CopyState::Current)
        .filter_map(|c| {
            let read = scan.reads.iter().find(|r| r.dev == c.dev)?;
            let header = read.mdas.get(c.mda)?.header.as_ref().ok()?;
            Some(mda_free(header.size, header.slots[0].size))
        })
        .min()
        .unwrap_or(0)
}

fn percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

impl NodeEngine {
    /// Every class and VG of this node, from one scan.
    pub fn report(&self) -> Result<NodeReport, VolumeError> {
        let scan = crate::lvm::scan::scan_paths(&self.host.candidate_devices());
        let dm = Dm::open().ok();
        let mut out = NodeReport::default();
        for vg_name in self.volume_groups() {
            let found = scan
                .vg(vg_name)
                .ok_or_else(|| crate::lvm::LvmError::VgNotFound(vg_name.into()))?;
            out.vgs.push(VgReport {
                name: vg_name.to_string(),
                mda_free: vg_mda_free(&scan, found),
                wipe_backlog: wiping(&found.vg).iter().map(|w| w.2).sum(),
            });
        }
        for c in &self.config.device_classes {
            let vg: &Vg = &scan
                .vg(&c.volume_group)
                .ok_or_else(|| crate::lvm::LvmError::VgNotFound(c.volume_group.clone()))?
                .vg;
            let es = vg.extent_size as u64 * 512;
            let pool_name = c
                .thin_pool
                .as_ref()
                .filter(|_| c.class_type == ClassType::Thin)
                .map(|p| p.name.as_str());
            let volumes = super::class_volumes(c, vg).count() as u64;
            let thin_pool = pool_name.and_then(|p| vg.lv(p)).map(|pool| {
                let status = dm
                    .as_ref()
                    .and_then(|dm| dm.pool_status(vg, &pool.name).ok().flatten());
                PoolReport {
                    size: pool.extent_count() as u64 * es,
                    data_percent: status.as_ref().and_then(|s| percent(s.data.0, s.data.1)),
                    metadata_percent: status
                        .as_ref()
                        .and_then(|s| percent(s.metadata.0, s.metadata.1)),
                }
            });
            out.classes.push(ClassReport {
                class: c.name.clone(),
                volume_group: c.volume_group.clone(),
                vg_size: vg.extent_count() * es,
                vg_free: FreeMap::of(vg).total() * es,
                capacity: c.capacity(vg),
                volumes,
                thin_pool,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mda_free_is_half_the_ring_less_the_text() {
        // Pairs lvm2 2.03.16's vgs reported for a 1020 KiB area (the
        // default pvcreate layout): text size in the header → vg_mda_free.
        for (used, lvm2) in [
            (705, 520_704),
            (980, 520_192),
            (1532, 519_680),
            (1808, 519_168),
            (11_529, 509_440),
            (12_085, 508_928),
            (13_197, 507_904),
        ] {
            assert_eq!(mda_free(1_044_480, used), lvm2, "text of {used} bytes");
        }
        // A text past half the ring leaves nothing, never less.
        assert_eq!(mda_free(4096, 4000), 0);
    }
}
