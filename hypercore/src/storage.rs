//! Where a feed's six files live: a directory of flat files (hypercore 9's layout) or memory.
//!
//! [`Storage`] hands out one [`RandomAccess`] per [`FileKind`]; other backends (S3,
//! encrypted, …) implement the same two traits. Calls are synchronous: the feed runs them
//! on blocking threads, never on the async runtime's workers, except for short reads.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The files of one feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// 32-byte public key.
    Key,
    /// 64-byte secret key (absent on read-only clones).
    SecretKey,
    /// All block bytes, concatenated.
    Data,
    /// 40-byte node records after a 32-byte header.
    Tree,
    /// 64-byte signature records after a 32-byte header.
    Signatures,
    /// Bitfield pages after a 32-byte header.
    Bitfield,
}

impl FileKind {
    /// Every file of a feed.
    pub const ALL: [FileKind; 6] = [
        FileKind::Key,
        FileKind::SecretKey,
        FileKind::Data,
        FileKind::Tree,
        FileKind::Signatures,
        FileKind::Bitfield,
    ];

    /// The file name hypercore 9 uses.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Key => "key",
            FileKind::SecretKey => "secret_key",
            FileKind::Data => "data",
            FileKind::Tree => "tree",
            FileKind::Signatures => "signatures",
            FileKind::Bitfield => "bitfield",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One random-access file.
pub trait RandomAccess: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were available (fewer
    /// only at the end of the file).
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, growing the file as needed.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Writes the buffers back to back starting at `offset`.
    fn write_vectored(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let mut at = offset;
        for b in bufs {
            self.write(at, b)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// The file's path, when it is a file another process could open.
    fn path(&self) -> Option<&Path> {
        None
    }
    /// Forgets `len` bytes at `offset` (reads may then return zeros); shrinks the file if
    /// the range reaches its end.
    fn delete(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Sets the size.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// A place that holds the files of one feed.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens (creating if needed) one file.
    fn open(&self, kind: FileKind) -> io::Result<Box<dyn RandomAccess>>;
    /// Opens the bitfield file holding an exclusive lock on the feed, if the backend can
    /// be shared between processes; the lock lasts as long as the file is open. One
    /// descriptor serves both, which matters to a process that keeps thousands of feeds.
    /// `Ok(None)`: the backend has no locks, and the bitfield is opened with `open`.
    fn open_locked_bitfield(&self) -> io::Result<Option<Box<dyn RandomAccess>>> {
        Ok(None)
    }
    /// A human-readable location for error messages (a path, or "memory").
    fn location(&self) -> String;
}

/// A feed stored as hypercore 9's flat files in one directory.
#[derive(Debug, Clone)]
pub struct DiskStorage {
    dir: PathBuf,
}

impl DiskStorage {
    /// Storage in `dir` (created when the feed is opened).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskStorage { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for DiskStorage {
    fn open(&self, kind: FileKind) -> io::Result<Box<dyn RandomAccess>> {
        std::fs::create_dir_all(&self.dir)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        if kind == FileKind::SecretKey {
            // The secret key never becomes readable by anyone else.
            opts.mode(0o600);
        }
        let path = self.dir.join(kind.name());
        let file = opts.open(&path)?;
        if kind == FileKind::SecretKey {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Box::new(DiskFile {
            file: Handle::Plain(file),
            path,
        }))
    }

    fn open_locked_bitfield(&self) -> io::Result<Option<Box<dyn RandomAccess>>> {
        std::fs::create_dir_all(&self.dir)?;
        // JS hypercore takes the same flock on the bitfield file, so a JS and a Rust
        // process also exclude each other.
        let path = self.dir.join(FileKind::Bitfield.name());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Box::new(DiskFile {
                file: Handle::Locked(lock),
                path,
            }))),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// An open file, possibly holding the feed's lock.
enum Handle {
    Plain(File),
    Locked(nix::fcntl::Flock<File>),
}

impl std::ops::Deref for Handle {
    type Target = File;

    fn deref(&self) -> &File {
        match self {
            Handle::Plain(file) => file,
            Handle::Locked(lock) => lock,
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handle::Plain(_) => f.write_str("File"),
            Handle::Locked(_) => f.write_str("LockedFile"),
        }
    }
}

#[derive(Debug)]
struct DiskFile {
    file: Handle,
    path: PathBuf,
}

impl RandomAccess for DiskFile {
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn write_vectored(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        // pwritev keeps large batches to one system call per ~1024 buffers and avoids
        // concatenating them first.
        let mut slices: Vec<io::IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| io::IoSlice::new(b))
            .collect();
        let mut at = offset;
        let mut rest: &mut [io::IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = rest.len().min(1024);
            match nix::sys::uio::pwritev(&*self.file, &rest[..n], at as i64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "pwritev wrote nothing",
                    ))
                }
                Ok(written) => {
                    at += written as u64;
                    io::IoSlice::advance_slices(&mut rest, written);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(())
    }

    fn delete(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = self.file.metadata()?.len();
        if offset >= size {
            return Ok(());
        }
        if offset.saturating_add(len) >= size {
            return self.file.set_len(offset);
        }
        use nix::fcntl::{fallocate, FallocateFlags};
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(&*self.file, flags, offset as i64, len as i64) {
            Ok(()) => Ok(()),
            // Filesystems without hole punching: the bytes stay; nothing reads them once
            // the bitfield says the blocks are gone.
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(io::Error::other(format!(
                "punching a hole in {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Writes a small file private to its user (mode 0600, whatever the umask) so that a
/// crash leaves either the old contents or the new, never a torn file: written beside as
/// `<name>.tmp`, fsync'd, renamed over `path`, and the directory fsync'd. For keys,
/// tokens and state files.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // An older temporary file keeps its mode: make sure.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// A feed kept in memory. Clones share the same files, so a feed can be closed and
/// reopened from the same `MemoryStorage`.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<HashMap<FileKind, Arc<MemoryFile>>>>,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn open(&self, kind: FileKind) -> io::Result<Box<dyn RandomAccess>> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| io::Error::other("memory storage lock poisoned"))?;
        let file = files.entry(kind).or_default().clone();
        Ok(Box::new(SharedMemoryFile(file)))
    }

    fn location(&self) -> String {
        "memory".to_string()
    }
}

#[derive(Debug, Default)]
struct MemoryFile {
    bytes: Mutex<Vec<u8>>,
}

#[derive(Debug)]
struct SharedMemoryFile(Arc<MemoryFile>);

impl SharedMemoryFile {
    fn bytes(&self) -> io::Result<std::sync::MutexGuard<'_, Vec<u8>>> {
        self.0
            .bytes
            .lock()
            .map_err(|_| io::Error::other("memory file lock poisoned"))
    }
}

impl RandomAccess for SharedMemoryFile {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.bytes()?;
        let start = (offset as usize).min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes()?;
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn delete(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut bytes = self.bytes()?;
        let start = (offset as usize).min(bytes.len());
        let end = offset.saturating_add(len).min(bytes.len() as u64) as usize;
        if end == bytes.len() {
            bytes.truncate(start);
        } else {
            bytes[start..end].fill(0);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes()?.len() as u64)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.bytes()?.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_replace_the_old_contents_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("state.json");
        // A temporary file left by a crash, readable by others.
        std::fs::write(dir.path().join("state.json.tmp"), b"torn")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(
            dir.path().join("state.json.tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for contents in [&b"first"[..], b"second"] {
            write_private_file(&path, contents).unwrap_or_else(|e| panic!("writing: {e}"));
            assert_eq!(std::fs::read(&path).unwrap_or_default(), contents);
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        assert!(!dir.path().join("state.json.tmp").exists());
    }
}
