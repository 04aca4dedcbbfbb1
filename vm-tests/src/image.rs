//! Builds what the VM boots: a Debian kernel taken with `apt-get download`
//! and `dpkg -x` into a cache directory (the host's /boot is never touched),
//! and an initramfs holding busybox, the kernel modules device-mapper needs,
//! lvm2 and the filesystem tools with their shared libraries, and the
//! project's binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Cpio;

pub type Result<T> = std::result::Result<T, String>;

/// Modules loaded at boot, dependencies first (resolved from `depends=`).
/// crc32c_generic is requested through the crypto API, not `depends=`.
pub const MODULES: &[&str] = &[
    "crc32c_generic",
    "loop",
    "dm_mod",
    "dm_thin_pool",
    "dm_snapshot",
    "dm_flakey",
    "dm_zero",
    "ext4",
    "xfs",
    "btrfs",
    // The cluster VM's network (QEMU user networking, virtio-net); their
    // dependencies (virtio, virtio_ring, net_failover…) follow `depends=`.
    "virtio_pci",
    "virtio_net",
    // The cluster VM's pod networks (CNI bridge plugin).
    "bridge",
    "veth",
];

/// Host tools placed in the guest, with their libraries.
pub const TOOLS: &[&str] = &[
    "bash",
    "lvm",
    "dmsetup",
    "thin_check",
    "thin_dump",
    "pdata_tools",
    "losetup",
    "blkid",
    "mkfs.ext4",
    "mke2fs",
    "resize2fs",
    "e2fsck",
    // TopoLVM's node (the race's peer) asks it whether ext4 needs growing.
    "dumpe2fs",
    "mkfs.xfs",
    "xfs_growfs",
    "xfs_repair",
    "mkfs.btrfs",
    "btrfs",
    "blockdev",
    "wipefs",
];

/// Commands that are links to `lvm`.
const LVM_LINKS: &[&str] = &[
    "pvcreate", "pvs", "pvremove", "vgcreate", "vgs", "vgextend", "vgremove", "vgchange", "vgck",
    "lvcreate", "lvs", "lvremove", "lvextend", "lvresize", "lvrename", "lvchange",
];

const LVM_CONF: &str = "# No udev in the VM: libdm creates nodes itself.\nactivation {\n\tudev_sync = 0\n\tudev_rules = 0\n\tmonitoring = 0\n}\ndevices {\n\tobtain_device_list_from_udev = 0\n}\n";

pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel image and module tree, downloaded once into `cache`.
pub fn kernel(cache: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = cache.join("kernel");
    let find = || -> Option<(PathBuf, PathBuf)> {
        let boot = std::fs::read_dir(root.join("boot")).ok()?;
        let vmlinuz = boot.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
        let ver = vmlinuz
            .file_name()?
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        Some((vmlinuz, root.join("lib/modules").join(ver)))
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or("apt-cache knows no linux-image-amd64 (run apt-get update)")?
        .to_string();
    let dl = cache.join("deb");
    std::fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
    eprintln!("vm-tests: downloading {pkg}");
    run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(&dl))?;
    let deb = std::fs::read_dir(&dl)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download produced no .deb")?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    find().ok_or_else(|| "the kernel package has no vmlinuz".to_string())
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Module files for `wanted`, each after its dependencies.
pub fn modules(moddir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ko") {
                index.insert(
                    norm(&p.file_stem().unwrap_or_default().to_string_lossy()),
                    p,
                );
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let name = norm(name);
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let path = index
            .get(&name)
            .ok_or_else(|| format!("kernel module {name} not found (built in?)"))?;
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        if let Some(at) = bytes.windows(8).position(|w| w == b"depends=") {
            let rest = &bytes[at + 8..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
            for dep in String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
            {
                visit(dep, index, seen, order)?;
            }
        }
        order.push(path.clone());
        Ok(())
    }
    for w in wanted {
        visit(w, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

enum Entry {
    Dir,
    File {
        src: PathBuf,
        perm: u32,
        strip: bool,
    },
    Data {
        data: Vec<u8>,
        perm: u32,
    },
    Link(String),
}

/// The initramfs under construction, keyed by guest path.
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let mut t = Tree {
            entries: BTreeMap::new(),
        };
        // Debian's merged /usr.
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            t.entries
                .insert(format!("/{link}"), Entry::Link(target.into()));
        }
        for d in [
            "/usr/bin",
            "/usr/sbin",
            "/usr/lib",
            "/usr/lib64",
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/run",
            "/etc/lvm",
            "/bb",
            "/usr/lib/modules",
        ] {
            t.mkdir(d);
        }
        t
    }

    fn mkdir(&mut self, path: &str) {
        let mut p = PathBuf::new();
        for c in Path::new(path).components() {
            p.push(c);
            let s = p.to_string_lossy().replace("//", "/");
            if s != "/" && !self.entries.contains_key(&s) {
                self.entries.insert(s, Entry::Dir);
            }
        }
    }

    /// Guest path for a host path: resolves the merged-/usr links.
    fn guest(path: &Path) -> String {
        let s = path.to_string_lossy().to_string();
        for (top, usr) in [
            ("/bin/", "/usr/bin/"),
            ("/sbin/", "/usr/sbin/"),
            ("/lib/", "/usr/lib/"),
            ("/lib64/", "/usr/lib64/"),
        ] {
            if let Some(rest) = s.strip_prefix(top) {
                return format!("{usr}{rest}");
            }
        }
        s
    }

    pub fn add_data(&mut self, guest: &str, data: Vec<u8>, perm: u32) {
        if let Some(parent) = Path::new(guest).parent() {
            self.mkdir(&parent.to_string_lossy());
        }
        self.entries
            .insert(guest.to_string(), Entry::Data { data, perm });
    }

    pub fn add_link(&mut self, guest: &str, target: &str) {
        if let Some(parent) = Path::new(guest).parent() {
            self.mkdir(&parent.to_string_lossy());
        }
        self.entries
            .insert(guest.to_string(), Entry::Link(target.to_string()));
    }

    pub fn add_file(&mut self, guest: &str, src: &Path, perm: u32, strip: bool) {
        if let Some(parent) = Path::new(guest).parent() {
            self.mkdir(&parent.to_string_lossy());
        }
        self.entries.insert(
            guest.to_string(),
            Entry::File {
                src: src.to_path_buf(),
                perm,
                strip,
            },
        );
    }

    /// Every shared library `ldd` names for `host` (none for a static binary).
    fn add_libraries(&mut self, host: &Path) -> Result<()> {
        let out = Command::new("ldd")
            .arg(host)
            .output()
            .map_err(|e| e.to_string())?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|w| w.starts_with('/')),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                self.add_binary(Path::new(lib))?;
            }
        }
        Ok(())
    }

    /// A host binary at its own path, with every symlink on the way and
    /// every shared library `ldd` names.
    pub fn add_binary(&mut self, host: &Path) -> Result<()> {
        let guest = Self::guest(host);
        if self.entries.contains_key(&guest) {
            return Ok(());
        }
        let meta =
            std::fs::symlink_metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host).map_err(|e| e.to_string())?;
            self.add_link(&guest, &target.to_string_lossy());
            let abs = if target.is_absolute() {
                target
            } else {
                host.parent().unwrap_or(Path::new("/")).join(target)
            };
            return self.add_binary(&abs);
        }
        self.add_file(&guest, host, 0o755, false);
        self.add_libraries(host)
    }

    pub fn write(self, out: &Path) -> Result<()> {
        let f = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| e.to_string())?);
        let mut c = Cpio::new(f);
        let stripped = out.with_extension("strip");
        for (path, e) in self.entries {
            let r = match e {
                Entry::Dir => c.dir(&path),
                Entry::Link(t) => c.symlink(&path, &t),
                Entry::Data { data, perm } => c.file(&path, perm, &data),
                Entry::File { src, perm, strip } => {
                    let data = if strip {
                        // Debug info is dead weight in a guest that only runs tests.
                        run(Command::new("strip")
                            .arg("--strip-debug")
                            .arg("-o")
                            .arg(&stripped)
                            .arg(&src))?;
                        std::fs::read(&stripped)
                    } else {
                        std::fs::read(&src)
                    }
                    .map_err(|e| format!("{}: {e}", src.display()))?;
                    c.file(&path, perm, &data)
                }
            };
            r.map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_file(&stripped);
        c.finish().map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn which(name: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!(
        "{name} is not installed on the host (see .ci/run for the packages)"
    ))
}

/// The init script: mounts, loads modules, runs /payload.sh, reports its
/// exit code on the console, powers off. /tmp stays on the initramfs root
/// (already a writable tmpfs): binaries placed at their host paths may live
/// under /tmp, as in CI's clone.
fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/usr/bin/busybox sh\n/usr/bin/busybox --install -s /bb\nexport PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bb HOME=/tmp DM_DISABLE_UDEV=1 LVM_SUPPRESS_FD_WARNINGS=1\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\nmkdir -p /tmp && chmod 1777 /tmp\nmount -t tmpfs run /run\n\
         mkdir -p /run/lock/lvm /run/lvm /dev/mapper\n",
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /usr/lib/modules/{m} || echo 'vm-tests: insmod {m} failed'\n"
        ));
    }
    s.push_str("[ -c /dev/mapper/control ] || mknod /dev/mapper/control c 10 236\n");
    s.push_str("echo 'vm-tests: guest ready'\ncd /tmp\n/usr/bin/sh /payload.sh\nrc=$?\necho \"FERROLVM-VM-EXIT $rc\"\nsync\npoweroff -f\n");
    s
}

/// Everything the guest needs, plus `extra` (guest path, host path) binaries
/// of the project, `data` files (guest path, bytes, mode) and the payload
/// script.
pub fn initramfs(
    cache: &Path,
    moddir: &Path,
    extra: &[(String, PathBuf)],
    data: &[(String, Vec<u8>, u32)],
    payload: &str,
    out: &Path,
) -> Result<()> {
    let mut t = Tree::new();
    t.add_file("/usr/bin/busybox", &which("busybox")?, 0o755, false);
    for tool in TOOLS {
        t.add_binary(&which(tool)?)?;
    }
    // Scripts get a real shell: busybox's prefers its applets to PATH.
    t.add_link("/usr/bin/sh", "bash");
    for l in LVM_LINKS {
        t.add_link(&format!("/usr/sbin/{l}"), "lvm");
    }
    t.add_data("/etc/lvm/lvm.conf", LVM_CONF.as_bytes().to_vec(), 0o644);
    if Path::new("/etc/mke2fs.conf").exists() {
        t.add_file(
            "/etc/mke2fs.conf",
            Path::new("/etc/mke2fs.conf"),
            0o644,
            false,
        );
    }
    let mods = modules(moddir, MODULES)?;
    let mut names = Vec::new();
    for m in &mods {
        let name = m
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        t.add_file(&format!("/usr/lib/modules/{name}"), m, 0o644, false);
        names.push(name);
    }
    for (guest, host) in extra {
        t.add_file(guest, host, 0o755, true);
        t.add_libraries(host)?;
    }
    for (guest, bytes, perm) in data {
        t.add_data(guest, bytes.clone(), *perm);
    }
    t.add_data("/init", init_script(&names).into_bytes(), 0o755);
    t.add_data("/payload.sh", payload.as_bytes().to_vec(), 0o755);
    let _ = cache;
    t.write(out)
}
