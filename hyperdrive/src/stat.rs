//! The Stat of every visible node (hyperdrive-schemas 2.0, spec drive.md §3), encoded as
//! JS writes it: fields 1–9 always, the link target for symlinks, the mount for mounts,
//! one metadata entry per key in the order they were set.

/// File type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// A regular file.
pub const S_IFREG: u32 = 0o100000;
/// A directory.
pub const S_IFDIR: u32 = 0o040000;
/// A symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// What a Stat's `mount` field says (different field numbers from the trie's records).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StatMount {
    /// The mounted drive's or core's key.
    #[prost(bytes = "vec", required, tag = "1")]
    pub key: Vec<u8>,
    /// A pinned version.
    #[prost(uint64, optional, tag = "2")]
    pub version: Option<u64>,
    /// Never set by JS hyperdrive 10.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub hash: Option<Vec<u8>>,
    /// A raw hypercore rather than a drive (JS writes it even when false).
    #[prost(bool, optional, tag = "4")]
    pub hypercore: Option<bool>,
}

/// One per-file metadata entry; a removed key keeps its entry without a value.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetadataEntry {
    /// The key.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// The value, absent once removed.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

/// A file's, directory's or link's attributes.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Stat {
    /// POSIX mode with the type bits.
    #[prost(uint32, required, tag = "1")]
    pub mode: u32,
    /// Owner.
    #[prost(uint32, required, tag = "2")]
    pub uid: u32,
    /// Group.
    #[prost(uint32, required, tag = "3")]
    pub gid: u32,
    /// Bytes.
    #[prost(uint64, required, tag = "4")]
    pub size: u64,
    /// Content blocks.
    #[prost(uint64, required, tag = "5")]
    pub blocks: u64,
    /// Index of the first content block.
    #[prost(uint64, required, tag = "6")]
    pub offset: u64,
    /// Byte position of that block in the content feed.
    #[prost(uint64, required, tag = "7")]
    pub byte_offset: u64,
    /// Modified, ms since the epoch.
    #[prost(uint64, required, tag = "8")]
    pub mtime: u64,
    /// Changed, ms since the epoch.
    #[prost(uint64, required, tag = "9")]
    pub ctime: u64,
    /// A symlink's target.
    #[prost(string, optional, tag = "10")]
    pub linkname: Option<String>,
    /// What is mounted here.
    #[prost(message, optional, tag = "11")]
    pub mount: Option<StatMount>,
    /// Per-file metadata, in the order keys were first set.
    #[prost(message, repeated, tag = "12")]
    pub metadata: Vec<MetadataEntry>,
}

impl Stat {
    /// A regular file (`mode` without type bits; JS default 0o644).
    pub fn file(mode: u32, now: u64) -> Stat {
        Stat::of_type(S_IFREG, mode, now)
    }

    /// A directory (JS default mode 0o755).
    pub fn directory(mode: u32, now: u64) -> Stat {
        Stat::of_type(S_IFDIR, mode, now)
    }

    /// A symbolic link to `target` (mode 0o644, as JS writes it).
    pub fn symlink(target: &str, now: u64) -> Stat {
        Stat {
            linkname: Some(target.to_string()),
            ..Stat::of_type(S_IFLNK, 0o644, now)
        }
    }

    fn of_type(kind: u32, mode: u32, now: u64) -> Stat {
        Stat {
            mode: kind | (mode & !S_IFMT),
            mtime: now,
            ctime: now,
            ..Stat::default()
        }
    }

    /// Whether it is a symlink (tested first: JS's type tests let a link pass as a file).
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// The value of metadata `key`, if set.
    pub fn metadata(&self, key: &str) -> Option<&[u8]> {
        self.metadata
            .iter()
            .find(|e| e.key == key)
            .and_then(|e| e.value.as_deref())
    }

    /// Sets metadata `key`, keeping its place if it was set before.
    pub fn set_metadata(&mut self, key: &str, value: Option<Vec<u8>>) {
        match self.metadata.iter_mut().find(|e| e.key == key) {
            Some(entry) => entry.value = value,
            None => self.metadata.push(MetadataEntry {
                key: key.to_string(),
                value,
            }),
        }
    }
}
