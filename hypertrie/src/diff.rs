//! Differences between two versions of a trie (spec trie.md §6.7, JS `lib/diff.js`): both
//! are walked in lockstep from the prefix, skipping a sub-trie as soon as both sides point
//! at the same node, so the cost follows the size of the change. The walk order, and
//! which node pairs up with which, are JS's. A [`Diff`] yields one entry at a time, so a
//! large diff is never held whole.

use futures::Stream;

use crate::path::{is_checkpoint, END};
use crate::{Error, GetOptions, Hypertrie, Node};

/// Options of [`Hypertrie::diff`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Compare hidden keys.
    pub hidden: bool,
    /// Leave out keys only the other version has (JS `skipLeftNull`).
    pub skip_left_null: bool,
    /// Leave out keys only this version has (JS `skipRightNull`).
    pub skip_right_null: bool,
}

/// A key whose node differs between the two versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    /// The key.
    pub key: String,
    /// Its node in this version, if it has one.
    pub left: Option<Node>,
    /// Its node in the other version.
    pub right: Option<Node>,
}

/// One pair of sub-tries still to compare, from path position `i`.
#[derive(Clone, Debug)]
struct Pair {
    i: usize,
    left: Option<Node>,
    right: Option<Node>,
    skip: bool,
}

/// A node to load into a pair once the current step is done (JS loads asynchronously, so
/// a step never sees the nodes it asked for).
struct Load {
    at: usize,
    seq: u64,
    left: bool,
}

fn seq(node: &Option<Node>) -> u64 {
    node.as_ref().map_or(0, |n| n.seq)
}

fn done(node: &Option<Node>, i: usize) -> bool {
    node.as_ref().is_some_and(|n| i >= n.path.len())
}

/// The bucket at `i` as JS sees it: seqs by slot, 0 for empty.
fn bucket(node: &Option<Node>, i: usize) -> Vec<u64> {
    let Some(node) = node else {
        return Vec::new();
    };
    let slots: Vec<(usize, u64)> = node.buckets.slots(i).collect();
    let len = slots.last().map_or(0, |&(s, _)| s + 1);
    let mut out = vec![0; len];
    for (s, seq) in slots {
        out[s] = seq;
    }
    out
}

fn not_in_bucket(j: usize, seq: u64, bucket: &[u64]) -> bool {
    !(j..bucket.len()).step_by(5).any(|s| bucket[s] == seq)
}

/// The pair at `at`, pushed if the stack ends there.
fn pair_at(stack: &mut Vec<Pair>, at: usize, i: usize) -> &mut Pair {
    if stack.len() == at {
        stack.push(Pair {
            i,
            left: None,
            right: None,
            skip: false,
        });
    }
    &mut stack[at]
}

/// Pairs `start..end`, pushed for one symbol at checkpoint `i`, hold nodes whose hashes
/// agree up to `i`: pairs them again so that each pair joins nodes with the same component
/// string there, the unmatched ones in pairs of their own. Without a 64-bit SipHash
/// collision there is at most one pair, already right, and nothing moves.
///
/// JS means to do this, but compares at position `i + 1`, never a checkpoint: it never
/// splits a pair of different strings (they are then reported as one key, or a node as
/// both added and removed), and with several pairs its reshuffle may loop forever.
fn untangle(stack: &mut Vec<Pair>, start: usize, end: usize, i: usize) {
    let differs = |a: &Node, b: &Node| a.path.differs(&b.path, i);
    let tangled = match &stack[start..end] {
        [pair] => matches!((&pair.left, &pair.right), (Some(l), Some(r)) if differs(l, r)),
        _ => true,
    };
    if !tangled {
        return;
    }
    // Pairs marked skip hold no node: they are dropped.
    let next_i = stack[start].i;
    let old: Vec<Pair> = stack.drain(start..end).collect();
    let (lefts, mut rights): (Vec<Option<Node>>, Vec<Option<Node>>) =
        old.into_iter().map(|p| (p.left, p.right)).unzip();
    let pair = |left, right| Pair {
        i: next_i,
        left,
        right,
        skip: false,
    };
    let mut pairs = Vec::new();
    for left in lefts.into_iter().flatten() {
        let matched = rights
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|r| !differs(&left, r)))
            .and_then(Option::take);
        pairs.push(pair(Some(left), matched));
    }
    pairs.extend(rights.into_iter().flatten().map(|r| pair(None, Some(r))));
    stack.splice(start..start, pairs);
}

/// Where a diff resumes: the pairs of nodes it has still to compare, encoded as JS's
/// `diff.checkpoint()` encodes them (per pair, from the bottom of the stack: varints of
/// the path position and the left and right seqs, 0 for none), so the bytes of either
/// side resume on the other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffCheckpoint(Vec<u8>);

impl DiffCheckpoint {
    /// A checkpoint from its bytes (checked when a diff resumes from it).
    pub fn from_bytes(bytes: Vec<u8>) -> DiffCheckpoint {
        DiffCheckpoint(bytes)
    }

    /// The encoded checkpoint.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `(position, left seq, right seq)` triples.
    fn decode(&self) -> Result<Vec<(u64, u64, u64)>, Error> {
        let next = |at: &mut usize, what: &str| -> Result<u64, Error> {
            let (v, n) = varint::decode(&self.0[*at..]).map_err(|e| Error::Checkpoint {
                reason: format!("the {what} at byte {at}: {e}"),
            })?;
            *at += n;
            Ok(v)
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.0.len() {
            let i = next(&mut at, "position")?;
            let left = next(&mut at, "left seq")?;
            out.push((i, left, next(&mut at, "right seq")?));
        }
        Ok(out)
    }
}

/// How a diff starts: from a prefix, or from a checkpoint.
#[derive(Debug)]
enum Start {
    Prefix { prefix: String, version: u64 },
    Checkpoint(DiffCheckpoint),
}

/// A diff between two versions of a trie, walked one entry at a time
/// ([`Hypertrie::diff`]).
#[derive(Debug)]
pub struct Diff {
    trie: Hypertrie,
    options: DiffOptions,
    /// Nodes are loaded from blocks below this (both versions' blocks).
    len: u64,
    /// Set until the walk starts.
    start: Option<Start>,
    stack: Vec<Pair>,
}

impl Hypertrie {
    /// The keys under `prefix` whose nodes differ between this version (left) and version
    /// `version` (right), in JS's walk order: left only = added since, right only = gone
    /// since, both = changed (or rewritten by a neighbour's delete).
    pub fn diff(&self, version: u64, prefix: &str, options: DiffOptions) -> Diff {
        let other = self.checkout(version);
        Diff {
            trie: self.clone(),
            options,
            // Both versions' nodes are blocks of the same feed.
            len: self.version().max(other.version()),
            start: Some(Start::Prefix {
                prefix: prefix.to_string(),
                version: other.version(),
            }),
            stack: Vec::new(),
        }
    }

    /// The rest of a diff from `checkpoint` ([`Diff::checkpoint`], here or in JS:
    /// `trie.diff(checkpointBuffer)`). Its nodes are read from this trie's feed, up to this
    /// version; the options should be the ones the diff was started with.
    pub fn diff_from_checkpoint(&self, checkpoint: DiffCheckpoint, options: DiffOptions) -> Diff {
        Diff {
            trie: self.clone(),
            options,
            len: self.version(),
            start: Some(Start::Checkpoint(checkpoint)),
            stack: Vec::new(),
        }
    }
}

impl Diff {
    /// The node at `seq`, `None` for a reset node.
    async fn load(&self, seq: u64) -> Result<Option<Node>, Error> {
        if seq == 0 || seq >= self.len {
            return Err(Error::Decode {
                seq,
                reason: format!("a pointer past the diffed versions' length {}", self.len),
            });
        }
        // A diff walks through the nodes as a listing does: blocks are read in runs.
        let node = self.trie.load(seq, true).await?;
        Ok((!node.is_reset()).then(|| Node::clone(&node)))
    }

    async fn open(&mut self, start: Start) -> Result<(), Error> {
        let (prefix, version) = match start {
            Start::Prefix { prefix, version } => (prefix, version),
            Start::Checkpoint(checkpoint) => {
                for (i, left, right) in checkpoint.decode()? {
                    let i = usize::try_from(i).map_err(|_| Error::Checkpoint {
                        reason: format!("path position {i}"),
                    })?;
                    let left = self.load_or_none(left).await?;
                    let right = self.load_or_none(right).await?;
                    self.stack.push(Pair {
                        i,
                        left,
                        right,
                        skip: false,
                    });
                }
                return Ok(());
            }
        };
        let get = GetOptions {
            hidden: self.options.hidden,
            prefix: true,
            closest: false,
        };
        let left = self.trie.get(&prefix, get).await?;
        let right = self.trie.checkout(version).get(&prefix, get).await?;
        self.stack.push(Pair {
            i: crate::Path::new(&prefix, self.options.hidden).len() - 1,
            left,
            right,
            skip: false,
        });
        Ok(())
    }

    /// The node at `seq`; none for 0 (JS `getBySeq`).
    async fn load_or_none(&self, seq: u64) -> Result<Option<Node>, Error> {
        match seq {
            0 => Ok(None),
            seq => self.load(seq).await,
        }
    }

    /// Where the diff stands: [`Hypertrie::diff_from_checkpoint`] resumes from it and
    /// yields the entries this diff has not yet yielded. Before the first
    /// [`Diff::next`] it is empty (nothing to resume), as in JS.
    pub fn checkpoint(&self) -> DiffCheckpoint {
        let mut out = Vec::new();
        for pair in self.stack.iter().filter(|p| !p.skip) {
            out.extend_from_slice(&varint::encode(pair.i as u64));
            out.extend_from_slice(&varint::encode(seq(&pair.left)));
            out.extend_from_slice(&varint::encode(seq(&pair.right)));
        }
        DiffCheckpoint(out)
    }

    /// The next differing key, `None` when the walk is done. After an error the diff is
    /// over.
    pub async fn next(&mut self) -> Result<Option<DiffEntry>, Error> {
        let result = self.step().await;
        if result.is_err() {
            self.stack.clear();
        }
        result
    }

    /// The remaining entries as a stream (it ends after an error).
    pub fn into_stream(self) -> impl Stream<Item = Result<DiffEntry, Error>> {
        futures::stream::try_unfold(self, |mut diff| async move {
            Ok(diff.next().await?.map(|entry| (entry, diff)))
        })
    }

    /// All remaining entries.
    pub async fn collect(mut self) -> Result<Vec<DiffEntry>, Error> {
        let mut out = Vec::new();
        while let Some(entry) = self.next().await? {
            out.push(entry);
        }
        Ok(out)
    }

    async fn step(&mut self) -> Result<Option<DiffEntry>, Error> {
        if let Some(start) = self.start.take() {
            self.open(start).await?;
        }
        let options = self.options;
        let entry = |left: Option<Node>, right: Option<Node>| {
            let key = left
                .as_ref()
                .or(right.as_ref())
                .map(|n| n.key().to_string());
            DiffEntry {
                key: key.unwrap_or_default(),
                left,
                right,
            }
        };
        while let Some(Pair {
            i,
            left,
            right,
            skip,
        }) = self.stack.pop()
        {
            if skip || seq(&left) == seq(&right) {
                continue;
            }
            let (done_left, done_right) = (done(&left, i), done(&right, i));
            if done_left && done_right {
                return Ok(Some(entry(left, right)));
            }
            if right.is_none() && left.is_some() && options.skip_right_null {
                continue;
            }
            if right.is_some() && left.is_none() && options.skip_left_null {
                continue;
            }
            let stack = &mut self.stack;
            let left_val = left.as_ref().map_or(5, |n| n.path.symbol(i) as usize);
            let right_val = right.as_ref().map_or(6, |n| n.path.symbol(i) as usize);
            let (left_bucket, right_bucket) = (bucket(&left, i), bucket(&right, i));
            let mut loads: Vec<Load> = Vec::new();
            // Pair ranges to check for collisions once their nodes have loaded.
            let mut checks: Vec<(usize, usize)> = Vec::new();
            for j in 0..=END as usize {
                let left_seq = if left_val == j { seq(&left) } else { 0 };
                let right_seq = if right_val == j { seq(&right) } else { 0 };
                let len = stack.len();
                let (mut left_len, mut right_len) = (len, len);
                if left_seq != right_seq {
                    if !done_left && left_seq != 0 && not_in_bucket(j, left_seq, &right_bucket) {
                        pair_at(stack, left_len, i + 1).left = left.clone();
                        left_len += 1;
                    }
                    if !done_right && right_seq != 0 && not_in_bucket(j, right_seq, &left_bucket) {
                        pair_at(stack, right_len, i + 1).right = right.clone();
                        right_len += 1;
                    }
                }
                if !done_left {
                    let push_left =
                        !options.skip_right_null || right_bucket.get(j).is_some_and(|&s| s != 0);
                    for s in (j..left_bucket.len()).step_by(5) {
                        let seq = left_bucket[s];
                        if seq == 0 {
                            break;
                        }
                        if seq != right_seq && not_in_bucket(j, seq, &right_bucket) {
                            let at = left_len;
                            left_len += 1;
                            let top = pair_at(stack, at, i + 1);
                            if push_left || top.right.is_some() {
                                loads.push(Load {
                                    at,
                                    seq,
                                    left: true,
                                });
                            } else {
                                top.skip = true;
                            }
                        }
                    }
                }
                if !done_right {
                    let push_right =
                        !options.skip_left_null || left_bucket.get(j).is_some_and(|&s| s != 0);
                    for s in (j..right_bucket.len()).step_by(5) {
                        let seq = right_bucket[s];
                        if seq == 0 {
                            break;
                        }
                        if seq != left_seq && not_in_bucket(j, seq, &left_bucket) {
                            let at = right_len;
                            right_len += 1;
                            let top = pair_at(stack, at, i + 1);
                            if push_right || top.left.is_some() {
                                loads.push(Load {
                                    at,
                                    seq,
                                    left: false,
                                });
                            } else {
                                top.skip = true;
                            }
                        }
                    }
                }
                let end = stack.len();
                if is_checkpoint(i) && end > len {
                    checks.push((len, end));
                }
            }
            for load in loads {
                if let Some(node) = self.load(load.seq).await? {
                    let pair = &mut self.stack[load.at];
                    if load.left {
                        pair.left = Some(node);
                    } else {
                        pair.right = Some(node);
                    }
                }
            }
            // From the last range: re-pairing one moves only the pairs above it.
            while let Some((start, end)) = checks.pop() {
                untangle(&mut self.stack, start, end, i);
            }
            if done_left {
                return Ok(Some(entry(left, None)));
            } else if done_right {
                return Ok(Some(entry(None, right)));
            }
        }
        Ok(None)
    }
}
