//! Publish targets, checked and walked without trusting the tree below the
//! roots. A target must be an absolute, normalised path strictly under one
//! of the configured roots (kubelet's directory by default); every component
//! below the root is opened relative to its parent with `O_NOFOLLOW`, so a
//! symlink a tenant planted anywhere on the way is refused, never followed;
//! mounts and removals then act on those file descriptors
//! (`/proc/self/fd/N`), not on paths that could change in between.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode, SFlag};

use super::volume::VolumeError;

/// A checked target: `root` joined with `below` (at least one component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    root: PathBuf,
    below: Vec<OsString>,
}

fn invalid(path: &str, why: &str) -> VolumeError {
    VolumeError::Invalid(format!("target path {path:?} {why}"))
}

/// Checks `path` against `roots`: absolute, no `.`/`..`/empty components, no
/// trailing slash, and strictly below a root.
pub fn check(path: &str, roots: &[PathBuf]) -> Result<Target, VolumeError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(path, "is not absolute"));
    }
    let mut normal = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => normal.push(n),
            _ => return Err(invalid(path, "is not normalised (. or ..)")),
        }
    }
    if normal.as_os_str() != p.as_os_str() {
        return Err(invalid(path, "is not normalised (repeated or trailing /)"));
    }
    for root in roots {
        if let Ok(rest) = normal.strip_prefix(root) {
            let below: Vec<OsString> = rest.iter().map(OsStr::to_os_string).collect();
            if !below.is_empty() {
                return Ok(Target {
                    path: normal,
                    root: root.clone(),
                    below,
                });
            }
        }
    }
    Err(invalid(
        path,
        &format!("is not under an allowed root ({})", display_roots(roots)),
    ))
}

fn display_roots(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The path through which the kernel reaches what `fd` refers to.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn io(path: &Path, what: &str, e: Errno) -> VolumeError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => VolumeError::Invalid(format!(
            "{}: {what}: a component is a symlink or not a directory",
            path.display()
        )),
        e => VolumeError::Filesystem(format!("{}: {what}: {e}", path.display())),
    }
}

const PATH_DIR: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Target {
    /// The last component: the target itself, inside [`Target::parent`].
    pub fn name(&self) -> &OsStr {
        self.below.last().expect("checked: at least one component")
    }

    /// Opens the directory holding the target, walking from the root with
    /// `O_NOFOLLOW`; missing directories are made (0750) when `create`, else
    /// `Ok(None)`.
    pub fn parent(&self, create: bool) -> Result<Option<OwnedFd>, VolumeError> {
        // The root itself is the operator's: it may be a symlink.
        let mut dir = match openat(
            nix::fcntl::AT_FDCWD,
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ENOENT) => {
                std::fs::create_dir_all(&self.root).map_err(|e| {
                    VolumeError::Filesystem(format!("{}: {e}", self.root.display()))
                })?;
                openat(
                    nix::fcntl::AT_FDCWD,
                    &self.root,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(&self.root, "opening the root", e))?
            }
            Err(e) => return Err(io(&self.root, "opening the root", e)),
        };
        for part in &self.below[..self.below.len() - 1] {
            dir = match openat(&dir, part.as_os_str(), PATH_DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if !create => return Ok(None),
                Err(Errno::ENOENT) => {
                    match mkdirat(&dir, part.as_os_str(), Mode::from_bits_truncate(0o750)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io(&self.path, "making a directory", e)),
                    }
                    openat(&dir, part.as_os_str(), PATH_DIR, Mode::empty())
                        .map_err(|e| io(&self.path, "walking", e))?
                }
                Err(e) => return Err(io(&self.path, "walking", e)),
            };
        }
        Ok(Some(dir))
    }

    /// Opens the target itself (`O_PATH`, never following a symlink): None
    /// when it does not exist.
    pub fn open(&self, parent: &OwnedFd) -> Result<Option<(OwnedFd, FileStat)>, VolumeError> {
        match openat(
            parent,
            self.name(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|e| io(&self.path, "stat", e))?;
                Ok(Some((fd, st)))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io(&self.path, "opening", e)),
        }
    }
}

/// The kind of an inode, from its mode.
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<PathBuf> {
        vec![PathBuf::from("/var/lib/kubelet")]
    }

    #[test]
    fn only_normalised_paths_under_a_root() {
        let t = check("/var/lib/kubelet/pods/p/volumes/v/mount", &roots()).unwrap();
        assert_eq!(t.name(), "mount");
        for bad in [
            "/etc/passwd",
            "var/lib/kubelet/pods/x",
            "/var/lib/kubelet",
            "/var/lib/kubelet/",
            "/var/lib/kubelet/pods/../../../../etc",
            "/var/lib/kubelet/./pods/x",
            "/var/lib/kubelet//pods/x",
            "/var/lib/kubelet/pods/x/",
            "/var/lib/kubeletx/pods/x",
        ] {
            assert!(
                matches!(check(bad, &roots()), Err(VolumeError::Invalid(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn the_walk_refuses_a_symlink_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kubelet");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("pods/evil")).unwrap();
        let roots = vec![root.clone()];
        let t = check(&format!("{}/pods/evil/target", root.display()), &roots).unwrap();
        assert!(matches!(t.parent(true), Err(VolumeError::Invalid(_))));
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing made outside"
        );
        // The last component as a symlink is opened as the link, not followed.
        let t = check(&format!("{}/pods/evil", root.display()), &roots).unwrap();
        let parent = t.parent(false).unwrap().unwrap();
        let (_, st) = t.open(&parent).unwrap().unwrap();
        assert_eq!(kind(&st), SFlag::S_IFLNK);
        // Missing directories are made 0750 when asked, and only then.
        let t = check(
            &format!("{}/pods/new/deeper/target", root.display()),
            &roots,
        )
        .unwrap();
        assert!(t.parent(false).unwrap().is_none());
        t.parent(true).unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("pods/new/deeper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }
}
