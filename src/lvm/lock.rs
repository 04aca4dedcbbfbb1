//! lvm2's file locks, taken the way lvm2 takes them so that ferrolvm and
//! concurrent lvm commands never interleave a commit.
//!
//! `<locking_dir>/V_<vg>` per VG and `P_global` for PV/VG creation and
//! removal; flock(2); writer priority through `<file>:aux`; after locking,
//! the path must still name the locked inode (unlockers unlink the file);
//! on release the file is unlinked if nobody else holds it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lvm2 lock; released (and its file unlinked when free) on drop.
#[derive(Debug)]
pub struct LvmLock {
    file: Option<File>,
    path: PathBuf,
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd we own; no memory is passed.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o777)
        .open(path)
}

/// Locks `path` until the path and the locked fd are the same inode.
fn lock_file(path: &Path, op: libc::c_int) -> io::Result<File> {
    loop {
        let f = open_lock_file(path)?;
        flock(&f, op)?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(f),
            _ => continue,
        }
    }
}

/// Releases a lock and unlinks its file if no one else holds or waits on it.
fn unlock_file(f: File, path: &Path) {
    let _ = flock(&f, libc::LOCK_UN);
    if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
        if let (Ok(m), Ok(fm)) = (std::fs::metadata(path), f.metadata()) {
            if m.ino() == fm.ino() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl LvmLock {
    fn acquire(dir: &Path, name: &str, mode: Mode) -> io::Result<LvmLock> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let aux_path = dir.join(format!("{name}:aux"));
        // Writer priority: queue on the aux file first, so a stream of
        // readers cannot starve a writer (lvm2's prioritise_write_locks).
        let aux = lock_file(&aux_path, libc::LOCK_EX)?;
        let file = match mode {
            Mode::Exclusive => {
                let f = lock_file(&path, libc::LOCK_EX);
                unlock_file(aux, &aux_path);
                f?
            }
            Mode::Shared => {
                unlock_file(aux, &aux_path);
                lock_file(&path, libc::LOCK_SH)?
            }
        };
        Ok(LvmLock {
            file: Some(file),
            path,
        })
    }

    /// `V_<vg>`.
    pub fn vg(dir: &Path, vg: &str, mode: Mode) -> io::Result<LvmLock> {
        Self::acquire(dir, &format!("V_{vg}"), mode)
    }

    /// Any other lvm2 lock file, e.g. `D_system.devices`.
    pub fn named(dir: &Path, name: &str, mode: Mode) -> io::Result<LvmLock> {
        Self::acquire(dir, name, mode)
    }

    /// `P_global`: take it before any VG lock.
    pub fn global(dir: &Path, mode: Mode) -> io::Result<LvmLock> {
        Self::acquire(dir, "P_global", mode)
    }
}

impl Drop for LvmLock {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            unlock_file(f, &self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let l = LvmLock::vg(dir.path(), "vg0", Mode::Exclusive).unwrap();
        let probe = File::open(dir.path().join("V_vg0")).unwrap();
        assert!(
            flock(&probe, libc::LOCK_SH | libc::LOCK_NB).is_err(),
            "held exclusively"
        );
        drop(probe);
        drop(l);
        assert!(!dir.path().join("V_vg0").exists(), "unlinked on release");
        assert!(!dir.path().join("V_vg0:aux").exists());
        let a = LvmLock::vg(dir.path(), "vg0", Mode::Shared).unwrap();
        let b = LvmLock::vg(dir.path(), "vg0", Mode::Shared).unwrap();
        drop((a, b));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
