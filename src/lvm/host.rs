//! Host settings ferrolvm shares with lvm2: lvm.conf's locking_dir and
//! devices file, the device list, hints. Read with the metadata crate's
//! config parser, since lvm.conf uses the same syntax.

use std::path::{Path, PathBuf};

use ferrolvm_metadata::config::{self, Node, Value};

use crate::lvm::filter::{self, DeviceFilter};

#[derive(Debug, Clone)]
pub struct Host {
    pub lock_dir: PathBuf,
    /// `Some` restricts scanning to these devices (`--devices`, or the devices file).
    pub devices: Option<Vec<PathBuf>>,
    /// `/run/lvm`, where hints live.
    pub run_dir: PathBuf,
    pub hostname: String,
    pub uname: String,
    /// The lvm2 devices file, when lvm.conf enables it, it exists, and no
    /// `--devices` list overrides it: PVs ferrolvm creates must be added to it.
    pub devices_file: Option<PathBuf>,
    /// lvm.conf's `global_filter` and `filter`, or why they cannot be used
    /// (a bad pattern: then no device is scanned, and commands refuse to run).
    pub filter: Result<DeviceFilter, String>,
    /// How long to wait for an lvm2 lock: None (the CLI, as lvm2) waits as
    /// long as it takes; the node bounds it and answers Aborted after.
    pub lock_wait: Option<std::time::Duration>,
    /// Whether to use device-mapper (lvm2's `--driverloaded`): false asks
    /// for metadata-only changes, which is only honoured when asked.
    pub driver_loaded: bool,
    /// Reread every device after each commit instead of updating the scan
    /// from what the commit wrote. Off by default; the benchmarks turn it
    /// on to measure what the reread cost (README, "The single-op path").
    pub reread_after_commit: bool,
    /// Open device-mapper afresh for every change (a control-node open and
    /// a DM_VERSION each) and check a device's absence twice before
    /// creating it, as ferrolvm did before the syscall lever. Off by
    /// default; the benchmarks turn it on to measure the lever alone.
    pub dm_per_call: bool,
}

fn lookup<'a>(nodes: &'a [Node], path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    // lvm.conf keeps the last of duplicate settings.
    let node = nodes.iter().rev().find(|n| n.key == *first)?;
    if rest.is_empty() {
        node.as_value()
    } else {
        lookup(node.children()?, rest)
    }
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => {
            let s = |x: &std::ffi::OsStr| x.to_string_lossy().into_owned();
            let node = s(u.nodename());
            let full = format!(
                "{} {} {} {} {}",
                s(u.sysname()),
                node,
                s(u.release()),
                s(u.version()),
                s(u.machine())
            );
            (node, full)
        }
        Err(_) => ("unknown".into(), "unknown".into()),
    }
}

impl Host {
    /// Reads `$LVM_SYSTEM_DIR/lvm.conf` (default `/etc/lvm`). `devices` is the
    /// `--devices` list, which overrides the devices file as in lvm2.
    pub fn load(devices: Option<Vec<PathBuf>>) -> Host {
        let sysdir = std::env::var_os("LVM_SYSTEM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/etc/lvm".into());
        let conf = std::fs::read(sysdir.join("lvm.conf"))
            .ok()
            .filter(|b| sets_anything_we_read(b))
            .and_then(|b| config::parse(&b).ok())
            .unwrap_or_default();
        let lock_dir = match lookup(&conf, &["global", "locking_dir"]) {
            Some(Value::Str(s)) => PathBuf::from(s),
            _ => PathBuf::from("/run/lock/lvm"),
        };
        let use_devicesfile = matches!(
            lookup(&conf, &["devices", "use_devicesfile"]),
            Some(Value::Int(1))
        );
        let devicesfile = match lookup(&conf, &["devices", "devicesfile"]) {
            Some(Value::Str(s)) => s.clone(),
            _ => "system.devices".into(),
        };
        let df_path = sysdir.join("devices").join(devicesfile);
        let devices_file =
            (devices.is_none() && use_devicesfile && df_path.exists()).then_some(df_path);
        let devices = devices.or_else(|| devices_file.as_deref().and_then(read_devices_file));
        let patterns = |key: &str| -> Result<Vec<String>, String> {
            match lookup(&conf, &["devices", key]) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => Ok(s.clone()),
                        other => Err(format!(
                            "lvm.conf devices/{key}: {other:?} is not a pattern string"
                        )),
                    })
                    .collect(),
                Some(Value::Str(s)) => Ok(vec![s.clone()]),
                Some(other) => Err(format!(
                    "lvm.conf devices/{key}: {other:?} is not a list of patterns"
                )),
            }
        };
        let filter = patterns("global_filter")
            .and_then(|g| patterns("filter").map(|f| (g, f)))
            .and_then(|(g, f)| DeviceFilter::new(&g, &f));
        let (hostname, uname) = uname();
        Host {
            lock_dir,
            devices,
            run_dir: "/run/lvm".into(),
            hostname,
            uname,
            devices_file,
            filter,
            lock_wait: None,
            driver_loaded: true,
            reread_after_commit: false,
            dm_per_call: false,
        }
    }

    /// Devices to scan: the configured list, or every block device; never
    /// an LV, and only what lvm.conf's filters accept.
    pub fn candidate_devices(&self) -> Vec<PathBuf> {
        let filter = match &self.filter {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "lvm.conf's device filter is unusable: scanning no device");
                return Vec::new();
            }
        };
        self.listed_devices()
            .into_iter()
            // Aliases cost a walk of /dev: only gather them when a pattern needs them.
            .filter(|d| {
                !filter::is_lv(d) && (filter.is_empty() || filter.accepts(&filter::names_of(d)))
            })
            .collect()
    }

    /// The configured list, or every block device, before filtering.
    fn listed_devices(&self) -> Vec<PathBuf> {
        if let Some(d) = &self.devices {
            return d.clone();
        }
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/class/block") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let size: u64 = std::fs::read_to_string(e.path().join("size"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                if size == 0
                    || name.starts_with("ram")
                    || name.starts_with("zram")
                    || name.starts_with("sr")
                {
                    continue;
                }
                let dev = Path::new("/dev").join(&name);
                if dev.exists() {
                    out.push(dev);
                }
            }
        }
        out.sort();
        out
    }

    /// Tells lvm2 to rescan all devices on its next command, as lvm2 does
    /// after any change to which devices are PVs or what VGs are called.
    pub fn invalidate_hints(&self) {
        if self.run_dir.is_dir() {
            let _ = std::fs::write(self.run_dir.join("newhints"), b"");
        }
    }
}

impl Host {
    /// Adds new PVs to the devices file as lvm2 does: under the
    /// `D_<file>` lock, version counter bumped, `# HASH=` recomputed when the
    /// file carries one, written to a temporary file, synced and renamed.
    pub fn add_to_devices_file(
        &self,
        pvs: &[(PathBuf, ferrolvm_metadata::Uuid)],
    ) -> std::io::Result<()> {
        let Some(path) = &self.devices_file else {
            return Ok(());
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _lock = crate::lvm::lock::LvmLock::named(
            &self.lock_dir,
            &format!("D_{name}"),
            crate::lvm::lock::Mode::Exclusive,
            self.lock_wait,
        )?;
        let old = std::fs::read_to_string(path)?;
        let text = devices_file_with(&old, pvs);
        let tmp = path.with_extension("tmp-ferrolvm");
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The devices file `old` with entries for `pvs` (replacing any entry for
/// the same device), its VERSION counter bumped and its HASH, if any, updated.
pub fn devices_file_with(old: &str, pvs: &[(PathBuf, ferrolvm_metadata::Uuid)]) -> String {
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| {
            !pvs.iter().any(|(dev, _)| {
                l.split_whitespace()
                    .any(|w| w == format!("DEVNAME={}", dev.display()))
            })
        })
        .map(|l| match l.strip_prefix("VERSION=") {
            Some(v) => {
                let (head, n) = v.rsplit_once('.').unwrap_or(("1.1", "0"));
                format!("VERSION={head}.{}", n.parse::<u64>().unwrap_or(0) + 1)
            }
            None => l.to_string(),
        })
        .collect();
    for (dev, id) in pvs {
        let d = dev.display();
        lines.push(format!(
            "IDTYPE=devname IDNAME={d} DEVNAME={d} PVID={}",
            id.raw_str()
        ));
    }
    if let Some(i) = lines.iter().position(|l| l.starts_with("# HASH=")) {
        let mut crc = ferrolvm_metadata::crc::LvmCrc::new();
        for l in lines
            .iter()
            .filter(|l| !l.starts_with('#') && !l.starts_with("SYSTEMID"))
        {
            crc.update(l.as_bytes());
            crc.update(b"\n");
        }
        lines[i] = format!("# HASH={}", crc.finish());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Distribution lvm.conf files are ~100 KiB of comments; parse only when a
/// setting ferrolvm honours appears outside a comment.
fn sets_anything_we_read(conf: &[u8]) -> bool {
    conf.split(|&c| c == b'\n').any(|line| {
        let line = line.trim_ascii_start();
        !line.starts_with(b"#")
            && [
                &b"locking_dir"[..],
                b"use_devicesfile",
                b"devicesfile",
                b"filter",
            ]
            .iter()
            .any(|k| line.windows(k.len()).any(|w| w == *k))
    })
}

/// `DEVNAME=` entries of an lvm2 devices file; `None` if it does not exist
/// (lvm2 then scans everything).
pub fn read_devices_file(path: &Path) -> Option<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).ok()?;
    let devs = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("DEVNAME="))
        })
        .filter(|d| *d != ".")
        .map(PathBuf::from)
        .collect();
    Some(devs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_file_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("system.devices");
        std::fs::write(&p, "# LVM uses devices listed in this file.\nVERSION=1.1.2\nIDTYPE=devname IDNAME=/dev/loop3 DEVNAME=/dev/loop3 PVID=abc\nIDTYPE=sys_wwid IDNAME=x DEVNAME=/dev/sdb PVID=.\n").unwrap();
        assert_eq!(
            read_devices_file(&p).unwrap(),
            vec![PathBuf::from("/dev/loop3"), PathBuf::from("/dev/sdb")]
        );
        assert!(read_devices_file(&dir.path().join("none")).is_none());
    }

    #[test]
    fn devices_file_gains_entries() {
        let id = ferrolvm_metadata::Uuid::parse("BFTh2D-6SId-S4OY-a1fq-Sh33-4Ed6-W3yQgy").unwrap();
        let old = "# LVM uses devices listed in this file.\nVERSION=1.1.7\nIDTYPE=devname IDNAME=/dev/sdb DEVNAME=/dev/sdb PVID=.\n";
        let new = devices_file_with(
            old,
            &[
                (PathBuf::from("/dev/sdc"), id),
                (PathBuf::from("/dev/sdb"), id),
            ],
        );
        assert_eq!(
            new,
            "# LVM uses devices listed in this file.\nVERSION=1.1.8\n\
             IDTYPE=devname IDNAME=/dev/sdc DEVNAME=/dev/sdc PVID=BFTh2D6SIdS4OYa1fqSh334Ed6W3yQgy\n\
             IDTYPE=devname IDNAME=/dev/sdb DEVNAME=/dev/sdb PVID=BFTh2D6SIdS4OYa1fqSh334Ed6W3yQgy\n"
        );
        let hashed = devices_file_with("# HASH=1\nVERSION=1.1.1\n", &[]);
        let mut crc = ferrolvm_metadata::crc::LvmCrc::new();
        crc.update(b"VERSION=1.1.2\n");
        assert_eq!(hashed, format!("# HASH={}\nVERSION=1.1.2\n", crc.finish()));
    }

    #[test]
    fn commented_settings_are_skipped() {
        assert!(!sets_anything_we_read(
            b"# locking_dir = \"/x\"\nglobal {\n\t# use_devicesfile = 1\n}\n"
        ));
        assert!(sets_anything_we_read(
            b"global {\n\tlocking_dir = \"/x\"\n}\n"
        ));
    }

    #[test]
    fn lvm_conf_last_value_wins() {
        let conf = config::parse(
            b"global {\nlocking_dir = \"/a\"\n}\nglobal {\nlocking_dir = \"/b\"\n}\n",
        )
        .unwrap();
        assert_eq!(
            lookup(&conf, &["global", "locking_dir"]),
            Some(&Value::Str("/b".into()))
        );
    }
}
