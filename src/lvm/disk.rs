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
///
/// The on-disk format counts in 512-byte sectors whatever the device, but
/// direct I/O must be aligned to the device's *logical* sector, which is 4096
/// bytes on a 4Kn disk. So reads widen to whole logical sectors, and a write
/// smaller than one (a 512-byte label or mda header) reads the sector, patches
/// it and writes it back whole, as lvm2's bcache does with its 4 KiB blocks.
/// A logical sector is the device's unit of atomic writes, so a patched
/// sector lands whole or not at all, like the 512-byte one it stands for.
pub struct BlockDisk {
    file: File,
    path: PathBuf,
    size: u64,
    sector: u64,
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);

/// The smallest I/O unit the on-disk format uses.
const FORMAT_SECTOR: u64 = 512;

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
        let file = match open(true) {
            Ok(f) => f,
            // An image file on tmpfs refuses O_DIRECT; a block device never
            // may, or what we read could be a page-cache copy lvm2 never wrote.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !is_block_device(path) => {
                open(false)?
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let (size, sector) = if meta.file_type().is_block_device() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let mut s = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
            // points at a live local; the fd is open for the call's duration.
            unsafe { blkgetsize64(fd, &mut s) }.map_err(io::Error::from)?;
            let mut ss: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer, which
            // points at a live local; the fd is open for the call's duration.
            unsafe { blksszget(fd, &mut ss) }.map_err(io::Error::from)?;
            (s, logical_sector(ss, path)?)
        } else {
            (meta.len(), FORMAT_SECTOR)
        };
        Ok(BlockDisk {
            file,
            path: path.to_path_buf(),
            size,
            sector,
        })
    }

    /// The device's logical sector size in bytes (512 or 4096 in practice).
    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    /// Reads whole logical sectors covering `[start, end)`, both aligned.
    fn read_sectors(&self, start: u64, end: u64) -> io::Result<AlignedBuf> {
        let mut buf = AlignedBuf::new((end - start) as usize);
        self.file.read_exact_at(buf.as_mut_slice(), start)?;
        Ok(buf)
    }
}

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Checks what BLKSSZGET said: a power of two from 512 to 64 KiB, or the
/// device is not one we know how to address.
fn logical_sector(ss: libc::c_int, path: &Path) -> io::Result<u64> {
    match u64::try_from(ss) {
        Ok(s) if s.is_power_of_two() && (FORMAT_SECTOR..=65536).contains(&s) => Ok(s),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: logical sector size {ss} is not supported",
                path.display()
            ),
        )),
    }
}

impl Disk for BlockDisk {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // Widen to logical-sector boundaries, read, and cut out the range.
        let start = offset / self.sector * self.sector;
        let end = (offset + len as u64).div_ceil(self.sector) * self.sector;
        let end = end.min(self.size.max(start));
        let buf = self.read_sectors(start, end)?;
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
        let len = data.len() as u64;
        if !offset.is_multiple_of(FORMAT_SECTOR) || !len.is_multiple_of(FORMAT_SECTOR) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unaligned metadata write",
            ));
        }
        let start = offset / self.sector * self.sector;
        let end = (offset + len).div_ceil(self.sector) * self.sector;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "write of {len} bytes at {offset} runs past the end of {}",
                    self.path.display()
                ),
            ));
        }
        let mut buf = if start == offset && end == offset + len {
            AlignedBuf::new(data.len())
        } else {
            self.read_sectors(start, end)?
        };
        let at = (offset - start) as usize;
        buf.as_mut_slice()[at..at + data.len()].copy_from_slice(data);
        self.file.write_all_at(buf.as_slice(), start)
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
