//! Snapshots and clones on thin classes: a snapshot is a thin snapshot LV
//! tagged with its CSI snapshot name; a volume from a snapshot or another
//! volume is a thin snapshot of it, grown to the requested size.

use super::NodeEngine;
use crate::lvm::volumes;
use crate::node::config::{ClassType, DeviceClass};
use crate::node::volume::{
    csi_name, hex, lv_name_for, over_limit, snapshot_name, to_volume, unique_name, Snapshot,
    Source, Volume, VolumeError, NAME_TAG, SNAPSHOT_TAG,
};

impl NodeEngine {
    /// Snapshots of this node's thin classes.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, VolumeError> {
        let mut out = Vec::new();
        for c in self
            .config
            .device_classes
            .iter()
            .filter(|c| c.class_type == ClassType::Thin)
        {
            let vg = self.read_vg(&c.volume_group)?;
            for lv in &vg.lvs {
                let Some(name) = snapshot_name(lv) else {
                    continue;
                };
                let source = lv
                    .tags
                    .iter()
                    .find_map(|t| t.strip_prefix("ferrolvm.io/source="))
                    .map(str::to_string)
                    .unwrap_or_default();
                out.push(Snapshot {
                    id: lv.id.dashed(),
                    name,
                    source,
                    bytes: lv.extent_count() as u64 * vg.extent_size as u64 * 512,
                    created: lv.creation_time.unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Thin class and LV name holding volume or snapshot `id`.
    fn locate(&self, id: &str) -> Result<(DeviceClass, String), VolumeError> {
        for c in self
            .config
            .device_classes
            .iter()
            .filter(|c| c.class_type == ClassType::Thin)
        {
            let vg = self.read_vg(&c.volume_group)?;
            let pool = c.thin_pool.as_ref().map(|p| p.name.as_str());
            if let Some(lv) = vg.lvs.iter().find(|l| {
                l.id.dashed() == id
                    && (csi_name(l).is_some() || snapshot_name(l).is_some())
                    && matches!(l.segments.first().and_then(|s| s.thin.as_ref()), Some(ferrolvm_metadata::ThinSegment::Thin { thin_pool, .. }) if Some(thin_pool.as_str()) == pool)
            }) {
                return Ok((c.clone(), lv.name.clone()));
            }
        }
        Err(VolumeError::NotFound(id.to_string()))
    }

    /// The snapshot `name` if it exists: itself when it is of `source`, a
    /// conflict when it is of another volume.
    fn existing_snapshot(&self, name: &str, source: &str) -> Result<Option<Snapshot>, VolumeError> {
        match self.snapshots()?.into_iter().find(|s| s.name == name) {
            Some(s) if s.source == source => Ok(Some(s)),
            Some(s) => Err(VolumeError::Conflict {
                name: name.into(),
                existing: s.bytes,
            }),
            None => Ok(None),
        }
    }

    /// The volume `name` if it exists and fits the range, a conflict if it
    /// does not fit.
    fn existing_volume(
        &self,
        name: &str,
        required: u64,
        limit: u64,
    ) -> Result<Option<Volume>, VolumeError> {
        match self.list()?.into_iter().find(|v| v.name == name) {
            Some(v) if v.bytes >= required && (limit == 0 || v.bytes <= limit) => Ok(Some(v)),
            Some(v) => Err(VolumeError::Conflict {
                name: name.into(),
                existing: v.bytes,
            }),
            None => Ok(None),
        }
    }

    /// Creates (or finds) snapshot `name` of volume `source` (thin classes only).
    pub fn create_snapshot(&self, name: &str, source: &str) -> Result<Snapshot, VolumeError> {
        if let Some(s) = self.existing_snapshot(name, source)? {
            return Ok(s);
        }
        self.find(source)?
            .ok_or_else(|| VolumeError::NotFound(source.to_string()))?;
        let (class, origin) = self.locate(source).map_err(|_| VolumeError::NotThin(format!("volume {source} is not in a thin device class: only thin volumes can be snapshotted")))?;
        let pool = class
            .thin_pool
            .as_ref()
            .map(|p| p.name.clone())
            .expect("thin class has a pool");
        let queue = self.queue(&class.volume_group);
        let _leader = queue
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Again under the lock: a concurrent call with this name may have made it.
        if let Some(s) = self.existing_snapshot(name, source)? {
            return Ok(s);
        }
        volumes::create_thin(
            &self.host,
            &class.volume_group,
            &pool,
            Some(&origin),
            false,
            |vg| {
                let lv_name = unique_name(vg, &format!("snap-{}", lv_name_for(name)));
                let tags = vec![
                    format!("{SNAPSHOT_TAG}{}", hex(name)),
                    format!("ferrolvm.io/source={source}"),
                ];
                Ok((self.new_lv(lv_name, tags), 0))
            },
        )?;
        self.snapshots()?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// Removes a snapshot; an unknown id is not an error.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, VolumeError> {
        if !self.snapshots()?.iter().any(|s| s.id == id) {
            return Ok(false);
        }
        let (class, lv) = self.locate(id)?;
        let queue = self.queue(&class.volume_group);
        let _leader = queue
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        volumes::remove(&self.host, &class.volume_group, &lv, false)?;
        Ok(true)
    }

    /// A new volume holding the content of a snapshot or a volume (thin classes only).
    pub fn create_from(
        &self,
        name: &str,
        class: Option<&str>,
        required: u64,
        limit: u64,
        source: &Source,
    ) -> Result<Volume, VolumeError> {
        if let Some(v) = self.existing_volume(name, required, limit)? {
            return Ok(v);
        }
        let (id, known) = match source {
            Source::Snapshot(id) => (id, self.snapshots()?.iter().any(|s| &s.id == id)),
            Source::Volume(id) => (id, self.find(id)?.is_some()),
        };
        if !known {
            return Err(VolumeError::NotFound(id.clone()));
        }
        let (src_class, origin) = self.locate(id).map_err(|_| VolumeError::NotThin(format!("{id} is not in a thin device class: only thin volumes and snapshots can be sources")))?;
        let wanted = self.class(class)?;
        if wanted.name != src_class.name {
            return Err(VolumeError::NotThin(format!(
                "the source is in device class {}, the new volume would be in {}",
                src_class.name, wanted.name
            )));
        }
        let pool = src_class
            .thin_pool
            .as_ref()
            .map(|p| p.name.clone())
            .expect("thin class has a pool");
        // A clone starts at its source's size: over the limit, refuse before making it.
        let source_bytes = match source {
            Source::Snapshot(id) => self
                .snapshots()?
                .into_iter()
                .find(|s| &s.id == id)
                .map(|s| s.bytes),
            Source::Volume(id) => self.find(id)?.map(|v| v.bytes),
        }
        .unwrap_or(0);
        if let Some(e) = over_limit(name, source_bytes.max(required), limit) {
            return Err(e);
        }
        let queue = self.queue(&src_class.volume_group);
        let leader = queue
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Again under the lock: a concurrent call with this name may have made it.
        if let Some(v) = self.existing_volume(name, required, limit)? {
            return Ok(v);
        }
        let mut lv_name = String::new();
        let vg = volumes::create_thin(
            &self.host,
            &src_class.volume_group,
            &pool,
            Some(&origin),
            false,
            |vg| {
                lv_name = unique_name(vg, name);
                Ok((
                    self.new_lv(lv_name.clone(), vec![format!("{NAME_TAG}{}", hex(name))]),
                    0,
                ))
            },
        )?;
        drop(leader);
        let mut v = vg
            .lv(&lv_name)
            .and_then(|l| to_volume(&vg, l, &src_class.name))
            .ok_or_else(|| VolumeError::NotFound(lv_name.clone()))?;
        if v.bytes < required {
            v.bytes = self.expand(&v.id, required, limit)?;
        }
        self.ensure_active(&v)?;
        Ok(v)
    }
}
