//! A disk with a volatile write cache, for machines that lose unsynced writes on a power cut
//! ([`crate::MachineSpec::lose_unsynced`]).
//!
//! The machine's image file is not attached to its loop device directly: a FUSE file system
//! served by a process of its own ([`serve_main`]: the agent program with [`SERVE_FLAG`], in
//! the run's cgroup `disks`, through the `fuser` crate; `disk::Served` is its handle) shows it
//! as one file (named by `disk::volatile_name`), and the loop device (on qemu: QEMU) uses that
//! file. A process of its own, not threads of this one: a process that is a client of its own
//! FUSE server can hang in its exit (closing a FUSE file, or unmounting a file system whose
//! writes go through it, waits for a server that is already gone). Every write the loop device
//! passes on is kept in memory ([`Cache`]); only a flush (the loop device turns the file
//! system's cache flushes and FUA writes into `fsync` of its backing file, which reaches
//! [`ImageFs::fsync`]) writes them to the image. A power cut ([`Cache::cut`]) forgets the
//! writes not flushed and ignores every later one, so when the machine's file system is
//! unmounted its dirty pages go nowhere, and the file system mounted afresh sees the image: the
//! durable state, as a real disk with a volatile cache has it after power loss.
//!
//! What becomes durable is what the machine's real file system (ext4 by default) flushed: an
//! `fsync`/`fdatasync` of a file, `fsync` of a directory, `sync`, and whatever the file system
//! commits on its own account (its journal commit also carries earlier metadata of other files;
//! ext4 is mounted with a long commit interval so that happens only when something asks for it
//! or its journal fills). On netns `sync(2)` flushes every file system of the host, whichever
//! mount namespace it is called in: a plain `sync` in one machine (or on the host) makes every
//! machine's writes so far durable.
//!
//! The FUSE file system is mounted nowhere once its file is open; the server ends when the
//! file system goes (its device read returns `ENODEV`), and the guardian and the sweep kill it
//! with the rest of a dead run (killing it aborts the connection: every user gets errors).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, WriteFlags,
};

/// The agent's flag for serving a volatile disk: `--serve-disk IMAGE NAME`, with the FUSE
/// device on [`FUSE_FD`] and the control socket on [`CONTROL_FD`].
pub const SERVE_FLAG: &str = "--serve-disk";

/// Where the server finds the FUSE device.
pub const FUSE_FD: RawFd = 3;

/// Where the server finds its control socket: it writes `ready` once it serves, answers `cut`
/// (a power cut: [`Cache::cut`]) with `cut`, and `error KIND` (a [`DiskError`]'s name, or
/// `none`: [`Cache::set_error`]) with `error`.
pub const CONTROL_FD: RawFd = 4;

/// The server process: serves `IMAGE` as the one file `NAME` until the file system goes.
pub fn serve_main(args: &[String]) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetcheck-agent {SERVE_FLAG}: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: &[String]) -> io::Result<()> {
    let [image, name] = args else {
        return Err(io::Error::other(format!(
            "usage: fleetcheck-agent {SERVE_FLAG} IMAGE NAME (started by the fabric)"
        )));
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let cache = Arc::new(Mutex::new(Cache::new(file)?));
    // SAFETY: the parent passed these two descriptors for this process to own.
    let (fuse, control) = unsafe {
        (
            OwnedFd::from_raw_fd(FUSE_FD),
            UnixStream::from_raw_fd(CONTROL_FD),
        )
    };
    let mut config = fuser::Config::default();
    // The loop device has several requests in flight (64 MiB written with fsync: 210 MB/s
    // with one thread, 470 with four, on 2 cores).
    config.n_threads = Some(4);
    let session = fuser::Session::from_fd(
        ImageFs::new(cache.clone(), name),
        fuse,
        fuser::SessionACL::Owner,
        config,
    )?;
    let served = session.spawn()?;
    let mut answer = control.try_clone()?;
    answer.write_all(b"ready\n")?;
    std::thread::spawn(move || {
        for line in BufReader::new(control).lines() {
            let Ok(line) = line else { break };
            if line == "cut" {
                cache.lock().unwrap_or_else(|e| e.into_inner()).cut();
                if answer.write_all(b"cut\n").is_err() {
                    break;
                }
            } else if let Some(kind) = line.strip_prefix("error ") {
                let error = DiskError::from_name(kind);
                if error.is_some() || kind == "none" {
                    cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .set_error(error);
                    if answer.write_all(b"error\n").is_err() {
                        break;
                    }
                }
            }
        }
    });
    match served.join() {
        // The fabric aborts the connection when it removes the disk: the usual way to end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        ended => ended,
    }
}

/// A failing disk: what returns an error until the disk recovers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DiskError {
    /// Every write fails with EIO (what was written before stays, unflushed or not).
    Write,
    /// Every flush (the file system's `fsync`, journal commit) fails with EIO.
    Fsync,
    /// Every read fails with EIO (what the machine's page cache holds is still read).
    Read,
    /// Every write fails with ENOSPC: the disk is full.
    Full,
}

impl DiskError {
    /// Every kind.
    pub const ALL: [DiskError; 4] = [
        DiskError::Write,
        DiskError::Fsync,
        DiskError::Read,
        DiskError::Full,
    ];

    /// Its name (`write`, `fsync`, `read`, `full`).
    pub fn name(self) -> &'static str {
        match self {
            DiskError::Write => "write",
            DiskError::Fsync => "fsync",
            DiskError::Read => "read",
            DiskError::Full => "full",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<DiskError> {
        DiskError::ALL.into_iter().find(|e| e.name() == name)
    }

    fn errno(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            DiskError::Full => libc::ENOSPC,
            _ => libc::EIO,
        })
    }
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Unit of the cache: writes at other sizes or offsets are merged into whole blocks.
const BLOCK: u64 = 4096;

const DISK_INO: INodeNo = INodeNo(2);

/// The writes not yet flushed, over the image that holds what was.
#[derive(Debug)]
pub struct Cache {
    image: File,
    size: u64,
    /// Block number → its content since the last flush.
    dirty: BTreeMap<u64, Box<[u8]>>,
    /// After a power cut: writes and flushes are ignored.
    cut: bool,
    /// What fails now, if anything.
    error: Option<DiskError>,
    /// Flushes that wrote something, and blocks written by them (for tests and the benchmark).
    flushes: u64,
}

impl Cache {
    /// A cache over `image` (its length is the disk's size).
    pub fn new(image: File) -> io::Result<Cache> {
        let size = image.metadata()?.len();
        Ok(Cache {
            image,
            size,
            dirty: BTreeMap::new(),
            cut: false,
            error: None,
            flushes: 0,
        })
    }

    /// Reads `len` bytes at `offset` (cut at the end of the disk): dirty blocks over the image.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if let Some(e) = self.error.filter(|e| *e == DiskError::Read) {
            return Err(e.errno());
        }
        let end = (offset + len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.image.read_exact_at(&mut buf, offset)?;
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        for (&block, data) in self.dirty.range(first..=last) {
            let start = block * BLOCK;
            let from = start.max(offset);
            let to = (start + BLOCK).min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
        }
        Ok(buf)
    }

    /// Keeps a write in memory (dropped after a cut); returns how much was taken.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<usize> {
        if self.cut {
            return Ok(data.len());
        }
        if let Some(e) = self
            .error
            .filter(|e| matches!(e, DiskError::Write | DiskError::Full))
        {
            return Err(e.errno());
        }
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let start = block * BLOCK;
            let to = (start + BLOCK).min(end);
            let piece = &data[(at - offset) as usize..(to - offset) as usize];
            if !self.dirty.contains_key(&block) {
                let mut content = vec![0u8; BLOCK as usize].into_boxed_slice();
                if piece.len() as u64 != BLOCK {
                    let have = (self.size - start).min(BLOCK) as usize;
                    self.image.read_exact_at(&mut content[..have], start)?;
                }
                self.dirty.insert(block, content);
            }
            let content = self.dirty.get_mut(&block).expect("inserted above");
            content[(at - start) as usize..(to - start) as usize].copy_from_slice(piece);
            at = to;
        }
        Ok(data.len())
    }

    /// Makes every write so far durable (writes it to the image).
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.error.filter(|e| *e == DiskError::Fsync) {
            return Err(e.errno());
        }
        if self.cut || self.dirty.is_empty() {
            return Ok(());
        }
        // Runs of consecutive blocks go out in one write each (up to 1 MiB).
        let mut run: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut run_start = 0;
        for (&block, data) in &self.dirty {
            let start = block * BLOCK;
            if !run.is_empty() && (run_start + run.len() as u64 != start || run.len() >= 1 << 20) {
                self.image.write_all_at(&run, run_start)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = start;
            }
            let len = (self.size - start).min(BLOCK) as usize;
            run.extend_from_slice(&data[..len]);
        }
        if !run.is_empty() {
            self.image.write_all_at(&run, run_start)?;
        }
        self.dirty.clear();
        self.flushes += 1;
        Ok(())
    }

    /// Power loss: the writes not flushed are gone, and nothing written from now on counts.
    pub fn cut(&mut self) {
        self.cut = true;
        self.dirty.clear();
    }

    /// From now on `error` fails (`None`: the disk works again).
    pub fn set_error(&mut self, error: Option<DiskError>) {
        self.error = error;
    }

    /// Blocks written and not flushed.
    pub fn dirty_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Flushes that made something durable.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }
}

/// The FUSE file system: a root directory with one file, `name`, the disk through its
/// [`Cache`].
#[derive(Debug)]
pub struct ImageFs {
    cache: Arc<Mutex<Cache>>,
    name: String,
}

impl ImageFs {
    pub fn new(cache: Arc<Mutex<Cache>>, name: &str) -> Self {
        ImageFs {
            cache,
            name: name.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o700, 0, 2),
            DISK_INO => (FileType::RegularFile, 0o600, self.lock().size, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: BLOCK as u32,
        })
    }
}

/// Attributes never change (the size is fixed), so the kernel may keep them.
const TTL: Duration = Duration::from_secs(3600);

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Larger requests, fewer round trips (the kernel caps them at its own limit).
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent, name.to_str()) {
            (INodeNo::ROOT, Some(n)) if n == self.name => {
                let attr = self.attr(DISK_INO).expect("the disk has attributes");
                reply.entry(&TTL, &attr, Generation(0));
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        // No page cache of this file in the kernel: every read and write comes here, and
        // nothing of it outlives the mount.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.lock().read(offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.lock().write(offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close`, not a durability point.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(blocks: u64) -> (tempdir::Dir, Cache) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(blocks * BLOCK).unwrap();
        (dir, Cache::new(f).unwrap())
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "fleetcheck-volatile-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn unflushed_writes_read_back_and_a_cut_loses_them() {
        let (_d, mut c) = cache(4);
        c.write(100, b"durable").unwrap();
        c.flush().unwrap();
        // Across a block boundary, unaligned.
        c.write(BLOCK - 3, b"lost!!").unwrap();
        assert_eq!(c.read(100, 7).unwrap(), b"durable");
        assert_eq!(c.read(BLOCK - 3, 6).unwrap(), b"lost!!");
        assert_eq!(c.dirty_blocks(), 2);
        c.cut();
        assert_eq!(c.read(BLOCK - 3, 6).unwrap(), vec![0; 6]);
        assert_eq!(c.read(100, 7).unwrap(), b"durable");
        // After the cut nothing more is kept.
        c.write(0, b"late").unwrap();
        c.flush().unwrap();
        assert_eq!(c.read(0, 4).unwrap(), vec![0; 4]);
    }

    #[test]
    fn a_failing_disk_fails_what_it_is_told_until_it_recovers() {
        let (_dir, mut c) = cache(4);
        c.write(0, &[1; 4096]).unwrap();
        let code = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        c.set_error(Some(DiskError::Fsync));
        assert_eq!(code(c.flush()), Some(libc::EIO));
        c.write(4096, &[2; 4096]).unwrap();
        c.set_error(Some(DiskError::Write));
        assert_eq!(code(c.write(0, &[3; 1]).map(drop)), Some(libc::EIO));
        c.set_error(Some(DiskError::Full));
        assert_eq!(code(c.write(0, &[3; 1]).map(drop)), Some(libc::ENOSPC));
        c.set_error(Some(DiskError::Read));
        assert_eq!(code(c.read(0, 1).map(drop)), Some(libc::EIO));
        c.set_error(None);
        assert_eq!(c.read(4096, 1).unwrap(), [2]);
        c.flush().unwrap();
        assert_eq!(c.dirty_blocks(), 0);
    }

    #[test]
    fn partial_writes_keep_the_rest_of_their_block_and_reads_stop_at_the_end() {
        let (_d, mut c) = cache(2);
        c.write(0, &[7u8; 8192]).unwrap();
        c.flush().unwrap();
        c.write(10, b"ab").unwrap();
        let block = c.read(0, 4096).unwrap();
        assert_eq!(&block[8..14], &[7, 7, b'a', b'b', 7, 7]);
        assert_eq!(c.read(8000, 1000).unwrap().len(), 192);
        assert!(c.write(8190, b"xyz").is_err());
        assert_eq!(c.flushes(), 1);
    }
}
