//! Delay percentiles in bounded memory: a log-bucketed histogram of whole
//! seconds. Values below 128 have a bucket each (exact); above, each power
//! of two is split into 64 buckets, so a bucket's lower bound is within
//! 1/64 (1.6 %) of any value in it. 3,776 counters cover every `u64`.

const EXACT: u64 = 128;
const SUB: u64 = 64;

/// A histogram of delays in seconds.
#[derive(Debug, Default, Clone)]
pub struct Delays {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros()); // >= 7
    let sub = (v >> (e - 6)) & (SUB - 1);
    (EXACT + (e - 7) * SUB + sub) as usize
}

fn lower(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT {
        return b;
    }
    let e = 7 + (b - EXACT) / SUB;
    let sub = (b - EXACT) % SUB;
    (SUB + sub) << (e - 6)
}

impl Delays {
    /// Counts one delay.
    pub fn add(&mut self, secs: u64) {
        let b = bucket(secs);
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
        self.count += 1;
        self.max = self.max.max(secs);
        self.sum += u128::from(secs);
    }

    /// How many delays were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest delay (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean delay (exact), 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The `p`-th percentile (0 < p <= 100): the lower bound of the bucket
    /// holding the value of rank ceil(p/100 * count); exact below 128 s,
    /// within 1.6 % above. None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(lower(b).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last, "{v}");
            last = b;
            let lo = lower(b);
            assert!(lo <= v, "{v} {lo}");
            assert!(v - lo <= v / 64, "{v} {lo}");
        }
        assert!(bucket(u64::MAX) < 3776);
    }

    #[test]
    fn percentiles() {
        let mut d = Delays::default();
        assert_eq!(d.percentile(50.0), None);
        for v in 1..=100 {
            d.add(v);
        }
        assert_eq!(d.percentile(50.0), Some(50));
        assert_eq!(d.percentile(99.0), Some(99));
        assert_eq!(d.percentile(100.0), Some(100));
        assert_eq!(d.max(), 100);
        assert!((d.mean() - 50.5).abs() < 1e-9);
        d.add(1_000_000);
        let p = d.percentile(100.0).unwrap();
        assert!((1_000_000 - 1_000_000 / 64..=1_000_000).contains(&p), "{p}");
    }
}
