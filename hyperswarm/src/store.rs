//! Announcements a DHT node stores for others (@hyperswarm/dht's record-cache): per key,
//! a set of values in two generations. Adding puts a value in the fresh one; every
//! [`GENERATION`] the fresh generation becomes stale and the stale one is dropped, so a
//! value lives 8 to 16 minutes after it was last added. At most [`MAX_RECORDS`] values
//! are kept: past that the generations turn early.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a generation lasts: two thirds of JS's 12-minute maximum age.
pub const GENERATION: Duration = Duration::from_secs(8 * 60);
/// Values kept at most, in both generations together.
pub const MAX_RECORDS: usize = 65_536;

/// Values per key, in two generations.
#[derive(Debug)]
pub struct RecordStore<V> {
    fresh: HashMap<Vec<u8>, HashSet<V>>,
    stale: HashMap<Vec<u8>, HashSet<V>>,
    len: usize,
}

impl<V> Default for RecordStore<V> {
    fn default() -> Self {
        RecordStore {
            fresh: HashMap::new(),
            stale: HashMap::new(),
            len: 0,
        }
    }
}

impl<V: Clone + Eq + std::hash::Hash> RecordStore<V> {
    /// Adds `value` under `key` (again: it becomes fresh).
    pub fn add(&mut self, key: &[u8], value: V) {
        self.remove(key, &value);
        if self.len >= MAX_RECORDS {
            self.turn();
        }
        if self.fresh.entry(key.to_vec()).or_default().insert(value) {
            self.len += 1;
        }
    }

    /// Removes `value` from `key`.
    pub fn remove(&mut self, key: &[u8], value: &V) {
        for generation in [&mut self.fresh, &mut self.stale] {
            if let Some(values) = generation.get_mut(key) {
                if values.remove(value) {
                    self.len -= 1;
                }
                if values.is_empty() {
                    generation.remove(key);
                }
            }
        }
    }

    /// Up to `max` values under `key` other than `except`, in no particular order (JS
    /// picks at random; a set's order is arbitrary).
    pub fn get(&self, key: &[u8], max: usize, except: Option<&V>) -> Vec<V> {
        [&self.fresh, &self.stale]
            .into_iter()
            .filter_map(|generation| generation.get(key))
            .flatten()
            .filter(|v| Some(*v) != except)
            .take(max)
            .cloned()
            .collect()
    }

    /// Ends a generation: the fresh values become stale, the stale ones are dropped.
    pub fn turn(&mut self) {
        let dropped: usize = self.stale.values().map(HashSet::len).sum();
        self.len -= dropped;
        self.stale = std::mem::take(&mut self.fresh);
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_live_two_generations_after_their_last_add() {
        let mut store = RecordStore::default();
        store.add(b"k", 1);
        store.add(b"k", 2);
        store.turn();
        store.add(b"k", 1);
        let mut got = store.get(b"k", 10, None);
        got.sort();
        assert_eq!(got, [1, 2]);
        assert_eq!(store.get(b"k", 10, Some(&1)), [2]);
        store.turn();
        assert_eq!(store.get(b"k", 10, None), [1], "2 was not added again");
        store.turn();
        assert!(store.get(b"k", 10, None).is_empty());
        assert!(store.is_empty());
        store.add(b"k", 3);
        store.remove(b"k", &3);
        assert_eq!(store.len(), 0);
    }
}
