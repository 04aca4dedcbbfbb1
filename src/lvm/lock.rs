//! lvm2's file locks, taken the way lvm2 takes them so that ferrolvm and
//! concurrent lvm commands never interleave a commit.
//!
//! `<locking_dir>/V_<vg>` per VG and `P_global` for PV/VG creation and
//! removal; flock(2); writer priority through `<file>:aux`; after locking,
//! the path must still name the locked inode (unlockers unlink the file);
//! on release the file is unlinked if nobody else holds it.
//!
//! A wait can be bounded (the node's is; lvm2's CLI waits forever, and so
//! does ferrolvm's): past the deadline the error is `TimedOut`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// `flock`, giving up at `deadline` (None: wait as long as it takes).
fn flock_until(f: &File, op: libc::c_int, deadline: Option<Instant>) -> io::Result<()> {
    let Some(deadline) = deadline else {
        return flock(f, op);
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match flock(f, op | libc::LOCK_NB) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "another process holds the lock",
            ));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
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
fn lock_file(path: &Path, op: libc::c_int, deadline: Option<Instant>) -> io::Result<File> {
    loop {
        let f = open_lock_file(path)?;
        flock_until(&f, op, deadline)?;
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
    fn acquire(dir: &Path, name: &str, mode: Mode, wait: Option<Duration>) -> io::Result<LvmLock> {
        let deadline = wait.map(|w| Instant::now() + w);
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let aux_path = dir.join(format!("{name}:aux"));
        // Writer priority: queue on the aux file first, so a stream of
        // readers cannot starve a writer (lvm2's prioritise_write_locks).
        let aux = lock_file(&aux_path, libc::LOCK_EX, deadline)?;
        let file = match mode {
            Mode::Exclusive => {
                let f = lock_file(&path, libc::LOCK_EX, deadline);
                unlock_file(aux, &aux_path);
                f?
            }
            Mode::Shared => {
                unlock_file(aux, &aux_path);
                lock_file(&path, libc::LOCK_SH, deadline)?
            }
        };
        Ok(LvmLock {
            file: Some(file),
            path,
        })
    }

    /// `V_<vg>`, waiting at most `wait` (None: as long as it takes).
    pub fn vg(dir: &Path, vg: &str, mode: Mode, wait: Option<Duration>) -> io::Result<LvmLock> {
        Self::acquire(dir, &format!("V_{vg}"), mode, wait)
    }

    /// Any other lvm2 lock file, e.g. `D_system.devices`.
    pub fn named(
        dir: &Path,
        name: &str,
        mode: Mode,
        wait: Option<Duration>,
    ) -> io::Result<LvmLock> {
        Self::acquire(dir, name, mode, wait)
    }

    /// `P_global`: take it before any VG lock.
    pub fn global(dir: &Path, mode: Mode, wait: Option<Duration>) -> io::Result<LvmLock> {
        Self::acquire(dir, "P_global", mode, wait)
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
        let l = LvmLock::vg(dir.path(), "vg0", Mode::Exclusive, None).unwrap();
        let probe = File::open(dir.path().join("V_vg0")).unwrap();
        assert!(
            flock(&probe, libc::LOCK_SH | libc::LOCK_NB).is_err(),
            "held exclusively"
        );
        drop(probe);
        drop(l);
        assert!(!dir.path().join("V_vg0").exists(), "unlinked on release");
        assert!(!dir.path().join("V_vg0:aux").exists());
        let a = LvmLock::vg(dir.path(), "vg0", Mode::Shared, None).unwrap();
        let b = LvmLock::vg(dir.path(), "vg0", Mode::Shared, None).unwrap();
        drop((a, b));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_bounded_wait_times_out_and_leaves_the_holder_alone() {
        let dir = tempfile::tempdir().unwrap();
        let held = LvmLock::vg(dir.path(), "vg0", Mode::Exclusive, None).unwrap();
        let wait = Some(Duration::from_millis(50));
        let err = LvmLock::vg(dir.path(), "vg0", Mode::Shared, wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let err = LvmLock::vg(dir.path(), "vg0", Mode::Exclusive, wait).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(dir.path().join("V_vg0").exists(), "the holder's file stays");
        drop(held);
        let again = LvmLock::vg(dir.path(), "vg0", Mode::Exclusive, wait).unwrap();
        drop(again);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
