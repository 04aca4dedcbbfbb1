//! Thin pools on device-mapper: `vg-pool_tmeta` (-tmeta) and `vg-pool_tdata` (-tdata) hold the
//! pool's LVs, `vg-pool-tpool` (-tpool) the thin-pool target, and the public
//! `vg-pool` (-pool) a read-only linear map of it, exactly as lvm2 builds them.

use devicemapper::{DevId, Device, DmFlags, DmName, DmOptions, DmUuid};
use ferrolvm_metadata::{Lv, ThinMessage, ThinSegment, Vg};

use super::*;

/// A thin pool's `dmsetup status` fields ferrolvm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub transaction_id: u64,
    /// Used and total metadata blocks.
    pub metadata: (u64, u64),
    /// Used and total data blocks.
    pub data: (u64, u64),
}

fn pool_segment(vg: &Vg, pool: &str) -> Result<(Lv, ThinSegment)> {
    let lv = vg
        .lv(pool)
        .ok_or_else(|| ActivateError::Layout(format!("thin pool {}/{pool} not found", vg.name)))?;
    match lv.segments.first().and_then(|s| s.thin.clone()) {
        Some(t @ ThinSegment::Pool { .. }) => Ok((lv.clone(), t)),
        _ => Err(ActivateError::Layout(format!(
            "{}/{pool} is not a thin pool",
            vg.name
        ))),
    }
}

impl Dm {
    /// Activates one device (of `lv`, or its `layer`) if absent and returns
    /// its device number and whether it made it (one status ioctl answers
    /// both); a half-made device is removed again on error.
    pub(super) fn ensure_made(
        &self,
        vg: &Vg,
        lv: &Lv,
        layer: Option<&str>,
        suffix: Option<&str>,
        table: &[TableLine],
        readonly: bool,
    ) -> Result<(Device, Action)> {
        let uuid = dm_uuid(vg, lv, suffix);
        if let Some(info) = self.info(&uuid) {
            return Ok((info.device(), Action::AlreadyThere));
        }
        let name = dm_name(&vg.name, &lv.name, layer);
        let dname = DmName::new(&name).map_err(dm_err("name", &name))?;
        let duuid = DmUuid::new(&uuid).map_err(dm_err("uuid", &name))?;
        let flags = if readonly {
            DmFlags::DM_READONLY
        } else {
            DmFlags::empty()
        };
        let info = self
            .dm
            .device_create(dname, Some(duuid), DmOptions::default().set_flags(flags))
            .map_err(dm_err("create", &name))?;
        let id = DevId::Name(dname);
        let loaded = self
            .dm
            .table_load(&id, table, DmOptions::default().set_flags(flags))
            .map_err(dm_err("table load", &name))
            .and_then(|_| {
                self.dm
                    .device_suspend(&id, DmOptions::default())
                    .map_err(dm_err("resume", &name))
            })
            .and_then(|_| {
                if udev_running() {
                    Ok(())
                } else {
                    create_nodes(
                        vg,
                        lv,
                        &name,
                        info.device(),
                        layer.is_none() && lv.visible(),
                    )
                }
            });
        if let Err(cause) = loaded {
            if let Err(rollback) = self
                .dm
                .device_remove(&id, DmOptions::default())
                .map_err(dm_err("remove", &name))
            {
                return Err(ActivateError::Rollback {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                });
            }
            return Err(cause);
        }
        Ok((info.device(), Action::Done))
    }

    fn remove_by_uuid(&self, vg: &Vg, lv: &Lv, suffix: Option<&str>) -> Result<()> {
        let label = format!(
            "{}/{}{}",
            vg.name,
            lv.name,
            suffix.map(|s| format!("-{s}")).unwrap_or_default()
        );
        if let Some(name) = self.remove_waiting(&dm_uuid(vg, lv, suffix), &label)? {
            if !udev_running() {
                let _ = std::fs::remove_file(mapper_path(&name));
            }
        }
        Ok(())
    }

    /// Activates a pool's devices; returns the `-tpool` device.
    pub fn activate_pool(
        &self,
        vg: &Vg,
        pool: &str,
        pvs: &[(String, Device, u64)],
    ) -> Result<Device> {
        let (pool_lv, seg) = pool_segment(vg, pool)?;
        let ThinSegment::Pool {
            metadata,
            pool: data,
            chunk_size,
            discards,
            zero_new_blocks,
            ..
        } = seg
        else {
            unreachable!()
        };
        let lv_of = |n: &str| {
            vg.lv(n)
                .cloned()
                .ok_or_else(|| ActivateError::Layout(format!("{}/{n} is missing", vg.name)))
        };
        let (tmeta, tdata) = (lv_of(&metadata)?, lv_of(&data)?);
        let meta_dev = self
            .ensure_made(
                vg,
                &tmeta,
                None,
                Some("tmeta"),
                &striped_table(vg, &tmeta, pvs)?,
                false,
            )?
            .0;
        let data_dev = self
            .ensure_made(
                vg,
                &tdata,
                None,
                Some("tdata"),
                &striped_table(vg, &tdata, pvs)?,
                false,
            )?
            .0;
        let len = pool_lv.extent_count() as u64 * vg.extent_size as u64;
        let mut feats = Vec::new();
        if !zero_new_blocks {
            feats.push("skip_block_zeroing");
        }
        match discards.as_deref() {
            Some("ignore") | None => feats.push("ignore_discard"),
            Some("nopassdown") => feats.push("no_discard_passdown"),
            _ => {}
        }
        if pool_lv.flags.iter().any(|f| f == "ERROR_WHEN_FULL") {
            feats.push("error_if_no_space");
        }
        let mut params = format!(
            "{}:{} {}:{} {chunk_size} 0 {}",
            meta_dev.major,
            meta_dev.minor,
            data_dev.major,
            data_dev.minor,
            feats.len()
        );
        for f in feats {
            params.push(' ');
            params.push_str(f);
        }
        let tpool = self
            .ensure_made(
                vg,
                &pool_lv,
                Some("tpool"),
                Some("tpool"),
                &[(0, len, "thin-pool".into(), params)],
                false,
            )?
            .0;
        // lvm2 (2.03) activates a pool that no thin LV uses as the
        // thin-pool target itself under the public name, with no -pool
        // layer: that device is the pool, and adding a layer would collide
        // with its name.
        let public_name = dm_name(&vg.name, &pool_lv.name, None);
        let pool_only = self
            .info(&dm_uuid(vg, &pool_lv, Some("tpool")))
            .and_then(|i| i.name().map(|n| n.to_string()))
            .is_some_and(|n| n == public_name);
        if pool_only {
            return Ok(tpool);
        }
        let public = format!("{}:{} 0", tpool.major, tpool.minor);
        self.ensure_made(
            vg,
            &pool_lv,
            None,
            Some("pool"),
            &[(0, len, "linear".into(), public)],
            true,
        )?;
        Ok(tpool)
    }

    /// The kernel's view of an active pool (`None` when it is not active).
    pub fn pool_status(&self, vg: &Vg, pool: &str) -> Result<Option<PoolStatus>> {
        let (lv, _) = pool_segment(vg, pool)?;
        let uuid = dm_uuid(vg, &lv, Some("tpool"));
        let Ok(u) = DmUuid::new(&uuid) else {
            return Ok(None);
        };
        let Ok((_, lines)) = self.dm.table_status(&DevId::Uuid(u), DmOptions::default()) else {
            return Ok(None);
        };
        let Some((_, _, _, status)) = lines.first() else {
            return Ok(None);
        };
        let f: Vec<&str> = status.split_whitespace().collect();
        let frac = |s: &str| -> Option<(u64, u64)> {
            s.split_once('/')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        };
        match (
            f.first().and_then(|t| t.parse().ok()),
            f.get(1).and_then(|s| frac(s)),
            f.get(2).and_then(|s| frac(s)),
        ) {
            (Some(transaction_id), Some(metadata), Some(data)) => Ok(Some(PoolStatus {
                transaction_id,
                metadata,
                data,
            })),
            _ => Err(ActivateError::Layout(format!(
                "unexpected thin-pool status for {}/{pool}: {status}",
                vg.name
            ))),
        }
    }

    fn message(&self, vg: &Vg, pool: &Lv, msg: &str) -> Result<()> {
        let uuid = dm_uuid(vg, pool, Some("tpool"));
        let u = DmUuid::new(&uuid).map_err(dm_err("uuid", &pool.name))?;
        self.dm
            .target_msg(&DevId::Uuid(u), Some(0), msg)
            .map(|_| ())
            .map_err(|source| ActivateError::Dm {
                op: "message",
                name: format!("{}/{} ({msg})", vg.name, pool.name),
                source,
            })
    }

    /// Brings the kernel pool to the metadata's transaction id, replaying
    /// queued messages (lvm2's protocol). Returns whether messages were sent.
    pub fn sync_pool(&self, vg: &Vg, pool: &str) -> Result<bool> {
        let (pool_lv, seg) = pool_segment(vg, pool)?;
        let ThinSegment::Pool {
            transaction_id,
            messages,
            ..
        } = seg
        else {
            unreachable!()
        };
        let Some(PoolStatus {
            transaction_id: kernel,
            ..
        }) = self.pool_status(vg, pool)?
        else {
            return Err(ActivateError::Layout(format!(
                "thin pool {}/{pool} is not active",
                vg.name
            )));
        };
        if kernel == transaction_id {
            return Ok(false);
        }
        if kernel + 1 != transaction_id || messages.is_empty() {
            return Err(ActivateError::Layout(format!(
                "thin pool {}/{pool} transaction_id is {kernel}, while expected {transaction_id}",
                vg.name
            )));
        }
        for m in &messages {
            match m {
                ThinMessage::Create { lv } => {
                    let thin = vg.lv(lv).ok_or_else(|| {
                        ActivateError::Layout(format!("queued create names missing LV {lv}"))
                    })?;
                    let Some(ThinSegment::Thin {
                        device_id, origin, ..
                    }) = thin.segments.first().and_then(|s| s.thin.clone())
                    else {
                        return Err(ActivateError::Layout(format!(
                            "queued create names {lv}, which is not thin"
                        )));
                    };
                    let create = |dm: &Dm| -> Result<()> {
                        match &origin {
                            None => dm.message(vg, &pool_lv, &format!("create_thin {device_id}")),
                            Some(o) => {
                                let olv = vg.lv(o).ok_or_else(|| {
                                    ActivateError::Layout(format!("origin {o} is missing"))
                                })?;
                                let Some(ThinSegment::Thin { device_id: oid, .. }) =
                                    olv.segments.first().and_then(|s| s.thin.clone())
                                else {
                                    return Err(ActivateError::Layout(format!(
                                        "origin {o} is not thin"
                                    )));
                                };
                                // The origin must not change while the snapshot is taken.
                                let active = dm.info(&dm_uuid(vg, olv, None)).is_some();
                                let ouuid = dm_uuid(vg, olv, None);
                                let oid_dev = DmUuid::new(&ouuid).map_err(dm_err("uuid", o))?;
                                if active {
                                    dm.dm
                                        .device_suspend(
                                            &DevId::Uuid(oid_dev),
                                            DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
                                        )
                                        .map_err(dm_err("suspend", o))?;
                                    crate::lvm::failpoint::hit("thin-origin-suspended");
                                }
                                let r = dm.message(
                                    vg,
                                    &pool_lv,
                                    &format!("create_snap {device_id} {oid}"),
                                );
                                if active {
                                    dm.dm
                                        .device_suspend(&DevId::Uuid(oid_dev), DmOptions::default())
                                        .map_err(dm_err("resume", o))?;
                                }
                                r
                            }
                        }
                    };
                    // EEXIST: the kernel applied this create before a crash
                    // stopped us short of set_transaction_id. The device is
                    // the one we asked for (a snapshot keeps its moment).
                    match create(self) {
                        Err(e) if is_eexist(&e) => {}
                        other => other?,
                    }
                }
                ThinMessage::Delete { device_id } => {
                    // Already gone (ENODATA) if a crash came after the delete
                    // but before set_transaction_id. Any other failure is an
                    // error: the device id must not be reused while its
                    // blocks may still be there.
                    match self.message(vg, &pool_lv, &format!("delete {device_id}")) {
                        Err(e) if failed_with(&e, nix::errno::Errno::ENODATA) => {}
                        other => other?,
                    }
                }
            }
            crate::lvm::failpoint::hit("thin-message-sent");
        }
        self.message(
            vg,
            &pool_lv,
            &format!("set_transaction_id {kernel} {transaction_id}"),
        )?;
        crate::lvm::failpoint::hit("thin-transaction-set");
        Ok(true)
    }

    /// Activates a thin LV on its (active) pool.
    pub fn activate_thin(&self, vg: &Vg, lv: &Lv, tpool: Device) -> Result<Action> {
        let Some(ThinSegment::Thin { device_id, .. }) =
            lv.segments.first().and_then(|s| s.thin.clone())
        else {
            return Err(ActivateError::Layout(format!(
                "{}/{} is not thin",
                vg.name, lv.name
            )));
        };
        let len = lv.extent_count() as u64 * vg.extent_size as u64;
        self.activate(
            vg,
            lv,
            &[(
                0,
                len,
                "thin".into(),
                format!("{}:{} {device_id}", tpool.major, tpool.minor),
            )],
        )
    }

    /// Removes a pool's devices unless a thin LV of it is active.
    pub fn deactivate_pool_if_unused(&self, vg: &Vg, pool: &str) -> Result<bool> {
        let (pool_lv, seg) = pool_segment(vg, pool)?;
        let ThinSegment::Pool {
            metadata,
            pool: data,
            ..
        } = seg
        else {
            unreachable!()
        };
        let in_use = ferrolvm_metadata::ops::thin_lvs(vg, pool)
            .iter()
            .any(|(l, _)| self.info(&dm_uuid(vg, l, None)).is_some());
        if in_use {
            return Ok(false);
        }
        self.remove_by_uuid(vg, &pool_lv, Some("pool"))?;
        self.remove_by_uuid(vg, &pool_lv, Some("tpool"))?;
        for n in [&metadata, &data] {
            if let Some(l) = vg.lv(n) {
                let suffix = if *n == metadata { "tmeta" } else { "tdata" };
                self.remove_by_uuid(vg, l, Some(suffix))?;
            }
        }
        Ok(true)
    }

    /// Resumes every thin LV of `pool` that is left suspended (a snapshot
    /// interrupted between suspending its origin and resuming it); returns
    /// their names.
    pub fn resume_suspended_thins(&self, vg: &Vg, pool: &str) -> Result<Vec<String>> {
        let mut resumed = Vec::new();
        for (lv, _) in ferrolvm_metadata::ops::thin_lvs(vg, pool) {
            let uuid = dm_uuid(vg, lv, None);
            let Some(info) = self.info(&uuid) else {
                continue;
            };
            if info.flags().contains(DmFlags::DM_SUSPEND) {
                let u = DmUuid::new(&uuid).map_err(dm_err("uuid", &lv.name))?;
                self.dm
                    .device_suspend(&DevId::Uuid(u), DmOptions::default())
                    .map_err(dm_err("resume", &lv.name))?;
                resumed.push(lv.name.clone());
            }
        }
        Ok(resumed)
    }

    /// The state of the device named `name`, as lvm2's `lv_attr` shows it
    /// (state, open, health).
    pub fn state(&self, name: &str) -> DeviceState {
        let Ok(dname) = DmName::new(name) else {
            return DeviceState::Missing;
        };
        let Ok(info) = self.dm.device_info(&DevId::Name(dname)) else {
            return DeviceState::Missing;
        };
        if info.flags().contains(DmFlags::DM_SUSPEND) {
            return DeviceState::Suspended;
        }
        let failed = self
            .dm
            .table_status(&DevId::Name(dname), DmOptions::default())
            .map(|(_, lines)| {
                lines
                    .iter()
                    .any(|(_, _, _, st)| st.split_whitespace().any(|w| w == "Fail"))
            })
            .unwrap_or(false);
        if failed {
            return DeviceState::Failed;
        }
        DeviceState::Live {
            open: info.open_count() > 0,
        }
    }

    /// Why the device named `name` is unusable, if it is: missing, suspended,
    /// or reported failed by its target (a thin device over a failed pool
    /// says `Fail`).
    pub fn trouble(&self, name: &str) -> Option<String> {
        if DmName::new(name).is_err() {
            return Some(format!("{name} is not a device-mapper name"));
        }
        match self.state(name) {
            DeviceState::Missing => Some(format!("device-mapper device {name} is missing")),
            DeviceState::Suspended => Some(format!("device-mapper device {name} is suspended")),
            DeviceState::Failed => Some(format!("device-mapper device {name} reports a failure")),
            DeviceState::Live { .. } => None,
        }
    }

    /// Mapped sectors of an active thin LV (its `thin` status).
    pub fn thin_mapped(&self, vg: &Vg, lv: &Lv) -> Option<u64> {
        let uuid = dm_uuid(vg, lv, None);
        let u = DmUuid::new(&uuid).ok()?;
        let (_, lines) = self
            .dm
            .table_status(&DevId::Uuid(u), DmOptions::default())
            .ok()?;
        lines.first()?.3.split_whitespace().next()?.parse().ok()
    }
}

/// What device-mapper says of an LV's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    Missing,
    Suspended,
    /// Its target reports `Fail` (a thin device over a failed pool).
    Failed,
    Live {
        /// Held open (mounted, or by a process).
        open: bool,
    },
}
