//! The synchronous state of one open feed: what it holds, and every operation that reads or
//! changes its storage. [`crate::Feed`] wraps this in a lock and an async API.
//!
//! Write order is what makes `kill -9` safe: block data, tree nodes and the signature are
//! written first, the bitfield last. The bitfield is the commit record: on open, the length
//! is whatever the bitfield proves *and* a stored signature confirms, and any bits past it
//! (left by a crash between the two) are dropped. See [`FeedCore::open`].

use std::sync::Arc;

use crate::bitfield::Bitfield;
use crate::crypto::{self, KeyPair, PublicKey, SecretKey, Signature};
use crate::error::{Error, Result};
use crate::flat_tree;
use crate::node::Node;
use crate::storage::{FileKind, Storage};
use crate::store::FeedStore;
use crate::tree::{self, RemoteTree};

/// Largest block the wire protocol can carry (its frame limit is 8 MiB).
pub const MAX_BLOCK_SIZE: usize = 8 * 1024 * 1024;
/// Largest number of blocks a feed may address: JS peers count in doubles (exact to 2^53).
pub const MAX_BLOCKS: u64 = 1 << 53;

/// How hard an append or a downloaded block is pushed to disk before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every write has reached the operating system before the call returns: the feed
    /// survives a crash of the process (`kill -9`) but not of the machine. Like JS.
    #[default]
    Process,
    /// Additionally fdatasync block data, tree and signatures, then the bitfield, on every
    /// append batch and every stored block: survives power loss, at the cost of two disk
    /// flushes per batch (see the README for measured figures).
    Sync,
}

/// Where a block that is about to be written came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Appended by this process, or `put` by a local caller.
    Local,
    /// Received from a peer, identified by its Noise static public key.
    Remote {
        /// The peer's Noise static public key.
        peer: [u8; 32],
    },
}

/// A hook run before a verified block is written (and before appended blocks are written).
/// Returning an error refuses the block. It runs while the feed is locked: keep it quick
/// and do not call back into the same feed.
pub type OnWrite = Arc<dyn Fn(u64, &[u8], Origin) -> std::result::Result<(), String> + Send + Sync>;

/// Options for opening a feed.
#[derive(Clone)]
pub struct FeedOptions {
    /// Open the feed with this public key (a clone, or a check that storage holds it).
    pub key: Option<PublicKey>,
    /// Use this secret key (it must belong to the public key).
    pub secret_key: Option<SecretKey>,
    /// Generate a key pair when storage holds no feed and no key is given (default true).
    pub create_if_missing: bool,
    /// Discard whatever feed the storage holds.
    pub overwrite: bool,
    /// Only download what is asked for, rather than the whole feed.
    pub sparse: bool,
    /// Write the secret key to storage (default true).
    pub store_secret_key: bool,
    /// Number of tree nodes cached in memory (default 65536, like JS; 0 disables).
    pub storage_cache_size: usize,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Called before each block is written.
    pub on_write: Option<OnWrite>,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            key: None,
            secret_key: None,
            create_if_missing: true,
            overwrite: false,
            sparse: false,
            store_secret_key: true,
            storage_cache_size: 65536,
            durability: Durability::Process,
            on_write: None,
        }
    }
}

impl std::fmt::Debug for FeedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedOptions")
            .field("key", &self.key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("create_if_missing", &self.create_if_missing)
            .field("overwrite", &self.overwrite)
            .field("sparse", &self.sparse)
            .field("store_secret_key", &self.store_secret_key)
            .field("storage_cache_size", &self.storage_cache_size)
            .field("durability", &self.durability)
            .field("on_write", &self.on_write.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

/// The nodes (and signature) that let a peer verify one block.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Proof {
    /// Sibling and root nodes, in the order the verifier consumes them.
    pub nodes: Vec<Node>,
    /// Signature of the length the roots prove, when the proof reaches the roots.
    pub signature: Option<Signature>,
}

/// What a peer asked for when requesting a block (the wire `Request` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProofRequest {
    /// Send the block's own hash node first (a hash-only `update` request).
    pub hash: bool,
    /// Which nodes on the block's path the requester already has (see [`crate::tree::digest`]).
    pub digest: u64,
}

/// A stored signature and the block it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureAt {
    /// The signed length is `index + 1`.
    pub index: u64,
    /// The signature.
    pub signature: Signature,
}

/// Result of [`crate::Feed::audit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// Stored blocks whose data matches the tree.
    pub valid: u64,
    /// Stored blocks that did not match; they were cleared.
    pub invalid: u64,
}

/// A received block's data and its leaf hash.
pub type HashedBlock<'a> = (&'a [u8], crate::crypto::Hash);

/// What a successful [`FeedCore::put`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// The block's data was new.
    pub downloaded: bool,
    /// The proof raised the feed's length.
    pub length_grew: bool,
}

/// Where a byte offset falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekOutcome {
    /// In block `index` at `offset` bytes into it.
    Found {
        /// The block.
        index: u64,
        /// Offset inside the block.
        offset: u64,
    },
    /// The local tree ends at node `node` (covering the offset); a peer must resolve it.
    Unresolved {
        /// Deepest stored node known to contain the offset.
        node: u64,
    },
}

/// Clears that removed blocks, of any feed of this process: a number that only grows
/// (a feed's own count would start again when it is reopened).
static CLEARS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`CLEARS`] now.
pub(crate) fn clears() -> u64 {
    CLEARS.load(std::sync::atomic::Ordering::SeqCst)
}

/// The synchronous state of an open feed.
pub struct FeedCore {
    store: FeedStore,
    key: PublicKey,
    secret: Option<SecretKey>,
    bitfield: Bitfield,
    length: u64,
    byte_length: u64,
    /// Roots of the tree for `length` blocks (the writer's merkle stack).
    roots: Vec<Node>,
    /// Number of set data bits, to tell when a clone holds every block.
    downloaded: u64,
    durability: Durability,
    on_write: Option<OnWrite>,
}

impl std::fmt::Debug for FeedCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedCore")
            .field("key", &self.key)
            .field("location", &self.store.location())
            .field("length", &self.length)
            .field("byte_length", &self.byte_length)
            .finish()
    }
}

/// What an append is computed against: the feed's length and tree roots at one moment,
/// and the key that signs. Taken under the feed's lock, it lets the hashing and signing
/// run without it ([`AppendBase::sign`]); [`FeedCore::commit_append`] then checks that
/// nothing was appended meanwhile.
#[derive(Clone)]
pub struct AppendBase {
    key: PublicKey,
    start: u64,
    roots: Vec<Node>,
    secret: SecretKey,
}

/// Blocks hashed and signed as the append after an [`AppendBase`], not written yet.
#[derive(Clone, Debug)]
pub struct SignedAppend {
    key: PublicKey,
    start: u64,
    count: usize,
    bytes: u64,
    /// Every tree node the append creates.
    nodes: Vec<Node>,
    /// The roots after it.
    roots: Vec<Node>,
    signature: Signature,
}

impl AppendBase {
    /// Hashes `blocks` and signs the feed with them appended (CPU work: about one
    /// Ed25519 signature and a hash per block).
    pub fn sign(&self, blocks: &[&[u8]]) -> Result<SignedAppend> {
        check_blocks(self.start, blocks)?;
        Ok(self.sign_hashed(blocks, &hashes_of(blocks)))
    }

    /// [`Self::sign`] for blocks whose leaf hashes are already computed (`hashes[i]` is
    /// the leaf hash of `blocks[i]`).
    pub(crate) fn sign_with_hashes(
        &self,
        blocks: &[&[u8]],
        hashes: &[crypto::Hash],
    ) -> Result<SignedAppend> {
        check_blocks(self.start, blocks)?;
        if hashes.len() != blocks.len() {
            return Err(Error::Internal {
                reason: format!("{} leaf hashes for {} blocks", hashes.len(), blocks.len()),
            });
        }
        Ok(self.sign_hashed(blocks, hashes))
    }

    fn sign_hashed(&self, blocks: &[&[u8]], hashes: &[crypto::Hash]) -> SignedAppend {
        let start = self.start;
        let leaves: Vec<Node> = hashes
            .iter()
            .zip(blocks)
            .enumerate()
            .map(|(i, (hash, b))| Node {
                index: 2 * (start + i as u64),
                hash: *hash,
                size: b.len() as u64,
            })
            .collect();
        let mut roots = self.roots.clone();
        let nodes = tree::append_leaves(&mut roots, &leaves);
        let length = start + blocks.len() as u64;
        let signature = self.secret.sign(&crypto::signable(&roots, length));
        SignedAppend {
            key: self.key,
            start,
            count: blocks.len(),
            bytes: blocks.iter().map(|b| b.len() as u64).sum(),
            nodes,
            roots,
            signature,
        }
    }
}

impl std::fmt::Debug for AppendBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendBase")
            .field("key", &self.key)
            .field("start", &self.start)
            .finish()
    }
}

/// Refuses a batch that would pass the largest block or feed size; returns its bytes.
fn check_blocks(start: u64, blocks: &[&[u8]]) -> Result<u64> {
    if start + blocks.len() as u64 > MAX_BLOCKS {
        return Err(out_of_range(start, "the feed would exceed 2^53 blocks"));
    }
    let mut bytes = 0u64;
    for (i, b) in blocks.iter().enumerate() {
        if b.len() > MAX_BLOCK_SIZE {
            return Err(Error::BlockTooLarge {
                index: start + i as u64,
                size: b.len(),
                max: MAX_BLOCK_SIZE,
            });
        }
        bytes += b.len() as u64;
    }
    Ok(bytes)
}

fn hashes_of(blocks: &[&[u8]]) -> Vec<crypto::Hash> {
    let mut hashes = Vec::with_capacity(blocks.len());
    crypto::leaf_hashes(blocks, &mut hashes);
    hashes
}

fn out_of_range(index: u64, reason: impl Into<String>) -> Error {
    Error::OutOfRange {
        index,
        reason: reason.into(),
    }
}

impl FeedCore {
    /// Opens the feed in `storage`, creating it if allowed, and recovers from a crash that
    /// interrupted a write: the length is the largest one the bitfield proves for which a
    /// stored signature verifies; anything past it is dropped.
    pub fn open(storage: &dyn Storage, opts: &FeedOptions) -> Result<FeedCore> {
        let mut store = FeedStore::open(storage, opts.storage_cache_size)?;
        if opts.overwrite {
            store.reset()?;
        }
        let mut loaded = store.load()?;
        let location = store.location().to_string();

        let stored_key = loaded.key.map(PublicKey);
        if stored_key.is_none() && loaded.bitfield.tree_len_bits() > 0 {
            // Data without a key cannot be verified: start over, as JS does.
            tracing::warn!(
                location,
                "feed storage has data but no key file; discarding it"
            );
            store.reset()?;
            loaded = store.load()?;
        }
        let stored_secret = match &loaded.secret_key {
            Some(bytes) => Some(SecretKey::from_bytes(bytes).map_err(|e| Error::Corrupt {
                file: FileKind::SecretKey,
                location: location.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };

        let requested = opts
            .key
            .or_else(|| opts.secret_key.as_ref().map(|s| s.public_key()));
        let (key, secret) = match (stored_key, requested) {
            (Some(stored), Some(req)) if stored != req => {
                return Err(Error::KeyMismatch {
                    location,
                    stored,
                    requested: req,
                });
            }
            (Some(k), _) | (None, Some(k)) => (k, opts.secret_key.clone().or(stored_secret)),
            (None, None) if opts.create_if_missing => {
                let kp = KeyPair::generate();
                (kp.public, Some(kp.secret))
            }
            (None, None) => return Err(Error::NotFound { location }),
        };
        if let Some(s) = &secret {
            if s.public_key() != key {
                return Err(Error::SecretKeyMismatch { key });
            }
        }
        let mut wrote = Vec::new();
        if stored_key != Some(key) {
            store.write_key(key.as_bytes())?;
            wrote.push(FileKind::Key);
        }
        if let (true, Some(s)) = (opts.store_secret_key, &secret) {
            let bytes = s.to_bytes();
            if loaded.secret_key.as_deref() != Some(&bytes[..]) {
                store.write_secret_key(&bytes)?;
                wrote.push(FileKind::SecretKey);
            }
        }
        // The key files are closed once the feed is open: make them durable first.
        if opts.durability == Durability::Sync && !wrote.is_empty() {
            store.sync(&wrote)?;
        }

        let mut core = FeedCore {
            store,
            key,
            secret,
            bitfield: loaded.bitfield,
            length: 0,
            byte_length: 0,
            roots: Vec::new(),
            downloaded: 0,
            durability: opts.durability,
            on_write: opts.on_write.clone(),
        };
        core.recover_length()?;
        core.store.release_key_files();
        Ok(core)
    }

    /// Finds the committed length and drops bits a crash may have left past it.
    fn recover_length(&mut self) -> Result<()> {
        let claimed = tree::stored_length(&self.bitfield);
        let mut length = claimed;
        while length > 0 {
            let walked_back = length < claimed;
            if flat_tree::full_roots(2 * length).all(|r| self.bitfield.has_node(r)) {
                let roots = self.load_roots(length)?;
                match self.store.signature(length - 1)? {
                    Some(sig) if crypto::verify_roots(&self.key, &roots, length, &sig) => {
                        self.roots = roots;
                        break;
                    }
                    // The bitfield says this length was committed: its signature must hold.
                    Some(_) if !walked_back => {
                        return Err(self.corrupt(
                            FileKind::Signatures,
                            format!("the signature for length {length} does not verify"),
                        ));
                    }
                    // Below an uncommitted length, a signature that does not match the
                    // tree was left by an append that never completed (written by a
                    // version that did not clean up, or by JS): not a commit point.
                    Some(_) => tracing::warn!(
                        location = self.store.location(),
                        length,
                        "skipping a signature left by an append that never completed"
                    ),
                    None => {}
                }
            }
            // A batch signs only its last length: an unsigned length means a crash cut a
            // batch short. Fall back to the previous signed length.
            length = self.store.prev_signature(length - 1)?.map_or(0, |i| i + 1);
        }
        if length < claimed {
            tracing::warn!(
                location = self.store.location(),
                claimed,
                length,
                "feed was not closed cleanly; dropped blocks whose write had not completed"
            );
        }
        self.length = length;
        self.byte_length = self
            .roots
            .iter()
            .try_fold(0u64, |acc, r| acc.checked_add(r.size))
            .ok_or_else(|| {
                self.corrupt(
                    FileKind::Tree,
                    format!("root sizes for length {length} overflow"),
                )
            })?;
        self.bitfield.truncate(length);
        // Signatures past the length belong to appends or downloads that never committed.
        // Left in place they could pass for commit points after a later crash.
        if self.store.truncate_signatures(length)? && self.durability == Durability::Sync {
            self.store.sync(&[FileKind::Signatures])?;
        }

        // A data bit without its leaf node can only come from a torn bitfield write.
        let mut stray = Vec::new();
        let mut downloaded = 0;
        let mut i = 0;
        while let Some(next) = self.bitfield.next_block(i, length) {
            if self.bitfield.has_node(2 * next) {
                downloaded += 1;
            } else {
                stray.push(next);
            }
            i = next + 1;
        }
        for b in stray {
            self.bitfield.set_block(b, false);
        }
        self.downloaded = downloaded;
        if self.bitfield.is_dirty() {
            self.flush_bitfield()?;
        }
        Ok(())
    }

    fn corrupt(&self, file: FileKind, reason: String) -> Error {
        Error::Corrupt {
            file,
            location: self.store.location().to_string(),
            reason,
        }
    }

    /// A node the bitfield says we have; its absence from the tree file is corruption.
    fn required_node(&mut self, index: u64) -> Result<Node> {
        match self.store.node(index)? {
            Some(n) => Ok(n),
            None => Err(self.corrupt(
                FileKind::Tree,
                format!("node {index} is marked as stored but its record is missing"),
            )),
        }
    }

    fn load_roots(&mut self, length: u64) -> Result<Vec<Node>> {
        flat_tree::full_roots(2 * length)
            .map(|r| {
                if !self.bitfield.has_node(r) {
                    return Err(self.corrupt(
                        FileKind::Bitfield,
                        format!("root node {r} for length {length} is not marked as stored"),
                    ));
                }
                self.required_node(r)
            })
            .collect()
    }

    /// The feed's public key.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// Whether this copy holds the secret key.
    pub fn writable(&self) -> bool {
        self.secret.is_some()
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Sum of all block sizes.
    pub fn byte_len(&self) -> u64 {
        self.byte_length
    }

    /// Number of blocks held locally.
    pub fn downloaded_total(&self) -> u64 {
        self.downloaded
    }

    fn flush_bitfield(&mut self) -> Result<()> {
        let pages = self.bitfield.take_dirty();
        if let Err(e) = self.store.write_bitfield(&pages) {
            self.bitfield.mark_dirty(&pages);
            return Err(e);
        }
        if self.durability == Durability::Sync {
            self.store.sync(&[FileKind::Bitfield])?;
        }
        Ok(())
    }

    fn sync_payload(&self) -> Result<()> {
        if self.durability == Durability::Sync {
            self.store
                .sync(&[FileKind::Data, FileKind::Tree, FileKind::Signatures])?;
        }
        Ok(())
    }

    /// Appends blocks; returns the new length. All-or-nothing: on error nothing is stored.
    pub fn append(&mut self, blocks: &[&[u8]]) -> Result<u64> {
        let base = self.append_base()?;
        let bytes = check_blocks(base.start, blocks)?;
        if blocks.is_empty() {
            return Ok(self.length);
        }
        self.run_hook(base.start, blocks)?;
        let store = &self.store;
        let signed = if bytes >= 1 << 20 {
            // Hash while the block data is being written: large batches are bound by both.
            let mut leaves = Vec::with_capacity(blocks.len());
            let offset = self.byte_length;
            std::thread::scope(|s| {
                let writer = s.spawn(|| store.write_data(offset, blocks));
                crypto::leaf_hashes(blocks, &mut leaves);
                writer.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        op: "writing",
                        file: FileKind::Data,
                        location: store.location().to_string(),
                        source: std::io::Error::other("data writer thread panicked"),
                    })
                })
            })?;
            base.sign_hashed(blocks, &leaves)
        } else {
            let signed = base.sign_hashed(blocks, &hashes_of(blocks));
            store.write_data(self.byte_length, blocks)?;
            signed
        };
        self.write_signed(signed)
    }

    /// What an append made now is computed against (see [`AppendBase`]).
    pub fn append_base(&self) -> Result<AppendBase> {
        let Some(secret) = self.secret.clone() else {
            return Err(Error::NotWritable { key: self.key });
        };
        Ok(AppendBase {
            key: self.key,
            start: self.length,
            roots: self.roots.clone(),
            secret,
        })
    }

    /// Writes `blocks`, hashed and signed as `signed` while the feed was not locked;
    /// returns the new length. If the feed is no longer where `signed` was computed
    /// (another append came first), the blocks are hashed and signed again here.
    pub fn commit_append(&mut self, signed: SignedAppend, blocks: &[&[u8]]) -> Result<u64> {
        if signed.key != self.key || signed.start != self.length || signed.count != blocks.len() {
            return self.append(blocks);
        }
        if blocks.is_empty() {
            return Ok(self.length);
        }
        self.run_hook(signed.start, blocks)?;
        self.store.write_data(self.byte_length, blocks)?;
        self.write_signed(signed)
    }

    fn run_hook(&self, start: u64, blocks: &[&[u8]]) -> Result<()> {
        if let Some(hook) = &self.on_write {
            for (i, b) in blocks.iter().enumerate() {
                let index = start + i as u64;
                hook(index, b, Origin::Local)
                    .map_err(|reason| Error::Rejected { index, reason })?;
            }
        }
        Ok(())
    }

    /// Stores what makes written block data an append: tree nodes, the signature, then
    /// the bitfield, which commits it.
    fn write_signed(&mut self, signed: SignedAppend) -> Result<u64> {
        let SignedAppend {
            start,
            count,
            bytes,
            nodes,
            roots,
            signature,
            ..
        } = signed;
        let length = start + count as u64;
        self.store
            .put_appended(2 * start, 2 * count as u64 - 1, &nodes, &roots)?;
        self.store.put_signature(length - 1, &signature)?;
        self.sync_payload()?;

        self.bitfield.set_blocks(start, length);
        self.bitfield
            .set_nodes(nodes.iter().map(|n| n.index), 2 * start);
        if let Err(e) = self.flush_bitfield() {
            // Undo in memory; the pages are dirty again and the next flush rewrites them.
            for i in start..length {
                self.bitfield.set_block(i, false);
            }
            for n in &nodes {
                self.bitfield.remove_node(n.index);
            }
            return Err(e);
        }
        self.roots = roots;
        self.length = length;
        self.byte_length += bytes;
        self.downloaded += count as u64;
        Ok(length)
    }

    /// The data file's path, when the feed is stored in files.
    pub fn data_path(&self) -> Option<&std::path::Path> {
        self.store.data_path()
    }

    /// Whether block `index` is stored locally.
    pub fn has(&self, index: u64) -> bool {
        self.bitfield.has_block(index)
    }

    /// Whether the leaf node of block `index` is stored.
    pub fn has_hash(&self, index: u64) -> bool {
        index < MAX_BLOCKS && self.bitfield.has_node(2 * index)
    }

    /// Byte offset and size of block `index` (its left roots and leaf must be stored).
    pub fn block_location(&mut self, index: u64) -> Result<(u64, u64)> {
        let offset = self.byte_offset(index)?;
        let leaf = self.required_node(2 * index)?;
        if leaf.size > MAX_BLOCK_SIZE as u64 {
            return Err(self.corrupt(
                FileKind::Tree,
                format!("leaf of block {index} claims {} bytes", leaf.size),
            ));
        }
        Ok((offset, leaf.size))
    }

    /// Block `index` if it is stored locally.
    pub fn get(&mut self, index: u64) -> Result<Option<Vec<u8>>> {
        if !self.bitfield.has_block(index) {
            return Ok(None);
        }
        let (offset, size) = self.block_location(index)?;
        self.store.read_data(offset, size).map(Some)
    }

    /// Reads `size` bytes of block data at `offset` (from [`FeedCore::block_location`]).
    pub fn read_data(&self, offset: u64, size: u64) -> Result<Vec<u8>> {
        self.store.read_data(offset, size)
    }

    /// Reads consecutive locally stored blocks from `start`: as many as are present, up to
    /// `end` and about `max_bytes` (at least one block if `start` is present). Returns the
    /// bytes back to back and each block's size.
    pub fn read_run(
        &mut self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, Vec<u64>)> {
        let stop = self
            .bitfield
            .first_missing(start, end.min(start.saturating_add(4096)))
            .unwrap_or(end.min(start.saturating_add(4096)));
        if stop <= start {
            return Ok((Vec::new(), Vec::new()));
        }
        let (offset, _) = self.block_location(start)?;
        let mut sizes = self.store.leaf_sizes(start, stop)?;
        if (sizes.len() as u64) < stop - start {
            return Err(self.corrupt(
                FileKind::Tree,
                format!("leaf nodes of blocks {start}..{stop} are missing"),
            ));
        }
        if let Some(bad) = sizes.iter().position(|&s| s > MAX_BLOCK_SIZE as u64) {
            return Err(self.corrupt(
                FileKind::Tree,
                format!(
                    "leaf of block {} claims {} bytes",
                    start + bad as u64,
                    sizes[bad]
                ),
            ));
        }
        let mut total = 0;
        let mut keep = 0;
        for s in &sizes {
            if keep > 0 && total + s > max_bytes {
                break;
            }
            total += s;
            keep += 1;
        }
        sizes.truncate(keep);
        Ok((self.store.read_data(offset, total)?, sizes))
    }

    /// The RLE-compressed bitfield of stored blocks for a `Have` reply to a `Want`.
    pub fn compressed_bitfield(&self, start: u64, length: u64) -> Vec<u8> {
        self.bitfield.compress(start, length)
    }

    /// Number of stored blocks in `[start, end)`.
    pub fn downloaded(&self, start: u64, end: u64) -> u64 {
        self.bitfield.count_blocks(start, end)
    }

    /// Bytes of the blocks stored in `[start, end)`, from the tree's node sizes (no block
    /// data is read): a stored run that fills a subtree whose node is stored counts that
    /// node's size, so a fully stored range costs a few node reads, not one per block.
    pub fn downloaded_bytes(&mut self, start: u64, end: u64) -> Result<u64> {
        let end = end.min(self.length);
        let mut total = 0u64;
        let mut at = start;
        while let Some(first) = self.bitfield.next_block(at, end) {
            // The largest subtree starting at `first` that ends by `end`.
            let mut depth = 0u32;
            while depth < 52 && first % (2 << depth) == 0 && first + (2 << depth) <= end {
                depth += 1;
            }
            loop {
                let span = 1u64 << depth;
                let node = flat_tree::index(depth, first >> depth);
                let whole = depth == 0
                    || (self.bitfield.has_node(node)
                        && self.bitfield.first_missing(first, first + span).is_none());
                if whole {
                    // A stored block's leaf is always stored with it.
                    total = total.saturating_add(self.required_node(node)?.size);
                    at = first + span;
                    break;
                }
                depth -= 1;
            }
        }
        Ok(total)
    }

    /// Whether every block in `[start, end)` is stored.
    pub fn has_range(&self, start: u64, end: u64) -> bool {
        end <= start || self.bitfield.first_missing(start, end).is_none()
    }

    /// Removes blocks `[start, end)` from local storage. Returns whether anything changed.
    pub fn clear(&mut self, start: u64, end: u64) -> Result<bool> {
        let end = end.min(self.length.max(start));
        let mut changed = 0;
        for i in start..end {
            if self.bitfield.set_block(i, false) {
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(false);
        }
        self.downloaded -= changed;
        // Counted before any byte is removed (see `Feed::stored_file`).
        CLEARS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Free the bytes when the tree can say where they are (a sparse clone may not).
        let from = self.byte_offset(start);
        let to = if end == self.length {
            Ok(self.byte_length)
        } else {
            self.byte_offset(end)
        };
        if let (Ok(from), Ok(to)) = (from, to) {
            if to > from {
                self.store.delete_data(from, to - from)?;
            }
        }
        self.flush_bitfield()?;
        Ok(true)
    }

    /// Where blocks `[start, end)` are in the data file: their first byte and how many
    /// bytes they hold, from the tree (their nodes must be stored).
    pub fn byte_range(&mut self, start: u64, end: u64) -> Result<(u64, u64)> {
        let from = self.byte_offset(start)?;
        let to = match end == self.length {
            true => self.byte_length,
            false => self.byte_offset(end)?,
        };
        let length = to.checked_sub(from).ok_or_else(|| {
            self.corrupt(
                FileKind::Tree,
                format!("blocks {start}..{end} end before they start"),
            )
        })?;
        Ok((from, length))
    }

    /// Byte offset of block `index`: the sizes of the roots to its left.
    fn byte_offset(&mut self, index: u64) -> Result<u64> {
        let mut offset = 0u64;
        for r in flat_tree::full_roots(2 * index) {
            if !self.bitfield.has_node(r) {
                return Err(out_of_range(index, "its byte offset is not known locally"));
            }
            let size = self.required_node(r)?.size;
            offset = offset.checked_add(size).ok_or_else(|| {
                self.corrupt(
                    FileKind::Tree,
                    format!("node sizes left of block {index} overflow"),
                )
            })?;
        }
        Ok(offset)
    }

    /// Finds the block containing byte `bytes` (JS `_seek`).
    pub fn seek(&mut self, bytes: u64) -> Result<SeekOutcome> {
        if bytes == self.byte_length {
            return Ok(SeekOutcome::Found {
                index: self.length,
                offset: 0,
            });
        }
        if bytes > self.byte_length {
            return Err(out_of_range(
                bytes,
                format!(
                    "byte offset past the end of the feed ({} bytes)",
                    self.byte_length
                ),
            ));
        }
        let mut remaining = bytes;
        for r in flat_tree::full_roots(2 * self.length) {
            let root = self.required_node(r)?;
            if root.size <= remaining {
                remaining -= root.size;
                continue;
            }
            let mut top = root.index;
            loop {
                if flat_tree::depth(top) == 0 {
                    return Ok(SeekOutcome::Found {
                        index: top / 2,
                        offset: remaining,
                    });
                }
                let left = flat_tree::left_child(top);
                if !self.bitfield.has_node(left) {
                    return Ok(SeekOutcome::Unresolved { node: top });
                }
                let l = self.required_node(left)?;
                if l.size > remaining {
                    top = left;
                } else {
                    remaining -= l.size;
                    top = flat_tree::right_child(top);
                }
            }
        }
        Err(out_of_range(bytes, "byte offset not covered by the tree"))
    }

    /// The first stored signature at `index` or later (within the feed).
    pub fn signature(&self, index: u64) -> Result<SignatureAt> {
        if index >= self.length {
            return Err(out_of_range(
                index,
                format!("the feed has {} blocks", self.length),
            ));
        }
        match self.store.next_signature(index, self.length)? {
            Some((index, signature)) => Ok(SignatureAt { index, signature }),
            None => Err(Error::NoSignature { index }),
        }
    }

    /// The tree roots for length `index + 1`.
    pub fn root_hashes(&mut self, index: u64) -> Result<Vec<Node>> {
        if index >= self.length {
            return Err(out_of_range(
                index,
                format!("the feed has {} blocks", self.length),
            ));
        }
        let length = index + 1;
        flat_tree::full_roots(2 * length)
            .map(|r| {
                if !self.bitfield.has_node(r) {
                    return Err(Error::NotAvailable { index });
                }
                self.required_node(r)
            })
            .collect()
    }

    /// The leaf nodes of blocks `[start, end)` (see [`crate::Feed::leaves`]).
    pub fn leaves(&mut self, start: u64, end: u64) -> Result<Vec<Node>> {
        if start > end || end > self.length {
            return Err(out_of_range(
                end,
                format!("leaves {start}..{end} of a feed of {} blocks", self.length),
            ));
        }
        if let Some(missing) = (start..end).find(|&i| !self.bitfield.has_node(2 * i)) {
            return Err(Error::NotAvailable { index: missing });
        }
        let leaves = self.store.leaves(start, end)?;
        if (leaves.len() as u64) < end - start {
            return Err(self.corrupt(
                FileKind::Tree,
                format!("leaf nodes of blocks {start}..{end} are missing"),
            ));
        }
        Ok(leaves)
    }

    /// Whether `signature` signs the feed up to and including block `index`.
    pub fn verify(&mut self, index: u64, signature: &Signature) -> Result<bool> {
        let roots = self.root_hashes(index)?;
        Ok(crypto::verify_roots(
            &self.key,
            &roots,
            index + 1,
            signature,
        ))
    }

    /// Re-hashes every stored block against its leaf; clears blocks that do not match.
    pub fn audit(&mut self) -> Result<AuditReport> {
        let mut report = AuditReport::default();
        let mut i = 0;
        let mut bad = Vec::new();
        while let Some(block) = self.bitfield.next_block(i, self.length) {
            let ok = match (self.store.node(2 * block)?, self.block_location(block)) {
                (Some(leaf), Ok((offset, size))) => match self.store.read_data(offset, size) {
                    Ok(data) => crypto::leaf_hash(&data) == leaf.hash,
                    Err(Error::Corrupt { .. }) => false,
                    Err(e) => return Err(e),
                },
                (None, _) => false,
                (_, Err(Error::Corrupt { .. })) => false,
                (_, Err(e)) => return Err(e),
            };
            if ok {
                report.valid += 1;
            } else {
                report.invalid += 1;
                bad.push(block);
            }
            i = block + 1;
        }
        for block in bad {
            tracing::warn!(
                location = self.store.location(),
                block,
                "audit: block data does not match its hash; cleared"
            );
            self.bitfield.set_block(block, false);
            self.downloaded -= 1;
        }
        if self.bitfield.is_dirty() {
            self.flush_bitfield()?;
        }
        Ok(report)
    }

    /// The request digest for block `index`.
    pub fn digest(&self, index: u64) -> u64 {
        if index >= MAX_BLOCKS {
            return 0;
        }
        tree::digest(&self.bitfield, 2 * index)
    }

    /// The proof a peer needs for block `index`, given what it said it has.
    pub fn proof(
        &mut self,
        index: u64,
        request: ProofRequest,
        remote: &mut RemoteTree,
    ) -> Result<Proof> {
        if index >= MAX_BLOCKS {
            return Err(out_of_range(index, "beyond 2^53 blocks"));
        }
        let plan = tree::proof_plan(
            &self.bitfield,
            2 * index,
            request.hash,
            request.digest,
            remote,
        )
        .ok_or(Error::NotAvailable { index })?;
        let nodes = plan
            .nodes
            .iter()
            .map(|&n| self.required_node(n))
            .collect::<Result<Vec<_>>>()?;
        let signature = if plan.verified_by > 0 {
            let signed = plan.verified_by / 2 - 1;
            Some(
                self.store
                    .signature(signed)?
                    .ok_or(Error::NoSignature { index: signed })?,
            )
        } else {
            None
        };
        Ok(Proof { nodes, signature })
    }

    /// Verifies blocks (their data, or only their hash when `data` is `None`) against their
    /// proofs and stores them with the proofs' nodes and signatures, persisted with one
    /// bitfield write (and one sync). Nothing is stored for a block that fails. Each block
    /// comes with its leaf hash, computed by the caller before taking the feed's lock.
    /// Stops at the first block that fails; the outer error is a failure to persist the
    /// ones that succeeded.
    pub fn put_batch(
        &mut self,
        items: Vec<(u64, Option<HashedBlock<'_>>, Proof)>,
        origin: Origin,
    ) -> Result<Vec<Result<PutOutcome>>> {
        let mut results = Vec::with_capacity(items.len());
        for (index, block, proof) in items {
            let r = self.verify_and_store(index, block, proof, origin);
            let failed = r.is_err();
            results.push(r);
            if failed {
                break;
            }
        }
        self.sync_payload()?;
        self.flush_bitfield()?;
        Ok(results)
    }

    fn verify_and_store(
        &mut self,
        index: u64,
        block: Option<HashedBlock<'_>>,
        proof: Proof,
        origin: Origin,
    ) -> Result<PutOutcome> {
        let data = block.map(|(d, _)| d);
        let invalid = |reason: String| Error::InvalidProof { index, reason };
        if index >= MAX_BLOCKS {
            return Err(invalid("index beyond 2^53 blocks".into()));
        }
        if let Some(bad) = proof.nodes.iter().find(|n| n.index >= 2 * MAX_BLOCKS) {
            return Err(invalid(format!(
                "proof node {} is beyond 2^53 blocks",
                bad.index
            )));
        }
        if let Some(d) = data {
            if d.len() > MAX_BLOCK_SIZE {
                return Err(invalid(format!(
                    "block of {} bytes exceeds {MAX_BLOCK_SIZE}",
                    d.len()
                )));
            }
        }

        // Walk up from the leaf: find the nearest node we already trust, and the local
        // siblings the proof leaves out.
        let leaf = 2 * index;
        let mut trusted = None;
        let mut local_siblings = Vec::new();
        let mut next = leaf;
        let mut used = usize::from(data.is_none());
        loop {
            if self.bitfield.has_node(next) {
                trusted = Some(next);
                break;
            }
            if flat_tree::depth(next) >= 60 {
                break;
            }
            let sib = flat_tree::sibling(next);
            next = flat_tree::parent(next);
            if proof.nodes.get(used).is_some_and(|n| n.index == sib) {
                used += 1;
                continue;
            }
            if !self.bitfield.has_node(sib) {
                break;
            }
            local_siblings.push(sib);
        }
        if trusted.is_none() && self.bitfield.has_node(next) {
            trusted = Some(next);
        }
        let mut local: std::collections::VecDeque<Node> = local_siblings
            .into_iter()
            .map(|n| self.required_node(n))
            .collect::<Result<_>>()?;
        let trusted = trusted.map(|t| self.required_node(t)).transpose()?;

        let mut remote: std::collections::VecDeque<Node> = proof.nodes.into();
        let mut top = match block {
            Some((d, hash)) => Node {
                index: leaf,
                hash,
                size: d.len() as u64,
            },
            None => {
                let n = remote
                    .pop_front()
                    .ok_or_else(|| invalid("hash-only proof without the block's node".into()))?;
                if n.index != leaf {
                    return Err(invalid(format!(
                        "hash-only proof starts with node {}, not {leaf}",
                        n.index
                    )));
                }
                n
            }
        };
        let matches = |t: &Option<Node>, n: &Node| {
            t.as_ref()
                .is_some_and(|t| t.index == n.index && t.hash == n.hash)
        };

        let mut visited = Vec::new();
        if matches(&trusted, &top) {
            return self.write_verified(index, data, visited, None, origin);
        }
        loop {
            let sib = flat_tree::sibling(top.index);
            let node = if remote.front().is_some_and(|n| n.index == sib) {
                let n = remote.pop_front().unwrap_or(top);
                visited.push(n);
                n
            } else if local.front().is_some_and(|n| n.index == sib) {
                local.pop_front().unwrap_or(top)
            } else {
                break;
            };
            visited.push(top);
            let size = top
                .size
                .checked_add(node.size)
                .ok_or_else(|| invalid("node sizes overflow".into()))?;
            top = Node {
                index: flat_tree::parent(top.index),
                hash: crypto::parent_hash(&top, &node),
                size,
            };
            if matches(&trusted, &top) {
                return self.write_verified(index, data, visited, None, origin);
            }
            if flat_tree::depth(top.index) >= 60 {
                return Err(invalid("proof climbs too high".into()));
            }
        }

        // No trusted node reached: `top` must be a root of a signed length.
        let last = remote.back().map_or(top.index, |n| n.index);
        let verified_by = flat_tree::right_span(top.index).max(flat_tree::right_span(last)) + 2;
        let length = verified_by / 2;
        if length > MAX_BLOCKS {
            return Err(invalid(format!("proof claims {length} blocks")));
        }
        let mut roots = Vec::new();
        for r in flat_tree::full_roots(verified_by) {
            let node = if r == top.index {
                visited.push(top);
                top
            } else if remote.front().is_some_and(|n| n.index == r) {
                let n = remote.pop_front().unwrap_or(top);
                visited.push(n);
                n
            } else if self.bitfield.has_node(r) {
                self.required_node(r)?
            } else {
                return Err(invalid(format!(
                    "missing tree root {r} needed to verify length {length}"
                )));
            };
            roots.push(node);
        }
        let signature = match proof.signature {
            Some(sig) if crypto::verify_roots(&self.key, &roots, length, &sig) => sig,
            Some(_) => {
                return Err(invalid(format!(
                    "signature for length {length} does not verify"
                )))
            }
            None => {
                return Err(invalid(
                    "the proof reaches the roots but carries no signature".into(),
                ))
            }
        };
        let byte_length = roots
            .iter()
            .try_fold(0u64, |acc, r| acc.checked_add(r.size))
            .ok_or_else(|| invalid("root sizes overflow".into()))?;
        let grew = length > self.length;
        let mut outcome =
            self.write_verified(index, data, visited, Some((length - 1, signature)), origin)?;
        if grew {
            self.length = length;
            self.byte_length = byte_length;
            self.roots = roots;
            outcome.length_grew = true;
        }
        Ok(outcome)
    }

    fn write_verified(
        &mut self,
        index: u64,
        data: Option<&[u8]>,
        nodes: Vec<Node>,
        signature: Option<(u64, Signature)>,
        origin: Origin,
    ) -> Result<PutOutcome> {
        if let (Some(hook), Some(d)) = (&self.on_write, data) {
            hook(index, d, origin).map_err(|reason| Error::Rejected { index, reason })?;
        }
        let already_had = self.bitfield.has_block(index);
        if let Some(d) = data.filter(|_| !already_had) {
            // Byte offset from the left roots, taken from the proof or from storage.
            let mut offset = 0u64;
            for r in flat_tree::full_roots(2 * index) {
                let size = match nodes.iter().find(|n| n.index == r) {
                    Some(n) => n.size,
                    None if self.bitfield.has_node(r) => self.required_node(r)?.size,
                    None => {
                        return Err(Error::InvalidProof {
                            index,
                            reason: format!("node {r} needed to place the block is unknown"),
                        });
                    }
                };
                offset = offset.checked_add(size).ok_or(Error::InvalidProof {
                    index,
                    reason: "sizes overflow".into(),
                })?;
            }
            if !d.is_empty() {
                self.store.write_data(offset, &[d])?;
            }
        }
        self.store.put_nodes(&nodes)?;
        if let Some((at, sig)) = &signature {
            self.store.put_signature(*at, sig)?;
        }
        // The caller syncs and writes the bitfield (once per batch): data, nodes and
        // signature first, the bitfield last, as for appends.
        for n in &nodes {
            self.bitfield.add_node(n.index);
        }
        self.bitfield.add_node(2 * index);
        let downloaded = data.is_some() && self.bitfield.set_block(index, true);
        if downloaded {
            self.downloaded += 1;
        }
        Ok(PutOutcome {
            downloaded,
            length_grew: false,
        })
    }
}
