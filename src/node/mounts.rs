//! Filesystems and mounts: what makes a volume usable at a target (a
//! mounted filesystem, or the block device bound onto a file), grows it
//! online, and reports its usage and health.
//!
//! Targets are checked and walked by [`super::target`]; mounts act on the
//! walked file descriptors. Mount options are split as mount(8) splits them:
//! VFS flags (`ro`, `nosuid`, `noatime`, …) go to mount(2) as flags, the
//! rest as filesystem data. xfs always gets `nouuid`, since snapshots and
//! clones share their origin's uuid. An existing signature is probed with
//! libblkid (`blkid -p`, as Kubernetes' mount-utils does): the expected
//! filesystem is mounted, anything else (LUKS, swap, a partition table,
//! another filesystem) is an error, and mkfs runs only on a device that
//! holds no signature at all, never forced.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::engine::NodeEngine;
use super::target::{fd_path, kind, Target};
use super::volume::{Volume, VolumeError};
pub use crate::lvm::activate::DeviceState;
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
}

/// The filesystems ferrolvm makes and mounts.
pub const FILESYSTEMS: &[&str] = &["ext4", "xfs", "btrfs"];

/// What libblkid finds on a device: nothing, a filesystem ferrolvm mounts,
/// or something else (named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    None,
    Filesystem(String),
    Other(String),
}

/// Parses `blkid -p -o export` output.
fn signature_of(export: &str) -> Signature {
    let field = |key: &str| {
        export
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    if let Some(pt) = field("PTTYPE") {
        return Signature::Other(format!("a {pt} partition table"));
    }
    match field("TYPE") {
        Some(t) if FILESYSTEMS.contains(&t.as_str()) => Signature::Filesystem(t),
        Some(t) => Signature::Other(t),
        None => Signature::None,
    }
}

/// Probes `dev` with libblkid (`blkid -p`: the superblocks themselves, no
/// cache).
pub fn probe(dev: &Path) -> Result<Signature, VolumeError> {
    let out = std::process::Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| VolumeError::Filesystem(format!("running blkid: {e}")))?;
    match out.status.code() {
        Some(0) => Ok(signature_of(&String::from_utf8_lossy(&out.stdout))),
        // blkid: 2 = nothing found.
        Some(2) => Ok(Signature::None),
        _ => Err(VolumeError::Filesystem(format!(
            "blkid -p {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Splits mount options as mount(8) does: VFS flags, and filesystem data.
/// Options that change what kind of mount this is are refused.
pub fn split_options(options: &[String]) -> Result<(MsFlags, Vec<String>), VolumeError> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        let (set, clear) = match opt {
            "" | "defaults" | "rw" | "async" | "suid" | "dev" | "exec" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (
                MsFlags::MS_NOATIME,
                MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME,
            ),
            "relatime" => (
                MsFlags::MS_RELATIME,
                MsFlags::MS_NOATIME | MsFlags::MS_STRICTATIME,
            ),
            "strictatime" => (
                MsFlags::MS_STRICTATIME,
                MsFlags::MS_NOATIME | MsFlags::MS_RELATIME,
            ),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "bind" | "rbind" | "remount" | "move" | "shared" | "private" | "slave"
            | "unbindable" => {
                return Err(VolumeError::Invalid(format!(
                    "mount option {opt:?} is not allowed for a volume"
                )))
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags = (flags - clear) | set;
    }
    Ok((flags, data))
}

fn run(cmd: &str, args: &[&str]) -> Result<(), VolumeError> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
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

/// The device number of a device node.
fn rdev(dev: &Path) -> Result<u64, VolumeError> {
    std::fs::metadata(dev)
        .map(|m| m.rdev())
        .map_err(|e| io(format!("{}: {e}", dev.display())))
}

/// Whether the directory `st` (reached at `target`) is the root of a mount
/// of the device `rdev`: by its st_dev, or, for filesystems that report an
/// anonymous st_dev (btrfs), by the mount table's source.
fn mounted_from(st: &FileStat, target: &Path, rdev: u64) -> bool {
    if st.st_dev == rdev {
        return true;
    }
    let Ok(real) = std::fs::canonicalize(target) else {
        return false;
    };
    let want = real.to_string_lossy().replace(' ', "\\040");
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let source = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 2));
        fields.get(4) == Some(&want.as_str())
            && source.is_some_and(|s| std::fs::metadata(s).is_ok_and(|m| m.rdev() == rdev))
    })
}

/// Makes volume `id` usable at `target`; publishing again is a no-op. A
/// target that holds something else (another device's mount, a non-empty
/// file) is refused and left alone.
pub fn publish(
    engine: &NodeEngine,
    id: &str,
    target: &Target,
    how: &Publish,
) -> Result<(), VolumeError> {
    let v = find(engine, id)?;
    // One publish or unpublish of a volume at a time: mkfs must not race.
    let lock = engine.volume_lock(id);
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    let dev = engine.ensure_active(&v)?;
    let dev_rdev = rdev(&dev)?;
    let parent = target.parent(true)?.expect("made when missing");
    let refuse = |why: &str| {
        Err(VolumeError::TargetOccupied(format!(
            "{}: {why}; left as it is",
            target.path.display()
        )))
    };
    let (mut flags, mut data) = split_options(&how.mount_flags)?;
    if how.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if how.block {
        let fd = match target.open(&parent)? {
            Some((_, st)) if kind(&st) == SFlag::S_IFBLK && st.st_rdev == dev_rdev => return Ok(()),
            Some((_, st)) if kind(&st) == SFlag::S_IFBLK => {
                return refuse("another device is bound there")
            }
            Some((fd, st)) if kind(&st) == SFlag::S_IFREG && st.st_size == 0 => fd,
            Some(_) => return refuse("it is not an empty file"),
            None => {
                let made = openat(
                    &parent,
                    target.name(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_WRONLY
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o640),
                );
                drop(made.map_err(|e| io(format!("{}: {e}", target.path.display())))?);
                target.open(&parent)?.expect("just made").0
            }
        };
        mount(
            Some(&dev),
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io)?;
        let vfs = flags & !MsFlags::MS_BIND;
        if !vfs.is_empty() {
            // The bind mount's own flags: reach the new mount through a fresh walk.
            let (mounted, _) = target.open(&parent)?.expect("just mounted");
            mount(
                None::<&str>,
                &fd_path(&mounted),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | vfs,
                None::<&str>,
            )
            .map_err(io)?;
        }
        return Ok(());
    }
    let fd = match target.open(&parent)? {
        Some((_, st))
            if kind(&st) == SFlag::S_IFDIR && mounted_from(&st, &target.path, dev_rdev) =>
        {
            return Ok(())
        }
        Some((fd, st)) if kind(&st) == SFlag::S_IFDIR => {
            let pst = nix::sys::stat::fstat(&parent).map_err(io)?;
            if st.st_dev != pst.st_dev {
                return refuse("another filesystem is mounted there");
            }
            fd
        }
        Some(_) => return refuse("it is not a directory"),
        None => {
            match mkdirat(&parent, target.name(), Mode::from_bits_truncate(0o750)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(format!("{}: {e}", target.path.display()))),
            }
            target.open(&parent)?.expect("just made").0
        }
    };
    let wanted = if how.fs_type.is_empty() {
        None
    } else {
        Some(how.fs_type.as_str())
    };
    if let Some(w) = wanted.filter(|w| !FILESYSTEMS.contains(w)) {
        return Err(VolumeError::Invalid(format!(
            "filesystem {w} is not supported (ext4, xfs, btrfs are)"
        )));
    }
    let fs = match probe(&dev)? {
        Signature::Filesystem(found) if wanted.is_none_or(|w| w == found) => found,
        Signature::Filesystem(found) => {
            return Err(VolumeError::Invalid(format!(
                "volume {id} holds {found}, not the requested {}",
                wanted.unwrap_or_default()
            )))
        }
        Signature::Other(what) => {
            return Err(VolumeError::Invalid(format!(
            "volume {id} holds {what}: ferrolvm neither mounts it nor makes a filesystem over it"
        )))
        }
        Signature::None => {
            let fs = wanted.unwrap_or("ext4");
            let d = dev.to_string_lossy().to_string();
            match fs {
                "ext4" => run("mkfs.ext4", &["-q", &d])?,
                "xfs" => run("mkfs.xfs", &["-q", &d])?,
                _ => run("mkfs.btrfs", &["-q", &d])?,
            }
            fs.to_string()
        }
    };
    if fs == "xfs" && !data.iter().any(|o| o == "nouuid") {
        data.push("nouuid".into());
    }
    let data = data.join(",");
    mount(
        Some(&dev),
        &fd_path(&fd),
        Some(fs.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(io)?;
    Ok(())
}

/// Undoes [`publish`]: unmounts `target` only when volume `id` is what is
/// mounted there, then removes it; an empty leftover (directory, or the
/// file of a block target) is removed too, and a target already gone is
/// fine. Anything else there is refused and left alone.
pub fn unpublish(engine: &NodeEngine, id: &str, target: &Target) -> Result<(), VolumeError> {
    let lock = engine.volume_lock(id);
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    let Some(parent) = target.parent(false)? else {
        return Ok(());
    };
    let Some((fd, st)) = target.open(&parent)? else {
        return Ok(());
    };
    let refuse = |why: &str| {
        Err(VolumeError::TargetOccupied(format!(
            "{}: {why}; left as it is",
            target.path.display()
        )))
    };
    let pst = nix::sys::stat::fstat(&parent).map_err(io)?;
    let ours = || -> Result<Option<u64>, VolumeError> {
        match engine.find(id)? {
            Some(v) => {
                let dev = crate::lvm::activate::mapper_path(&dm_name(&v.vg, &v.lv, None));
                Ok(rdev(&dev).ok())
            }
            None => Ok(None),
        }
    };
    let mounted = match kind(&st) {
        SFlag::S_IFBLK => {
            if ours()? != Some(st.st_rdev) {
                return refuse("a device that is not this volume is bound there");
            }
            true
        }
        SFlag::S_IFDIR if st.st_dev != pst.st_dev => {
            if !ours()?.is_some_and(|r| mounted_from(&st, &target.path, r)) {
                return refuse("a filesystem that is not this volume is mounted there");
            }
            true
        }
        SFlag::S_IFDIR | SFlag::S_IFREG => false,
        _ => return refuse("it is neither a directory nor a file ferrolvm made"),
    };
    // Our own descriptor would keep the mount busy: let go of it, then
    // unmount by the checked path, never following a symlink put in its place.
    drop(fd);
    if mounted {
        umount2(&target.path, MntFlags::UMOUNT_NOFOLLOW).map_err(io)?;
    }
    let Some((_, st)) = target.open(&parent)? else {
        return Ok(());
    };
    let removed = match kind(&st) {
        SFlag::S_IFDIR => unlinkat(&parent, target.name(), UnlinkatFlags::RemoveDir),
        SFlag::S_IFREG if st.st_size == 0 => {
            unlinkat(&parent, target.name(), UnlinkatFlags::NoRemoveDir)
        }
        _ => return refuse("it is not empty"),
    };
    match removed {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::ENOTEMPTY) => refuse("it is not empty"),
        Err(e) => Err(io(format!("{}: {e}", target.path.display()))),
    }
}

/// Grows the filesystem of volume `id` mounted at `path` to fill its LV
/// (a block volume needs nothing); returns the volume's size.
pub fn grow(engine: &NodeEngine, id: &str, path: &Path) -> Result<u64, VolumeError> {
    let v = find(engine, id)?;
    let dev = engine.ensure_active(&v)?;
    if path.is_dir() {
        let d = dev.to_string_lossy().to_string();
        let p = path.to_string_lossy().to_string();
        match probe(&dev)? {
            Signature::Filesystem(f) if f == "ext4" => run("resize2fs", &[&d])?,
            Signature::Filesystem(f) if f == "xfs" => run("xfs_growfs", &[&p])?,
            Signature::Filesystem(_) => run("btrfs", &["filesystem", "resize", "max", &p])?,
            _ => return Err(io("no filesystem to grow")),
        }
    }
    Ok(v.bytes)
}

/// Why volume `id`'s device is unusable (missing, suspended, failed), or
/// None when it is healthy.
pub fn health(engine: &NodeEngine, id: &str) -> Result<Option<String>, VolumeError> {
    let v = find(engine, id)?;
    Ok(match Dm::open() {
        Ok(dm) => dm.trouble(&dm_name(&v.vg, &v.lv, None)),
        Err(e) => Some(e.to_string()),
    })
}

/// A volume's device as lvm2 reports it: its `/dev/<vg>/<lv>` link, the
/// device number (0:0 when inactive) and device-mapper's view of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: std::path::PathBuf,
    pub major: u32,
    pub minor: u32,
    pub state: DeviceState,
}

/// The device of volume `v`; device-mapper unusable reads as missing.
pub fn device(v: &Volume) -> Device {
    let name = dm_name(&v.vg, &v.lv, None);
    let state = Dm::open().map_or(DeviceState::Missing, |dm| dm.state(&name));
    let rdev = std::fs::metadata(crate::lvm::activate::mapper_path(&name))
        .map(|m| m.rdev())
        .unwrap_or(0);
    Device {
        path: Path::new("/dev").join(&v.vg).join(&v.lv),
        major: nix::sys::stat::major(rdev) as u32,
        minor: nix::sys::stat::minor(rdev) as u32,
        state,
    }
}

/// Usage of volume `id` published at `path`.
pub fn stats(engine: &NodeEngine, id: &str, path: &Path) -> Result<Stats, VolumeError> {
    if !path.exists() {
        return Err(VolumeError::PathMissing(path.display().to_string()));
    }
    let v = find(engine, id)?;
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
    Ok(Stats { usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vfs_flags_are_flags_and_the_rest_is_data() {
        let (flags, data) = split_options(&opts(&[
            "ro,noatime",
            "nosuid",
            "discard",
            "nodev",
            "noexec",
            "data=ordered",
        ]))
        .unwrap();
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
        );
        assert_eq!(data, vec!["discard", "data=ordered"]);
        let (flags, data) = split_options(&opts(&["noatime", "relatime", "defaults"])).unwrap();
        assert_eq!(flags, MsFlags::MS_RELATIME, "the last atime option wins");
        assert!(data.is_empty());
        assert!(matches!(
            split_options(&opts(&["bind"])),
            Err(VolumeError::Invalid(_))
        ));
        assert!(matches!(
            split_options(&opts(&["rw,remount"])),
            Err(VolumeError::Invalid(_))
        ));
    }

    #[test]
    fn signatures_from_blkid_export() {
        assert_eq!(
            signature_of("DEVNAME=/dev/x\nUUID=1\nTYPE=xfs\n"),
            Signature::Filesystem("xfs".into())
        );
        assert_eq!(
            signature_of("TYPE=crypto_LUKS\n"),
            Signature::Other("crypto_LUKS".into())
        );
        assert_eq!(signature_of("TYPE=swap\n"), Signature::Other("swap".into()));
        assert_eq!(
            signature_of("PTUUID=a\nPTTYPE=gpt\n"),
            Signature::Other("a gpt partition table".into())
        );
        assert_eq!(signature_of(""), Signature::None);
    }
}
