//! Block-device I/O: direct, sector-aligned reads and writes, so that what
//! lvm2 wrote with O_DIRECT is what we read, and what we write is on the
//! device (not in a cache) before the next commit phase starts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const ALIGN: usize = 4096;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; ALIGN]);

/// A zeroed buffer aligned for O_DIRECT.
struct AlignedBuf {
    pages: Vec<Page>,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        AlignedBuf {
            pages: vec![Page([0; ALIGN]); len.div_ceil(ALIGN).max(1)],
            len,
        }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `pages` is a contiguous allocation of `pages.len() * ALIGN`
        // initialised bytes, and `len` never exceeds that.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr().cast::<u8>(), self.len) }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the borrow of `self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pages.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// What the commit executor and the scanner need from a device.
pub trait Disk: Send {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    fn size(&self) -> u64;
    fn path(&self) -> &Path;
}

/// A block device (or an image file) opened for direct I/O.
pub struct BlockDisk {
    file: File,
    path: PathBuf,
    size: u64,
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

impl BlockDisk {
    pub fn open(path: &Path, write: bool) -> io::Result<Self> {
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(write);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        // tmpfs and some filesystems refuse O_DIRECT; image files there fall back.
        let file = match open(true) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(false)?,
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let size = if meta.file_type().is_block_device() {
            let mut s = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
            // points at a live local; the fd is open for the call's duration.
            unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(&file), &mut s) }
                .map_err(io::Error::from)?;
            s
        } else {
            meta.len()
        };
        Ok(BlockDisk {
            file,
            path: path.to_path_buf(),
            size,
        })
    }
}

impl Disk for BlockDisk {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // Widen to 512-byte boundaries, read, and cut out the range.
        let start = offset / 512 * 512;
        let end = (offset + len as u64).div_ceil(512) * 512;
        let end = end.min(self.size.max(start));
        let mut buf = AlignedBuf::new((end - start) as usize);
        self.file.read_exact_at(buf.as_mut_slice(), start)?;
        let skip = (offset - start) as usize;
        let avail = buf.len.saturating_sub(skip).min(len);
        if avail < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {len} bytes at {offset} runs past the end of {}",
                    self.path.display()
                ),
            ));
        }
        Ok(buf.as_slice()[skip..skip + len].to_vec())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !offset.is_multiple_of(512) || !data.len().is_multiple_of(512) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unaligned metadata write",
            ));
        }
        let mut buf = AlignedBuf::new(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        self.file.write_all_at(buf.as_slice(), offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// An in-memory device, for tests and fault injection.
pub struct MemDisk {
    pub data: Vec<u8>,
    pub path: PathBuf,
}

impl Disk for MemDisk {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let o = offset as usize;
        self.data
            .get(o..o + len)
            .map(|s| s.to_vec())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let o = offset as usize;
        let dst = self
            .data
            .get_mut(o..o + data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "write past end"))?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, 0x127f, [u64; 2]);

/// Makes the byte range read as zeros, then syncs. First the device's
/// write-zeroes that may deallocate (`fallocate(PUNCH_HOLE)` on a block
/// device: guaranteed zeroes, no fallback, cheap on thin-provisioned and
/// file-backed storage); where the device has none, BLKZEROOUT (the kernel
/// writes zero pages if it must).
pub fn zero_out(path: &Path, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let f = OpenOptions::new().write(true).open(path)?;
    let punched = fallocate(
        &f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    );
    match punched {
        Ok(()) => {}
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads two u64s through the pointer, which
            // points at a live local array; the fd stays open for the call.
            unsafe { blkzeroout(std::os::fd::AsRawFd::as_raw_fd(&f), &range) }
                .map_err(io::Error::from)?;
        }
        Err(e) => return Err(io::Error::from(e)),
    }
    f.sync_all()
}

/// Tells the device the byte range no longer holds data (BLKDISCARD).
pub fn discard(path: &Path, offset: u64, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads two u64s through the pointer, which points at
    // a live local array; the fd stays open for the call.
    unsafe { blkdiscard(std::os::fd::AsRawFd::as_raw_fd(&f), &range) }.map_err(io::Error::from)?;
    Ok(())
}
