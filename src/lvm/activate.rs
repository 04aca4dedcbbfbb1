//! LV activation through device-mapper ioctls (the `devicemapper` crate),
//! with device names, UUIDs and tables exactly as lvm2 makes them, so that
//! lvm2 and ferrolvm can each deactivate what the other activated.
//!
//! Without udev (no `/run/udev/control`), ferrolvm creates
//! `/dev/mapper/<name>` and `/dev/<vg>/<lv>` itself, as libdm does; with
//! udev, the rules make them and the crate waits on the udev cookie.

use std::path::{Path, PathBuf};

use devicemapper::{DevId, Device, DeviceInfo, DmFlags, DmOptions, DmUuid, DM};
use ferrolvm_metadata::{Area, Lv, Vg};

use crate::lvm::scan::Scan;

mod thin;
pub use thin::{DeviceState, PoolStatus};

/// One table line: start, length (sectors), target type, parameters.
pub type TableLine = (u64, u64, String, String);

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(
        "device-mapper is not available ({0}); for metadata-only changes, pass --driverloaded n"
    )]
    NoDriver(String),
    #[error("device-mapper is present but unusable: {0}")]
    Unusable(String),
    #[error("device-mapper {op} on {name}: {source}")]
    Dm {
        op: &'static str,
        name: String,
        source: devicemapper::DmError,
    },
    #[error("logical volume {0} is in use (open {1} times); close it first")]
    Busy(String, i32),
    #[error("{what} {path}: {source}")]
    Node {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(String),
    #[error("{cause}; cleaning up also failed: {rollback}")]
    Rollback {
        cause: Box<ActivateError>,
        rollback: Box<ActivateError>,
    },
}

type Result<T> = std::result::Result<T, ActivateError>;

/// Whether an idempotent action changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Done,
    AlreadyThere,
}

/// `vg-lv[-layer]` with every `-` in the names doubled.
pub fn dm_name(vg: &str, lv: &str, layer: Option<&str>) -> String {
    let esc = |s: &str| s.replace('-', "--");
    let mut n = format!("{}-{}", esc(vg), esc(lv));
    if let Some(l) = layer {
        if !l.starts_with('_') {
            n.push('-');
        }
        n.push_str(&esc(l));
    }
    n
}

/// `LVM-<vg uuid><lv uuid>[-suffix]`, uuids without dashes.
pub fn dm_uuid(vg: &Vg, lv: &Lv, suffix: Option<&str>) -> String {
    let mut u = format!("LVM-{}{}", vg.id.raw_str(), lv.id.raw_str());
    if let Some(s) = suffix {
        u.push('-');
        u.push_str(s);
    }
    u
}

/// major:minor of each PV of `vg`, by section name, from the scan.
pub fn pv_devices(scan: &Scan, vg: &Vg) -> Result<Vec<(String, Device, u64)>> {
    let found = scan.assembly.vgs.iter().find(|f| f.vg.id == vg.id);
    let mut out = Vec::new();
    for pv in &vg.pvs {
        let dev = found.and_then(|f| f.pv_devs.get(&pv.id)).copied();
        let Some(dev) = dev else { continue };
        let path = &scan.devices[dev].path;
        let st = nix::sys::stat::stat(path).map_err(|e| ActivateError::Node {
            what: "stat",
            path: path.display().to_string(),
            source: e.into(),
        })?;
        let rdev = st.st_rdev;
        out.push((
            pv.key.clone(),
            Device {
                major: nix::sys::stat::major(rdev) as u32,
                minor: nix::sys::stat::minor(rdev) as u32,
            },
            pv.pe_start,
        ));
    }
    Ok(out)
}

/// The table lvm2 loads for a linear or striped LV: one line per segment.
pub fn striped_table(vg: &Vg, lv: &Lv, pvs: &[(String, Device, u64)]) -> Result<Vec<TableLine>> {
    let es = vg.extent_size as u64;
    let mut lines = Vec::new();
    for seg in &lv.segments {
        if !seg.is_striped() {
            return Err(ActivateError::Layout(format!(
                "{}/{} has a {} segment; ferrolvm activates linear and striped LVs",
                vg.name, lv.name, seg.segtype
            )));
        }
        let mut areas = Vec::new();
        for a in &seg.areas {
            let Area::Pv { pv, pe } = a else {
                return Err(ActivateError::Layout(format!(
                    "{}/{} is layered on another LV",
                    vg.name, lv.name
                )));
            };
            let (_, dev, pe_start) = pvs.iter().find(|(k, _, _)| k == pv).ok_or_else(|| {
                ActivateError::Layout(format!("PV {pv} of {} is missing", vg.name))
            })?;
            areas.push(format!(
                "{}:{} {}",
                dev.major,
                dev.minor,
                pe_start + *pe as u64 * es
            ));
        }
        let start = seg.start_extent as u64 * es;
        let len = seg.extent_count as u64 * es;
        if areas.len() == 1 {
            lines.push((start, len, "linear".to_string(), areas.remove(0)));
        } else {
            let stripe = seg.stripe_size.unwrap_or(128);
            lines.push((
                start,
                len,
                "striped".to_string(),
                format!("{} {stripe} {}", areas.len(), areas.join(" ")),
            ));
        }
    }
    Ok(lines)
}

/// The device-mapper control node: its absence means no driver.
const CONTROL: &str = "/dev/mapper/control";

/// Whether the running kernel has the device-mapper driver (registered as a
/// misc device, as lvm2 checks).
fn driver_in_kernel() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false)
}

/// lvm2's retry_deactivation: 25 tries, 200 ms apart.
const DEACTIVATE_RETRIES: u32 = 25;
const DEACTIVATE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// An open device: counted by us, or refused by the kernel with EBUSY.
fn is_transient_open(e: &ActivateError) -> bool {
    match e {
        ActivateError::Busy(..) => true,
        ActivateError::Dm {
            source: devicemapper::DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)),
            ..
        } => **errno == nix::errno::Errno::EBUSY,
        _ => false,
    }
}

fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// The process's device-mapper handle, opened and version-checked once:
/// libdm keeps one control fd per process too, and ioctls on it carry all
/// their state in their argument, so threads share it.
static SHARED: std::sync::Mutex<Option<std::sync::Arc<DM>>> = std::sync::Mutex::new(None);

pub struct Dm {
    dm: std::sync::Arc<DM>,
    /// The syscall lever off ([`Dm::open_fresh`]): `activate` checks for
    /// the device before `ensure_made` checks again, as it once did.
    per_call: bool,
}

fn dm_err<'a>(
    op: &'static str,
    name: &'a str,
) -> impl FnOnce(devicemapper::DmError) -> ActivateError + 'a {
    move |source| ActivateError::Dm {
        op,
        name: name.to_string(),
        source,
    }
}

impl Dm {
    /// Opens device-mapper. Only a kernel without the driver (no
    /// `device-mapper` in /proc/misc) or without its control node means
    /// there is no driver; any other failure is a device-mapper that does
    /// not work.
    /// The handle is the process's shared one once a first open worked;
    /// a failed open is not remembered, so the next call tries again.
    pub fn open() -> Result<Dm> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dm) = &*shared {
            return Ok(Dm {
                dm: dm.clone(),
                per_call: false,
            });
        }
        let dm = Dm::open_fresh()?;
        *shared = Some(dm.dm.clone());
        Ok(Dm {
            per_call: false,
            ..dm
        })
    }

    /// A handle of its own: a control-node open and a DM_VERSION now, the
    /// cost every change paid before the handle was shared
    /// (`Host::dm_per_call`, for the benchmark of the syscall lever).
    pub fn open_fresh() -> Result<Dm> {
        // Opening the control node proves nothing (any character device
        // opens): ask the driver its version, so a node that is not dm's
        // control, or a driver that fails, is found here and not mid-change.
        DM::new()
            .and_then(|dm| {
                dm.version().map(|_| Dm {
                    dm: std::sync::Arc::new(dm),
                    per_call: true,
                })
            })
            .map_err(|e| {
                if !driver_in_kernel() {
                    ActivateError::NoDriver("the kernel has no device-mapper driver".into())
                } else if !Path::new(CONTROL).exists() {
                    ActivateError::NoDriver(format!("no {CONTROL}"))
                } else {
                    ActivateError::Unusable(e.to_string())
                }
            })
    }

    /// Device-mapper for `host`'s commands: None only when the caller asked
    /// for metadata-only changes (`--driverloaded n`); otherwise a driver
    /// that is missing or failing is an error, never a silent skip that
    /// would commit metadata while a table still maps the extents.
    pub fn for_host(host: &crate::lvm::host::Host) -> Result<Option<Dm>> {
        if host.driver_loaded && host.dm_per_call {
            Dm::open_fresh().map(Some)
        } else if host.driver_loaded {
            Dm::open().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Info of the device with this dm uuid, if it exists.
    pub fn info(&self, uuid: &str) -> Option<DeviceInfo> {
        let u = DmUuid::new(uuid).ok()?;
        self.dm.device_info(&DevId::Uuid(u)).ok()
    }

    pub fn is_active(&self, vg: &Vg, lv: &Lv) -> bool {
        self.info(&dm_uuid(vg, lv, None)).is_some()
    }

    /// Creates, loads and resumes the LV's device; `AlreadyThere` if a device
    /// with its uuid exists. A half-made device is removed again on error.
    pub fn activate(&self, vg: &Vg, lv: &Lv, table: &[TableLine]) -> Result<Action> {
        if self.per_call && self.info(&dm_uuid(vg, lv, None)).is_some() {
            return Ok(Action::AlreadyThere);
        }
        self.ensure_made(vg, lv, None, None, table, false)
            .map(|(_, action)| action)
    }

    /// Loads a new table into an active LV (resize): load, suspend, resume.
    pub fn reload(&self, vg: &Vg, lv: &Lv, table: &[TableLine]) -> Result<Action> {
        let uuid = dm_uuid(vg, lv, None);
        let Some(info) = self.info(&uuid) else {
            return Ok(Action::AlreadyThere);
        };
        let name = info.name().map(|n| n.to_string()).unwrap_or_default();
        let u = DmUuid::new(&uuid).map_err(dm_err("uuid", &name))?;
        let id = DevId::Uuid(u);
        self.dm
            .table_load(&id, table, DmOptions::default())
            .map_err(dm_err("table load", &name))?;
        self.dm
            .device_suspend(&id, DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
            .map_err(dm_err("suspend", &name))?;
        self.dm
            .device_suspend(&id, DmOptions::default())
            .map_err(dm_err("resume", &name))?;
        Ok(Action::Done)
    }

    /// Removes the LV's device (found by uuid, whoever made it) and its
    /// nodes; see [`Dm::remove_waiting`] for an open device.
    pub fn deactivate(&self, vg: &Vg, lv: &Lv) -> Result<Action> {
        let label = format!("{}/{}", vg.name, lv.name);
        match self.remove_waiting(&dm_uuid(vg, lv, None), &label)? {
            None => Ok(Action::AlreadyThere),
            Some(name) => {
                if !udev_running() {
                    remove_nodes(vg, lv, &name)?;
                }
                Ok(Action::Done)
            }
        }
    }

    /// Waits, as [`Self::remove_waiting`] does, until the device with
    /// `uuid` is closed (or gone), without removing it: a caller about to
    /// take a VG's locks waits here first, so that a volume still mounted
    /// by a departing pod holds up only its own removal, not the VG's
    /// other changes. Still open after the wait: `Busy` with the count.
    pub fn wait_closed(&self, uuid: &str, label: &str) -> Result<()> {
        let mut tries = 0;
        loop {
            let open = match self.info(uuid) {
                Some(info) => info.open_count(),
                None => return Ok(()),
            };
            if open <= 0 {
                return Ok(());
            }
            if tries >= DEACTIVATE_RETRIES {
                return Err(ActivateError::Busy(label.to_string(), open));
            }
            tries += 1;
            std::thread::sleep(DEACTIVATE_PAUSE);
        }
    }

    /// Removes the device with `uuid` and returns its name (None: there was
    /// none). A device that is open is waited for a little, as lvm2 does
    /// (`activation/retry_deactivation`): udev's blkid or a scanner holds a
    /// new device briefly. Still open after that: `Busy` with the count.
    pub(crate) fn remove_waiting(&self, uuid: &str, label: &str) -> Result<Option<String>> {
        let mut tries = 0;
        loop {
            let Some(info) = self.info(uuid) else {
                return Ok(None);
            };
            let name = info.name().map(|n| n.to_string()).unwrap_or_default();
            let removed = if info.open_count() > 0 {
                Err(ActivateError::Busy(label.to_string(), info.open_count()))
            } else {
                let u = DmUuid::new(uuid).map_err(dm_err("uuid", &name))?;
                self.dm
                    .device_remove(&DevId::Uuid(u), DmOptions::default())
                    .map_err(dm_err("remove", &name))
            };
            match removed {
                Ok(_) => return Ok(Some(name)),
                // Also opened between the check and the remove: the kernel says EBUSY.
                Err(e) if tries < DEACTIVATE_RETRIES && is_transient_open(&e) => {
                    tries += 1;
                    std::thread::sleep(DEACTIVATE_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `(start, len, type, params)` of the live table, for comparisons.
    pub fn table(&self, uuid: &str) -> Result<Vec<TableLine>> {
        let u = DmUuid::new(uuid).map_err(dm_err("uuid", uuid))?;
        self.dm
            .table_status(
                &DevId::Uuid(u),
                DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
            )
            .map(|(_, t)| t)
            .map_err(dm_err("table", uuid))
    }
}

/// Whether a device-mapper ioctl failed with `want`.
fn failed_with(e: &ActivateError, want: nix::errno::Errno) -> bool {
    match e {
        ActivateError::Dm {
            source: devicemapper::DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)),
            ..
        } => **errno == want,
        _ => false,
    }
}

fn is_eexist(e: &ActivateError) -> bool {
    failed_with(e, nix::errno::Errno::EEXIST)
}

pub fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

fn create_nodes(vg: &Vg, lv: &Lv, name: &str, dev: Device, link: bool) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let node = mapper_path(name);
    let err = |what: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |e: nix::Error| ActivateError::Node {
            what,
            path,
            source: e.into(),
        }
    };
    std::fs::create_dir_all("/dev/mapper").map_err(|source| ActivateError::Node {
        what: "mkdir",
        path: "/dev/mapper".into(),
        source,
    })?;
    let _ = std::fs::remove_file(&node);
    mknod(
        &node,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(dev.major as u64, dev.minor as u64),
    )
    .map_err(err("mknod", &node))?;
    if link {
        let dir = Path::new("/dev").join(&vg.name);
        std::fs::create_dir_all(&dir).map_err(|source| ActivateError::Node {
            what: "mkdir",
            path: dir.display().to_string(),
            source,
        })?;
        let link = dir.join(&lv.name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&node, &link).map_err(|source| ActivateError::Node {
            what: "symlink",
            path: link.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

fn remove_nodes(vg: &Vg, lv: &Lv, name: &str) -> Result<()> {
    let _ = std::fs::remove_file(mapper_path(name));
    let dir = Path::new("/dev").join(&vg.name);
    let _ = std::fs::remove_file(dir.join(&lv.name));
    // Only removes the directory when it is empty, like libdm.
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// Zeroes the first 4 KiB of a new LV, as lvm2 does by default.
pub fn zero_start(name: &str) -> Result<()> {
    use crate::lvm::disk::{BlockDisk, Disk};
    let p = mapper_path(name);
    let node = |source| ActivateError::Node {
        what: "zeroing",
        path: p.display().to_string(),
        source,
    };
    let mut d = BlockDisk::open(&p, true).map_err(node)?;
    let n = d.size().min(4096) as usize;
    d.write_at(0, &vec![0u8; n]).map_err(node)?;
    d.flush().map_err(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_lvm() {
        assert_eq!(dm_name("vgx", "lv-one", None), "vgx-lv--one");
        assert_eq!(
            dm_name("my-vg", "pool0", Some("tpool")),
            "my--vg-pool0-tpool"
        );
        assert_eq!(
            dm_name("my-vg", "pool0", Some("_tdata")),
            "my--vg-pool0_tdata"
        );
    }
}
