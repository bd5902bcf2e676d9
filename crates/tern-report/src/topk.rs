//! Bounded counting of the most frequent keys (Metwally, Agrawal and El
//! Abbadi's Space-Saving): at most `capacity` keys are kept; a new key
//! when full replaces the least counted one and inherits its count (as its
//! possible error). Every key counted more than total/capacity times is
//! kept, and a kept key's count is over by at most its error. While no key
//! has been replaced, the counts are exact.

use std::collections::{BTreeSet, HashMap};

/// The longest key kept (bytes); longer keys are cut.
pub const MAX_KEY: usize = 256;

/// A Space-Saving counter.
#[derive(Debug)]
pub struct TopK {
    capacity: usize,
    counts: HashMap<Box<[u8]>, (u64, u64)>,
    order: BTreeSet<(u64, Box<[u8]>)>,
    replaced: u64,
}

impl TopK {
    /// A counter keeping at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> TopK {
        TopK {
            capacity: capacity.max(1),
            counts: HashMap::new(),
            order: BTreeSet::new(),
            replaced: 0,
        }
    }

    /// Counts one occurrence of `key` (cut to [`MAX_KEY`] bytes).
    pub fn add(&mut self, key: &[u8]) {
        let key = &key[..key.len().min(MAX_KEY)];
        if let Some((count, _)) = self.counts.get_mut(key) {
            let boxed: Box<[u8]> = key.into();
            self.order.remove(&(*count, boxed.clone()));
            *count += 1;
            self.order.insert((*count, boxed));
            return;
        }
        let (count, error) = if self.counts.len() < self.capacity {
            (1, 0)
        } else {
            let (min, old) = self.order.pop_first().expect("full, so not empty");
            self.counts.remove(&old);
            self.replaced += 1;
            (min + 1, min)
        };
        let boxed: Box<[u8]> = key.into();
        self.counts.insert(boxed.clone(), (count, error));
        self.order.insert((count, boxed));
    }

    /// True while every count is exact (no key was ever replaced).
    pub fn exact(&self) -> bool {
        self.replaced == 0
    }

    /// The `n` most counted keys, most first (ties by key), with their
    /// count and possible over-count.
    pub fn top(&self, n: usize) -> Vec<(&[u8], u64, u64)> {
        let mut v: Vec<(&[u8], u64, u64)> = self
            .counts
            .iter()
            .map(|(k, &(c, e))| (&k[..], c, e))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_it_fits() {
        let mut t = TopK::new(10);
        for k in ["a", "b", "a", "c", "a", "b"] {
            t.add(k.as_bytes());
        }
        assert!(t.exact());
        let top: Vec<_> = t
            .top(2)
            .into_iter()
            .map(|(k, c, e)| (k.to_vec(), c, e))
            .collect();
        assert_eq!(top, vec![(b"a".to_vec(), 3, 0), (b"b".to_vec(), 2, 0)]);
    }

    #[test]
    fn bounded_and_keeps_heavy_hitters() {
        let mut t = TopK::new(50);
        for i in 0..100_000u32 {
            // One key in three is "heavy"; the rest are all different.
            if i % 3 == 0 {
                t.add(b"heavy");
            } else {
                t.add(format!("k{i}").as_bytes());
            }
            assert!(t.len() <= 50);
        }
        assert!(!t.exact());
        let (k, c, e) = t.top(1)[0];
        assert_eq!(k, b"heavy");
        // The true count is 33,334; Space-Saving never under-counts and
        // over-counts by at most the error it reports.
        assert!(c >= 33_334 && c - e <= 33_334, "{c} {e}");
    }

    #[test]
    fn long_keys_are_cut() {
        let mut t = TopK::new(2);
        t.add(&[b'x'; 1000]);
        t.add(&[b'x'; 300]);
        assert_eq!(t.top(5), vec![(&[b'x'; MAX_KEY][..], 2, 0)]);
        assert_eq!(TopK::new(0).capacity, 1);
    }
}
