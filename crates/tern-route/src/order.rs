//! The order in which MX hosts are tried, and the bounds on what a DNS
//! answer may make us try.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most MX hosts tried for one domain (the best-preference ones).
pub const MAX_MX_HOSTS: usize = 20;
/// Most addresses tried for one domain, all hosts together.
pub const MAX_ADDRESSES: usize = 32;

/// One MX record: preference and exchange host (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mx {
    pub pref: u16,
    pub host: String,
}

/// A small pseudo-random generator (SplitMix64) for shuffling equal MX
/// preferences; not for secrets. Shared by reference, so a `Router` stays
/// usable from several threads.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    /// Seeded from the process's random hash keys (fresh per process).
    pub fn from_entropy() -> Rng {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Rng(AtomicU64::new(h.finish()))
    }

    /// A fixed seed (tests).
    pub fn seeded(seed: u64) -> Rng {
        Rng(AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let s = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (> 0); the modulo bias is negligible for small n.
    pub fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Orders MX records for trying: preference ascending, equal preferences
/// shuffled, a host listed twice kept once (at its best preference), at
/// most [`MAX_MX_HOSTS`].
pub(crate) fn order_mx(mut mx: Vec<Mx>, rng: &Rng) -> Vec<Mx> {
    // keep each host's best preference
    mx.sort_by(|a, b| a.host.cmp(&b.host).then(a.pref.cmp(&b.pref)));
    mx.dedup_by(|later, first| later.host == first.host);
    // shuffle first, then a stable sort by preference keeps the shuffled
    // order within each preference
    rng.shuffle(&mut mx);
    mx.sort_by_key(|m| m.pref);
    mx.truncate(MAX_MX_HOSTS);
    mx
}

/// True for an address a DNS answer may send us to: not unspecified
/// (`0.0.0.0` would reach this host), not multicast or broadcast.
pub(crate) fn usable_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return usable_address(IpAddr::V4(v4));
            }
            !v6.is_unspecified() && !v6.is_multicast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(list: &[(u16, &str)]) -> Vec<Mx> {
        list.iter()
            .map(|(p, h)| Mx {
                pref: *p,
                host: h.to_string(),
            })
            .collect()
    }

    #[test]
    fn preference_order_and_duplicates() {
        let rng = Rng::seeded(1);
        let got = order_mx(
            mx(&[
                (30, "c"),
                (10, "a"),
                (20, "b"),
                (5, "b"),
                (65535, "z"),
                (0, "y"),
            ]),
            &rng,
        );
        assert_eq!(
            got,
            mx(&[(0, "y"), (5, "b"), (10, "a"), (30, "c"), (65535, "z")])
        );
        assert!(order_mx(Vec::new(), &rng).is_empty());
    }

    #[test]
    fn at_most_twenty_hosts_the_best_ones() {
        let rng = Rng::seeded(2);
        let many: Vec<Mx> = (0..100u16)
            .rev()
            .map(|i| Mx {
                pref: i,
                host: format!("mx{i}"),
            })
            .collect();
        let got = order_mx(many, &rng);
        assert_eq!(got.len(), MAX_MX_HOSTS);
        assert!(got.iter().enumerate().all(|(i, m)| m.pref == i as u16));
    }

    #[test]
    fn equal_preferences_are_shuffled_evenly() {
        // 4 hosts at preference 10 after one at 5: each of the 4 should come
        // first (position 1) about a quarter of the time, and the host at 5
        // always first.
        let rng = Rng::from_entropy();
        let input = mx(&[
            (10, "a"),
            (10, "b"),
            (5, "first"),
            (10, "c"),
            (10, "d"),
            (20, "last"),
        ]);
        let mut counts = std::collections::HashMap::new();
        let runs = 4000;
        for _ in 0..runs {
            let got = order_mx(input.clone(), &rng);
            assert_eq!(got[0].host, "first");
            assert_eq!(got[5].host, "last");
            *counts.entry(got[1].host.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4, "{counts:?}");
        for (h, n) in &counts {
            // expected 1000; binomial sd ~27; 200 is over 7 sd
            assert!((800..=1200).contains(n), "{h}: {n} of {runs}: {counts:?}");
        }
    }

    #[test]
    fn seeded_shuffles_repeat() {
        let input = mx(&[(1, "a"), (1, "b"), (1, "c"), (1, "d"), (1, "e")]);
        let a = order_mx(input.clone(), &Rng::seeded(42));
        let b = order_mx(input.clone(), &Rng::seeded(42));
        assert_eq!(a, b);
        let differs = (0..20u64).any(|s| order_mx(input.clone(), &Rng::seeded(s)) != a);
        assert!(differs);
    }

    #[test]
    fn unusable_addresses() {
        for bad in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!usable_address(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "127.0.0.1",
            "::1",
            "192.0.2.1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(usable_address(good.parse().unwrap()), "{good}");
        }
    }
}
