//! The routing table as k-bucket builds it for dht-rpc: 20 contacts a bucket, only the
//! bucket holding our id splits, re-adding refreshes, a full far bucket names its three
//! least recently seen contacts, `closest` is by XOR distance; and, for arbitrary ids
//! and sequences of adds and removes, the invariants that keep it bounded and correct.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use hyperswarm::table::{Added, Table, CANDIDATES, K};
use hyperswarm::Id;
use proptest::prelude::*;

fn addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// An id whose first byte is `first` and whose last two bytes are `n`.
fn id(first: u8, n: u16) -> Id {
    let mut id = [0; 32];
    id[0] = first;
    id[30..].copy_from_slice(&n.to_be_bytes());
    Id(id)
}

/// Leading bits two ids share.
fn shared(a: &Id, b: &Id) -> usize {
    let d = a.distance(b);
    d.iter()
        .position(|x| *x != 0)
        .map_or(256, |i| i * 8 + d[i].leading_zeros() as usize)
}

#[test]
fn only_the_bucket_holding_our_id_splits() {
    let mut table = Table::new(Id([0; 32]));
    // 20 far ids (first bit differs from ours) fill the one bucket; the 21st splits it:
    // they all go to bucket 0, which never splits again.
    for n in 0..K as u16 {
        assert_eq!(table.add(id(0x80, n), addr(n + 1), 0), Added::New);
    }
    assert_eq!(table.buckets().len(), 1);
    let far = id(0x80, 100);
    match table.add(far, addr(100), 0) {
        Added::Full { bucket, candidates } => {
            assert_eq!(bucket, 0);
            assert_eq!(candidates.len(), CANDIDATES);
            let ids: Vec<Id> = candidates.iter().map(|c| c.id).collect();
            assert_eq!(ids, vec![id(0x80, 0), id(0x80, 1), id(0x80, 2)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(table.buckets().len(), 2, "split once: the far half is full");
    assert!(table.get(&far).is_none());
    // Near ids (first bit ours) have room in the new bucket; more far ones do not.
    for n in 0..K as u16 {
        assert_eq!(table.add(id(0x40, n), addr(200 + n), 0), Added::New);
    }
    assert!(matches!(
        table.add(id(0xc0, 7), addr(300), 0),
        Added::Full { bucket: 0, .. }
    ));
    // A 21st near id splits the near bucket again (0x40.. share 1 bit with us).
    assert_eq!(table.add(id(0x20, 0), addr(400), 0), Added::New);
    assert_eq!(table.buckets().len(), 3);
    assert_eq!(table.len(), 2 * K + 1);
    // Our own id never enters.
    assert_eq!(table.add(Id([0; 32]), addr(1), 0), Added::Own);
}

#[test]
fn re_adding_moves_a_contact_to_the_most_recent_end() {
    let mut table = Table::new(Id([0; 32]));
    for n in 0..K as u16 {
        table.add(id(0x80, n), addr(n + 1), 0);
    }
    assert_eq!(table.add(id(0x80, 0), addr(999), 3), Added::Refreshed);
    let bucket = &table.buckets()[0];
    assert_eq!(bucket.last().unwrap().id, id(0x80, 0));
    assert_eq!(bucket.last().unwrap().addr, addr(999), "address updated");
    assert_eq!(bucket.last().unwrap().heard, 3);
    assert_eq!(bucket[0].id, id(0x80, 1));
    let least: Vec<Id> = table.least_recent(2).iter().map(|c| c.id).collect();
    assert_eq!(least, vec![id(0x80, 1), id(0x80, 2)]);
    // Touching keeps the tick but makes it the most recent.
    table.touch(&id(0x80, 1));
    assert_eq!(table.buckets()[0].last().unwrap().id, id(0x80, 1));
    assert_eq!(table.buckets()[0].last().unwrap().heard, 0);
    assert_eq!(table.least_recent(1)[0].id, id(0x80, 2));
    assert_eq!(table.remove(&id(0x80, 2)).unwrap().id, id(0x80, 2));
    assert!(table.remove(&id(0x80, 2)).is_none());
    assert_eq!(table.len(), K - 1);
}

#[test]
fn closest_is_by_xor_distance() {
    let mut table = Table::new(Id([0; 32]));
    for n in 0..300u16 {
        let mut bytes = [0u8; 32];
        bytes[0] = (n % 256) as u8;
        bytes[1] = (n / 256) as u8;
        table.add(Id(bytes), addr(n + 1), 0);
    }
    let target = id(0x41, 0);
    let closest = table.closest(&target, K);
    assert_eq!(closest.len(), K);
    assert_eq!(closest[0].id.0[0], 0x41);
    for pair in closest.windows(2) {
        assert!(pair[0].id.distance(&target) < pair[1].id.distance(&target));
    }
}

#[derive(Clone, Debug)]
enum Step {
    Add([u8; 32]),
    /// Adds an id sharing this many leading bits with ours (a crowded near range).
    AddNear(u8, [u8; 32]),
    Remove(usize),
    Touch(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<[u8; 32]>().prop_map(Step::Add),
        3 => (0u8..40, any::<[u8; 32]>()).prop_map(|(n, r)| Step::AddNear(n, r)),
        1 => any::<usize>().prop_map(Step::Remove),
        1 => any::<usize>().prop_map(Step::Touch),
    ]
}

/// `random` made to share exactly `bits` leading bits with `own`.
fn near(own: &Id, bits: u8, random: [u8; 32]) -> Id {
    let mut out = random;
    for bit in 0..=bits as usize {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let want = if bit < bits as usize {
            own.0[byte] & mask
        } else {
            !own.0[byte] & mask
        };
        out[byte] = (out[byte] & !mask) | want;
    }
    Id(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_sequence_keeps_the_table_bounded_sorted_and_consistent(
        own in any::<[u8; 32]>(),
        steps in proptest::collection::vec(step(), 1..600),
        target in any::<[u8; 32]>(),
    ) {
        let own = Id(own);
        let mut table = Table::new(own);
        let mut held: Vec<Id> = Vec::new();
        for (n, step) in steps.into_iter().enumerate() {
            let port = (n % 60_000) as u16 + 1;
            match step {
                Step::Add(bytes) | Step::AddNear(_, bytes) if Id(bytes) == own => {}
                Step::Add(bytes) => add(&mut table, &mut held, Id(bytes), port)?,
                Step::AddNear(bits, random) => {
                    add(&mut table, &mut held, near(&own, bits, random), port)?
                }
                Step::Remove(i) if !held.is_empty() => {
                    let gone = held.remove(i % held.len());
                    prop_assert_eq!(table.remove(&gone).map(|c| c.id), Some(gone));
                }
                Step::Touch(i) if !held.is_empty() => {
                    let id = held[i % held.len()];
                    table.touch(&id);
                    prop_assert_eq!(table.least_recent(usize::MAX).last().map(|c| c.id), Some(id));
                }
                Step::Remove(_) | Step::Touch(_) => {}
            }
            // Every contact in its bucket, no bucket over K, none twice, only the last
            // bucket holds ids sharing more bits with ours than its index.
            let last = table.buckets().len() - 1;
            let mut seen = HashSet::new();
            for (i, bucket) in table.buckets().iter().enumerate() {
                prop_assert!(bucket.len() <= K);
                for c in bucket {
                    let s = shared(&own, &c.id);
                    let placed = if i == last { s >= i } else { s == i };
                    prop_assert!(placed, "{:?} sharing {} bits in bucket {}", c.id, s, i);
                    prop_assert!(seen.insert(c.id));
                }
            }
            prop_assert!(table.buckets().len() <= 257);
            prop_assert_eq!(table.len(), held.len());
        }
        // closest() is the brute-force answer.
        let target = Id(target);
        let mut all = held.clone();
        all.sort_by_key(|id| id.distance(&target));
        for k in [1, 5, K, 3 * K] {
            let expected: Vec<Id> = all.iter().take(k).copied().collect();
            let got: Vec<Id> = table.closest(&target, k).iter().map(|n| n.id).collect();
            prop_assert_eq!(got, expected);
        }
        let near_own: Vec<Id> = table.closest(&own, K).iter().map(|n| n.id).collect();
        let mut by_own = held.clone();
        by_own.sort_by_key(|id| id.distance(&own));
        by_own.truncate(K);
        prop_assert_eq!(near_own, by_own);
    }
}

fn add(table: &mut Table, held: &mut Vec<Id>, id: Id, port: u16) -> Result<(), TestCaseError> {
    match table.add(id, addr(port), 0) {
        Added::New => {
            prop_assert!(!held.contains(&id));
            held.push(id);
        }
        Added::Refreshed => {
            prop_assert!(held.contains(&id));
            prop_assert_eq!(
                table.least_recent(usize::MAX).last().map(|c| c.id),
                Some(id)
            );
        }
        Added::Full { bucket, candidates } => {
            prop_assert!(!held.contains(&id));
            prop_assert_eq!(table.buckets()[bucket].len(), K);
            prop_assert_eq!(bucket, table.bucket_of(&id));
            prop_assert!(bucket + 1 < table.buckets().len(), "the last bucket splits");
            let front: Vec<Id> = table.buckets()[bucket][..CANDIDATES]
                .iter()
                .map(|c| c.id)
                .collect();
            prop_assert_eq!(candidates.iter().map(|c| c.id).collect::<Vec<_>>(), front);
        }
        Added::Own => prop_assert!(false, "own id filtered above"),
    }
    prop_assert_eq!(table.get(&id).is_some(), held.contains(&id));
    Ok(())
}
