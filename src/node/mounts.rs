//! Filesystems and mounts: what makes a volume usable at a target path (a
//! mounted filesystem, or the block device bound there), grows it online,
//! and reports its usage and health.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::engine::NodeEngine;
use super::volume::{Volume, VolumeError};
use crate::lvm::activate::{dm_name, Dm};

/// How a volume is to appear at its target.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The block device itself, bind-mounted onto a file.
    pub block: bool,
    /// For a filesystem volume: made when the device has none (default ext4).
    pub fs_type: String,
    pub mount_flags: Vec<String>,
    pub readonly: bool,
}

/// Space and inodes of a mounted volume, or the size of a block volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    Filesystem {
        bytes_total: u64,
        bytes_used: u64,
        bytes_available: u64,
        inodes_total: u64,
        inodes_used: u64,
        inodes_available: u64,
    },
    Block {
        bytes_total: u64,
    },
}

/// What `NodeGetVolumeStats` reports: usage, and why the volume is not
/// healthy (`None` when it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub usage: Usage,
    pub trouble: Option<String>,
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
        .map_err(|e| VolumeError::Filesystem(format!("running {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(VolumeError::Filesystem(format!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn io(e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Filesystem(e.to_string())
}

fn find(engine: &NodeEngine, id: &str) -> Result<Volume, VolumeError> {
    engine
        .find(id)?
        .ok_or_else(|| VolumeError::NotFound(id.to_string()))
}

/// Makes volume `id` usable at `target`; publishing again is a no-op.
pub fn publish(
    engine: &NodeEngine,
    id: &str,
    target: &Path,
    how: &Publish,
) -> Result<(), VolumeError> {
    let v = find(engine, id)?;
    let dev = engine.ensure_active(&v)?;
    if is_mounted(target) {
        return Ok(());
    }
    let ro = if how.readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if how.block {
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
        if how.readonly {
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
            let fs = if how.fs_type.is_empty() {
                "ext4"
            } else {
                how.fs_type.as_str()
            };
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
    let data = how.mount_flags.join(",");
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

/// Undoes [`publish`]: unmounts `target` and removes it; a target that is
/// already gone is fine.
pub fn unpublish(target: &Path) -> Result<(), VolumeError> {
    if is_mounted(target) {
        umount2(target, MntFlags::empty()).map_err(io)?;
    }
    if target.is_dir() {
        std::fs::remove_dir(target).map_err(io)?;
    } else if target.exists() {
        std::fs::remove_file(target).map_err(io)?;
    }
    Ok(())
}

/// Grows the filesystem of volume `id` mounted at `path` to fill its LV
/// (a block volume needs nothing); returns the volume's size.
pub fn grow(engine: &NodeEngine, id: &str, path: &Path) -> Result<u64, VolumeError> {
    let v = find(engine, id)?;
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
}

/// Usage and health of volume `id` published at `path`.
pub fn stats(engine: &NodeEngine, id: &str, path: &Path) -> Result<Stats, VolumeError> {
    if !path.exists() {
        return Err(VolumeError::PathMissing(path.display().to_string()));
    }
    let v = find(engine, id)?;
    let trouble = match Dm::open() {
        Ok(dm) => dm.trouble(&dm_name(&v.vg, &v.lv, None)),
        Err(e) => Some(e.to_string()),
    };
    let usage = if path.is_dir() {
        let st = nix::sys::statvfs::statvfs(path)
            .map_err(|e| io(format!("statvfs {}: {e}", path.display())))?;
        let f = st.fragment_size();
        Usage::Filesystem {
            bytes_total: st.blocks() * f,
            bytes_used: (st.blocks() - st.blocks_free()) * f,
            bytes_available: st.blocks_available() * f,
            inodes_total: st.files(),
            inodes_used: st.files() - st.files_free(),
            inodes_available: st.files_available(),
        }
    } else {
        Usage::Block {
            bytes_total: v.bytes,
        }
    };
    Ok(Stats { usage, trouble })
}
