//! Reading and writing the six files of a feed in hypercore 9's formats: headers, 40-byte
//! tree records, 64-byte signature records, bitfield pages, raw key files and block data.

use std::fmt;
use std::io;

use lru::LruCache;

use crate::bitfield::{Bitfield, DEFAULT_PAGE_SIZE};
use crate::crypto::Signature;
use crate::error::{Error, Result};
use crate::node::{Node, NODE_RECORD_SIZE};
use crate::storage::{FileKind, RandomAccess, Storage};

/// Size of the header in front of the tree, signatures and bitfield files.
pub const HEADER_SIZE: u64 = 32;
const SIGNATURE_SIZE: u64 = 64;

/// The 32-byte header hypercore writes: magic `05 02 57`, file type, version 0, u16be entry
/// size, then the length-prefixed algorithm name.
pub fn header(kind: FileKind, entry_size: u16) -> [u8; 32] {
    let (file_type, algorithm): (u8, &str) = match kind {
        FileKind::Bitfield => (0, ""),
        FileKind::Signatures => (1, "Ed25519"),
        FileKind::Tree => (2, "BLAKE2b"),
        _ => unreachable!("{kind} has no header"),
    };
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(&[5, 2, 87, file_type]);
    h[5..7].copy_from_slice(&entry_size.to_be_bytes());
    h[7] = algorithm.len() as u8;
    h[8..8 + algorithm.len()].copy_from_slice(algorithm.as_bytes());
    h
}

/// What a feed's storage held when it was opened.
pub struct Loaded {
    /// The `key` file, if it holds 32 bytes.
    pub key: Option<[u8; 32]>,
    /// The `secret_key` file, if it holds 64 bytes.
    pub secret_key: Option<Vec<u8>>,
    /// The bitfield pages.
    pub bitfield: Bitfield,
}

/// Recently used tree nodes. The table grows with use up to `limit` entries instead of
/// being allocated at full size for every open feed (65536 nodes would be ~2 MiB each).
struct NodeCache {
    lru: LruCache<u64, Node>,
    limit: usize,
}

impl NodeCache {
    fn insert(&mut self, node: Node) {
        self.lru.put(node.index, node);
        if self.lru.len() > self.limit {
            self.lru.pop_lru();
        }
    }
}

/// Open handles on a feed's files plus a cache of tree nodes. The key files are only
/// needed while the feed opens ([`FeedStore::release_key_files`] closes them), so an open
/// feed holds four descriptors: data, tree, signatures and the locked bitfield.
pub struct FeedStore {
    location: String,
    key: Option<Box<dyn RandomAccess>>,
    secret_key: Option<Box<dyn RandomAccess>>,
    data: Box<dyn RandomAccess>,
    tree: Box<dyn RandomAccess>,
    signatures: Box<dyn RandomAccess>,
    bitfield: Box<dyn RandomAccess>,
    nodes: Option<NodeCache>,
}

/// Stands in for a key file after [`FeedStore::release_key_files`]: nothing may touch it.
#[derive(Debug)]
struct ReleasedKeyFile;

impl ReleasedKeyFile {
    fn error() -> io::Error {
        io::Error::other("the key files are closed once the feed is open")
    }
}

impl RandomAccess for ReleasedKeyFile {
    fn read(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Err(Self::error())
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(Self::error())
    }
    fn delete(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(Self::error())
    }
    fn len(&self) -> io::Result<u64> {
        Err(Self::error())
    }
    fn truncate(&self, _len: u64) -> io::Result<()> {
        Err(Self::error())
    }
    fn sync(&self) -> io::Result<()> {
        Err(Self::error())
    }
}

impl fmt::Debug for FeedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedStore")
            .field("location", &self.location)
            .finish()
    }
}

impl FeedStore {
    /// Locks and opens every file. `cache_size` tree nodes are kept in memory (0 = none).
    pub fn open(storage: &dyn Storage, cache_size: usize) -> Result<Self> {
        let location = storage.location();
        let locked = storage.open_locked_bitfield().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::Locked {
                    location: location.clone(),
                }
            } else {
                Error::Io {
                    op: "locking",
                    file: FileKind::Bitfield,
                    location: location.clone(),
                    source: e,
                }
            }
        })?;
        let open = |kind| {
            storage.open(kind).map_err(|source| Error::Io {
                op: "opening",
                file: kind,
                location: location.clone(),
                source,
            })
        };
        let bitfield = match locked {
            Some(file) => file,
            None => open(FileKind::Bitfield)?,
        };
        Ok(FeedStore {
            key: Some(open(FileKind::Key)?),
            secret_key: Some(open(FileKind::SecretKey)?),
            data: open(FileKind::Data)?,
            tree: open(FileKind::Tree)?,
            signatures: open(FileKind::Signatures)?,
            bitfield,
            nodes: (cache_size > 0).then(|| NodeCache {
                lru: LruCache::unbounded(),
                limit: cache_size,
            }),
            location,
        })
    }

    /// The data file's path, when the feed is stored in files.
    pub fn data_path(&self) -> Option<&std::path::Path> {
        self.data.path()
    }

    /// Where the feed lives, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes the `key` and `secret_key` files, which an open feed no longer reads or
    /// writes.
    pub fn release_key_files(&mut self) {
        self.key = None;
        self.secret_key = None;
    }

    fn file(&self, kind: FileKind) -> &dyn RandomAccess {
        match kind {
            FileKind::Key | FileKind::SecretKey => {
                let file = if kind == FileKind::Key {
                    &self.key
                } else {
                    &self.secret_key
                };
                match file {
                    Some(file) => &**file,
                    None => &ReleasedKeyFile,
                }
            }
            FileKind::Data => &*self.data,
            FileKind::Tree => &*self.tree,
            FileKind::Signatures => &*self.signatures,
            FileKind::Bitfield => &*self.bitfield,
        }
    }

    fn io(&self, op: &'static str, file: FileKind) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            op,
            file,
            location: self.location.clone(),
            source,
        }
    }

    fn corrupt(&self, file: FileKind, reason: String) -> Error {
        Error::Corrupt {
            file,
            location: self.location.clone(),
            reason,
        }
    }

    fn read_upto(&self, kind: FileKind, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.file(kind)
            .read(offset, buf)
            .map_err(self.io("reading", kind))
    }

    fn write(&self, kind: FileKind, offset: u64, data: &[u8]) -> Result<()> {
        self.file(kind)
            .write(offset, data)
            .map_err(self.io("writing", kind))
    }

    fn len(&self, kind: FileKind) -> Result<u64> {
        self.file(kind)
            .len()
            .map_err(self.io("reading the size of", kind))
    }

    /// Reads the keys and the bitfield, checks the headers and (re)writes them as JS does.
    pub fn load(&mut self) -> Result<Loaded> {
        let key = self.read_exact_file(FileKind::Key, 32)?.map(|v| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&v);
            k
        });
        let secret_key = self.read_exact_file(FileKind::SecretKey, 64)?;

        self.check_header(FileKind::Tree, NODE_RECORD_SIZE as u16)?;
        self.check_header(FileKind::Signatures, SIGNATURE_SIZE as u16)?;
        let page_size = self.check_header(FileKind::Bitfield, DEFAULT_PAGE_SIZE as u16)?;

        let len = self.len(FileKind::Bitfield)?;
        let body = len.saturating_sub(HEADER_SIZE);
        let mut bytes = vec![0u8; body as usize];
        let n = self.read_upto(FileKind::Bitfield, HEADER_SIZE, &mut bytes)?;
        bytes.truncate(n);
        let bitfield = Bitfield::from_bytes(page_size as usize, &bytes);
        Ok(Loaded {
            key,
            secret_key,
            bitfield,
        })
    }

    /// A small file that must be empty or exactly `size` bytes.
    fn read_exact_file(&self, kind: FileKind, size: usize) -> Result<Option<Vec<u8>>> {
        let len = self.len(kind)?;
        if len == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; size];
        let n = self.read_upto(kind, 0, &mut buf)?;
        if n != size || len != size as u64 {
            return Err(self.corrupt(kind, format!("expected {size} bytes, found {len}")));
        }
        Ok(Some(buf))
    }

    /// Validates an existing header (returning its entry size) or writes a fresh one.
    fn check_header(&self, kind: FileKind, default_entry: u16) -> Result<u16> {
        let len = self.len(kind)?;
        if len == 0 {
            self.write(kind, 0, &header(kind, default_entry))?;
            return Ok(default_entry);
        }
        if len < HEADER_SIZE {
            return Err(self.corrupt(
                kind,
                format!("file is {len} bytes, shorter than its 32-byte header"),
            ));
        }
        let mut h = [0u8; 32];
        self.read_upto(kind, 0, &mut h)?;
        let entry = u16::from_be_bytes([h[5], h[6]]);
        let expected = header(
            kind,
            if kind == FileKind::Bitfield {
                entry
            } else {
                default_entry
            },
        );
        if h[..4] != expected[..4] {
            return Err(self.corrupt(
                kind,
                format!("bad header magic {}", crate::crypto::to_hex(&h[..4])),
            ));
        }
        let valid_entry = match kind {
            FileKind::Bitfield => {
                entry as usize > 3072 && (entry as usize - 3072).is_power_of_two()
            }
            _ => entry == default_entry,
        };
        if !valid_entry {
            return Err(self.corrupt(kind, format!("unsupported entry size {entry} in header")));
        }
        if h != expected {
            self.write(kind, 0, &expected)?;
        }
        Ok(entry)
    }

    /// Forgets everything stored (the `overwrite` option).
    pub fn reset(&mut self) -> Result<()> {
        for kind in [FileKind::Key, FileKind::SecretKey, FileKind::Data] {
            self.file(kind)
                .truncate(0)
                .map_err(self.io("truncating", kind))?;
        }
        for kind in [FileKind::Tree, FileKind::Signatures, FileKind::Bitfield] {
            self.file(kind)
                .truncate(HEADER_SIZE)
                .map_err(self.io("truncating", kind))?;
        }
        if let Some(c) = &mut self.nodes {
            c.lru.clear();
        }
        Ok(())
    }

    /// Writes the `key` file (only while opening: see [`FeedStore::release_key_files`]).
    pub fn write_key(&self, key: &[u8; 32]) -> Result<()> {
        self.write(FileKind::Key, 0, key)
    }

    /// Writes the `secret_key` file.
    pub fn write_secret_key(&self, secret: &[u8; 64]) -> Result<()> {
        self.write(FileKind::SecretKey, 0, secret)
    }

    /// The stored node `index`, if any.
    pub fn node(&mut self, index: u64) -> Result<Option<Node>> {
        if let Some(n) = self.nodes.as_mut().and_then(|c| c.lru.get(&index)) {
            return Ok(Some(*n));
        }
        let mut rec = [0u8; NODE_RECORD_SIZE];
        let n = self.read_upto(
            FileKind::Tree,
            HEADER_SIZE + NODE_RECORD_SIZE as u64 * index,
            &mut rec,
        )?;
        if n < NODE_RECORD_SIZE {
            return Ok(None);
        }
        let node = Node::from_record(index, &rec);
        if let (Some(c), Some(node)) = (&mut self.nodes, node) {
            c.insert(node);
        }
        Ok(node)
    }

    /// Sizes of the leaves of blocks `[start, end)`, read with one call.
    pub fn leaf_sizes(&mut self, start: u64, end: u64) -> Result<Vec<u64>> {
        Ok(self.leaves(start, end)?.iter().map(|n| n.size).collect())
    }

    /// The leaves of blocks `[start, end)`, read with one call; stops at the first one
    /// not stored.
    pub fn leaves(&mut self, start: u64, end: u64) -> Result<Vec<Node>> {
        let count = end.saturating_sub(start) as usize;
        if count <= 1 {
            return Ok(if count == 0 {
                Vec::new()
            } else {
                self.node(2 * start)?.into_iter().collect()
            });
        }
        let span = 2 * NODE_RECORD_SIZE * count - NODE_RECORD_SIZE;
        let mut buf = vec![0u8; span];
        let got = self.read_upto(
            FileKind::Tree,
            HEADER_SIZE + 2 * NODE_RECORD_SIZE as u64 * start,
            &mut buf,
        )?;
        let mut leaves = Vec::with_capacity(count);
        for i in 0..count {
            let at = 2 * NODE_RECORD_SIZE * i;
            let record = buf.get(at..(at + NODE_RECORD_SIZE).min(got));
            match record.and_then(|r| Node::from_record(2 * (start + i as u64), r)) {
                Some(node) => leaves.push(node),
                None => break,
            }
        }
        Ok(leaves)
    }

    /// Writes nodes, coalescing consecutive indexes into one write each.
    pub fn put_nodes(&mut self, nodes: &[Node]) -> Result<()> {
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_unstable_by_key(|n| n.index);
        sorted.dedup_by_key(|n| n.index);
        let mut i = 0;
        let mut buf = Vec::new();
        while i < sorted.len() {
            let first = sorted[i].index;
            let mut j = i;
            buf.clear();
            while j < sorted.len() && sorted[j].index == first + (j - i) as u64 {
                buf.extend_from_slice(&sorted[j].to_record());
                j += 1;
            }
            self.write(
                FileKind::Tree,
                HEADER_SIZE + NODE_RECORD_SIZE as u64 * first,
                &buf,
            )?;
            i = j;
        }
        if let Some(c) = &mut self.nodes {
            for n in nodes {
                c.insert(*n);
            }
        }
        Ok(())
    }

    /// Writes the nodes of an append (JS `putNodeBatch`): records for the indexes
    /// `[first, first + count)` go out in one write, absent ones as zero records like JS;
    /// the few parents outside that range are written one by one. Only `roots` are cached:
    /// the writer keeps them in memory anyway and every other node is rarely read soon.
    pub fn put_appended(
        &mut self,
        first: u64,
        count: u64,
        nodes: &[Node],
        roots: &[Node],
    ) -> Result<()> {
        let mut buf = vec![0u8; count as usize * NODE_RECORD_SIZE];
        for n in nodes {
            if (first..first + count).contains(&n.index) {
                let at = (n.index - first) as usize * NODE_RECORD_SIZE;
                buf[at..at + NODE_RECORD_SIZE].copy_from_slice(&n.to_record());
            } else {
                self.write(
                    FileKind::Tree,
                    HEADER_SIZE + NODE_RECORD_SIZE as u64 * n.index,
                    &n.to_record(),
                )?;
            }
        }
        self.write(
            FileKind::Tree,
            HEADER_SIZE + NODE_RECORD_SIZE as u64 * first,
            &buf,
        )?;
        if let Some(c) = &mut self.nodes {
            for r in roots {
                c.insert(*r);
            }
        }
        Ok(())
    }

    /// The signature stored for block `index` (i.e. for length `index + 1`).
    pub fn signature(&self, index: u64) -> Result<Option<Signature>> {
        let mut buf = [0u8; 64];
        let n = self.read_upto(
            FileKind::Signatures,
            HEADER_SIZE + SIGNATURE_SIZE * index,
            &mut buf,
        )?;
        if n < 64 || buf.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        Ok(Some(Signature(buf)))
    }

    /// Stores the signature for block `index`.
    pub fn put_signature(&self, index: u64, sig: &Signature) -> Result<()> {
        self.write(
            FileKind::Signatures,
            HEADER_SIZE + SIGNATURE_SIZE * index,
            &sig.0,
        )
    }

    /// The first stored signature at an index in `[index, end)`, read in chunks.
    pub fn next_signature(&self, index: u64, end: u64) -> Result<Option<(u64, Signature)>> {
        const CHUNK: u64 = 1024;
        let mut at = index;
        while at < end {
            let n = (end - at).min(CHUNK);
            let mut buf = vec![0u8; (n * SIGNATURE_SIZE) as usize];
            let got = self.read_upto(
                FileKind::Signatures,
                HEADER_SIZE + SIGNATURE_SIZE * at,
                &mut buf,
            )?;
            for (k, rec) in buf[..got - got % 64].chunks(64).enumerate() {
                if rec.iter().any(|&b| b != 0) {
                    let sig = Signature::from_slice(rec)
                        .map_err(|e| self.corrupt(FileKind::Signatures, e.to_string()))?;
                    return Ok(Some((at + k as u64, sig)));
                }
            }
            if (got as u64) < n * SIGNATURE_SIZE {
                return Ok(None);
            }
            at += n;
        }
        Ok(None)
    }

    /// The last stored signature at an index below `end`, scanning backwards in chunks.
    pub fn prev_signature(&self, end: u64) -> Result<Option<u64>> {
        const CHUNK: u64 = 1024;
        let mut hi = end;
        while hi > 0 {
            let lo = hi.saturating_sub(CHUNK);
            let mut buf = vec![0u8; ((hi - lo) * SIGNATURE_SIZE) as usize];
            let got = self.read_upto(
                FileKind::Signatures,
                HEADER_SIZE + SIGNATURE_SIZE * lo,
                &mut buf,
            )?;
            for k in (0..got / 64).rev() {
                if buf[k * 64..(k + 1) * 64].iter().any(|&b| b != 0) {
                    return Ok(Some(lo + k as u64));
                }
            }
            hi = lo;
        }
        Ok(None)
    }

    /// Removes signature records for lengths above `length`; returns whether any existed.
    pub fn truncate_signatures(&self, length: u64) -> Result<bool> {
        let keep = HEADER_SIZE + SIGNATURE_SIZE * length;
        if self.len(FileKind::Signatures)? <= keep {
            return Ok(false);
        }
        self.signatures
            .truncate(keep)
            .map_err(self.io("truncating", FileKind::Signatures))?;
        Ok(true)
    }

    /// Reads `len` bytes of block data at `offset`.
    pub fn read_data(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        let got = self.read_upto(FileKind::Data, offset, &mut buf)?;
        if got < buf.len() {
            let size = self.len(FileKind::Data)?;
            return Err(self.corrupt(
                FileKind::Data,
                format!(
                    "bytes {offset}..{} are past the end of the file ({size} bytes)",
                    offset + len
                ),
            ));
        }
        Ok(buf)
    }

    /// Writes block data back to back at `offset`.
    pub fn write_data(&self, offset: u64, blocks: &[&[u8]]) -> Result<()> {
        self.data
            .write_vectored(offset, blocks)
            .map_err(self.io("writing", FileKind::Data))
    }

    /// Frees the data bytes of cleared blocks.
    pub fn delete_data(&self, offset: u64, len: u64) -> Result<()> {
        self.data
            .delete(offset, len)
            .map_err(self.io("deleting from", FileKind::Data))
    }

    /// Writes changed bitfield pages (offsets are relative to the end of the header).
    pub fn write_bitfield(&self, pages: &[(u64, Vec<u8>)]) -> Result<()> {
        for (offset, page) in pages {
            self.write(FileKind::Bitfield, HEADER_SIZE + offset, page)?;
        }
        Ok(())
    }

    /// fdatasync on the given files.
    pub fn sync(&self, kinds: &[FileKind]) -> Result<()> {
        for &kind in kinds {
            self.file(kind).sync().map_err(self.io("syncing", kind))?;
        }
        Ok(())
    }
}
