//! dht-rpc's routing table (k-bucket 5 with the local id, spec §2.10), without I/O: a
//! binary tree of buckets of [`K`] contacts where only the bucket whose range holds the
//! local id splits. Such a tree is a spine: bucket `i` holds the contacts whose id first
//! differs from ours at bit `i` (counted from the most significant), the last bucket
//! those that share at least as many leading bits with us as it is deep. So it holds at
//! most 256 × [`K`] contacts whatever ids arrive. Within a bucket, contacts go from
//! least to most recently seen; what to do with a newcomer for a full bucket that cannot
//! split (ping the least recently seen) is the node's decision ([`crate::node`]).

use std::net::SocketAddrV4;

use crate::compact::NodeInfo;
use crate::Id;

/// Contacts per bucket, and nodes a `_find_node` answer lists.
pub const K: usize = 20;
/// The least recently seen contacts of a full bucket that a newcomer may replace.
pub const CANDIDATES: usize = 3;

/// A node in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Its id.
    pub id: Id,
    /// Where it was last heard from.
    pub addr: SocketAddrV4,
    /// The maintenance tick it was last heard in.
    pub heard: u64,
    /// When it was last seen, as an order over the whole table (larger: more recent).
    seen: u64,
}

impl Contact {
    /// Its id and address.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.addr,
        }
    }
}

/// What adding a contact did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    /// It was new and has a place now.
    New,
    /// It was known: its address and tick are updated and it is the most recent now.
    Refreshed,
    /// Its bucket is full and cannot split: it was not added. These are the bucket's
    /// [`CANDIDATES`] least recently seen contacts, least recent first, that it may
    /// replace, and the bucket's index.
    Full {
        /// The bucket (stable: buckets are only ever appended by splits).
        bucket: usize,
        /// The least recently seen contacts.
        candidates: Vec<Contact>,
    },
    /// Our own id: never in our table.
    Own,
}

/// The routing table of the node with id `own`.
#[derive(Clone, Debug)]
pub struct Table {
    own: Id,
    /// Never empty; the last one is the one that splits.
    buckets: Vec<Vec<Contact>>,
    /// The next `seen` value.
    clock: u64,
}

/// Leading bits `a` and `b` share (256 when equal).
fn shared_prefix(a: &Id, b: &Id) -> usize {
    let distance = a.distance(b);
    match distance.iter().position(|byte| *byte != 0) {
        Some(i) => i * 8 + distance[i].leading_zeros() as usize,
        None => 256,
    }
}

impl Table {
    /// An empty table around `own`.
    pub fn new(own: Id) -> Table {
        Table {
            own,
            buckets: vec![Vec::new()],
            clock: 0,
        }
    }

    /// The id it is built around.
    pub fn own(&self) -> Id {
        self.own
    }

    /// Contacts held.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// Whether it holds no contact.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(Vec::is_empty)
    }

    /// Its buckets, each from least to most recently seen contact.
    pub fn buckets(&self) -> &[Vec<Contact>] {
        &self.buckets
    }

    /// The bucket `id` belongs in.
    pub fn bucket_of(&self, id: &Id) -> usize {
        shared_prefix(&self.own, id).min(self.buckets.len() - 1)
    }

    /// The contact with `id`.
    pub fn get(&self, id: &Id) -> Option<&Contact> {
        self.buckets[self.bucket_of(id)]
            .iter()
            .find(|c| c.id == *id)
    }

    /// Adds or refreshes `id` at `addr`, heard in maintenance tick `tick`, splitting the
    /// bucket it belongs in as needed.
    pub fn add(&mut self, id: Id, addr: SocketAddrV4, tick: u64) -> Added {
        if id == self.own {
            return Added::Own;
        }
        self.clock += 1;
        let seen = self.clock;
        loop {
            let index = self.bucket_of(&id);
            let splits = index + 1 == self.buckets.len();
            let bucket = &mut self.buckets[index];
            if let Some(at) = bucket.iter().position(|c| c.id == id) {
                bucket.remove(at);
                bucket.push(Contact {
                    id,
                    addr,
                    heard: tick,
                    seen,
                });
                return Added::Refreshed;
            }
            if bucket.len() < K {
                bucket.push(Contact {
                    id,
                    addr,
                    heard: tick,
                    seen,
                });
                return Added::New;
            }
            if !splits {
                return Added::Full {
                    bucket: index,
                    candidates: bucket[..CANDIDATES].to_vec(),
                };
            }
            // The last bucket holds the ids sharing `index` or more leading bits with
            // ours: those sharing more go one deeper. Ids differing from ours only in
            // the last bit are alone in theirs, so this never goes past 256.
            let (stay, deeper) = std::mem::take(bucket)
                .into_iter()
                .partition(|c| shared_prefix(&self.own, &c.id) == index);
            self.buckets[index] = stay;
            self.buckets.push(deeper);
        }
    }

    /// Makes the contact with `id` the most recently seen, as if heard again (its tick
    /// stays).
    pub fn touch(&mut self, id: &Id) {
        self.clock += 1;
        let seen = self.clock;
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        if let Some(at) = bucket.iter().position(|c| c.id == *id) {
            let mut contact = bucket.remove(at);
            contact.seen = seen;
            bucket.push(contact);
        }
    }

    /// Removes the contact with `id`, returning it.
    pub fn remove(&mut self, id: &Id) -> Option<Contact> {
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        let at = bucket.iter().position(|c| c.id == *id)?;
        Some(bucket.remove(at))
    }

    /// The `n` least recently seen contacts of the whole table, least recent first.
    pub fn least_recent(&self, n: usize) -> Vec<Contact> {
        let mut all: Vec<Contact> = self.buckets.iter().flatten().copied().collect();
        all.sort_by_key(|c| c.seen);
        all.truncate(n);
        all
    }

    /// The `n` contacts closest to `target` by XOR distance, closest first.
    pub fn closest(&self, target: &Id, n: usize) -> Vec<NodeInfo> {
        // Visit buckets from nearest to farthest from the target, so that only as many
        // are sorted as it takes: with `c` the bits the target shares with us, bucket
        // `c` is nearest, then every deeper one (their distances all have bit `c` as
        // their highest), then buckets `c - 1` down to 0.
        let last = self.buckets.len() - 1;
        let c = shared_prefix(&self.own, target).min(last);
        let mut order: Vec<usize> = vec![c];
        order.extend(c + 1..=last);
        order.extend((0..c).rev());
        let mut found: Vec<NodeInfo> = Vec::new();
        let mut groups = order.into_iter().peekable();
        while let Some(index) = groups.next() {
            found.extend(self.buckets[index].iter().map(Contact::info));
            // Buckets deeper than `c` form one group: their order among themselves
            // says nothing about their distances.
            let in_group = index > c && groups.peek().is_some_and(|next| *next > c);
            if found.len() >= n && !in_group {
                break;
            }
        }
        found.sort_by_key(|node| node.id.distance(target));
        found.truncate(n);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_counts_leading_equal_bits() {
        let zero = Id([0; 32]);
        assert_eq!(shared_prefix(&zero, &zero), 256);
        let mut one = [0; 32];
        one[0] = 0x80;
        assert_eq!(shared_prefix(&zero, &Id(one)), 0);
        one[0] = 0;
        one[1] = 0x01;
        assert_eq!(shared_prefix(&zero, &Id(one)), 15);
        one[1] = 0;
        one[31] = 1;
        assert_eq!(shared_prefix(&zero, &Id(one)), 255);
    }
}
