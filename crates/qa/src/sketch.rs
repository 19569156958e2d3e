//! Bounded-memory summaries: exact moments with a fixed-size reservoir for quantiles and plots,
//! a KMV distinct counter, adaptive key sampling for duplicate groups, and MinHash signatures.
//!
//! Every structure here holds at most a fixed number of entries whatever the row count, which is
//! what lets the report run over 1.4 million rows in bounded memory.

use serde::Serialize;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// Values kept per distribution for quantiles and histograms (exact below this count).
pub const RESERVOIR: usize = 8192;

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash of a 64-bit value.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a of bytes, then mixed: stable across runs and platforms (unlike `DefaultHasher`).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Summary of a numeric series: exact count, mean, min and max; quantiles from the reservoir
/// (exact up to [`RESERVOIR`] values, a uniform sample beyond).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dist {
    /// Number of non-null values.
    pub count: u64,
    /// Arithmetic mean (0 when empty).
    pub mean: f64,
    /// Smallest value (0 when empty).
    pub min: f64,
    /// Largest value (0 when empty).
    pub max: f64,
    /// 5th percentile.
    pub p05: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// Accumulates a [`Dist`] in bounded memory.
#[derive(Debug, Clone)]
pub struct DistAcc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    sample: Vec<f64>,
    rng: u64,
}

impl Default for DistAcc {
    fn default() -> Self {
        DistAcc {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sample: Vec::new(),
            rng: 0x5EED,
        }
    }
}

impl DistAcc {
    /// Adds one value; non-finite values are ignored (they would poison the mean).
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if self.sample.len() < RESERVOIR {
            self.sample.push(value);
        } else {
            // Algorithm R with a deterministic generator: reports are reproducible.
            self.rng = mix64(self.rng);
            let slot = self.rng % self.count;
            if (slot as usize) < RESERVOIR {
                self.sample[slot as usize] = value;
            }
        }
    }

    /// The kept values (all of them below [`RESERVOIR`]).
    pub fn sample(&self) -> &[f64] {
        &self.sample
    }

    /// The summary.
    pub fn finish(&self) -> Dist {
        if self.count == 0 {
            return Dist::default();
        }
        let mut sorted = self.sample.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let rank = (p * (sorted.len() - 1) as f64).round() as usize;
            sorted[rank.min(sorted.len() - 1)]
        };
        Dist {
            count: self.count,
            mean: self.sum / self.count as f64,
            min: self.min,
            max: self.max,
            p05: q(0.05),
            p50: q(0.5),
            p95: q(0.95),
        }
    }
}

/// K-minimum-values distinct counter: exact below `k` distinct values, an estimate with about
/// 1/sqrt(k) relative error above.
#[derive(Debug, Clone)]
pub struct Kmv {
    k: usize,
    smallest: BTreeSet<u64>,
}

impl Kmv {
    /// A counter keeping the `k` smallest hashes.
    pub fn new(k: usize) -> Kmv {
        Kmv {
            k: k.max(2),
            smallest: BTreeSet::new(),
        }
    }

    /// Adds a hashed value.
    pub fn insert(&mut self, hash: u64) {
        if self.smallest.len() < self.k {
            self.smallest.insert(hash);
        } else if let Some(&largest) = self.smallest.last()
            && hash < largest
            && self.smallest.insert(hash)
        {
            self.smallest.pop_last();
        }
    }

    /// Estimated number of distinct values, and whether it is exact.
    pub fn estimate(&self) -> (u64, bool) {
        if self.smallest.len() < self.k {
            return (self.smallest.len() as u64, true);
        }
        let kth = *self.smallest.last().unwrap_or(&u64::MAX) as f64 / u64::MAX as f64;
        (
            ((self.k - 1) as f64 / kth.max(f64::MIN_POSITIVE)).round() as u64,
            false,
        )
    }
}

/// Duplicate groups by key, with adaptive key sampling: while the table is small every key is
/// kept (exact figures); when it exceeds its cap, only keys whose hash falls in a halving range
/// are kept, so whole duplicate groups stay together and the scaled counts remain unbiased.
#[derive(Debug, Clone)]
pub struct DupCounter {
    cap: usize,
    level: u32,
    counts: HashMap<u64, u32>,
}

/// What a [`DupCounter`] found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DupSummary {
    /// Rows whose key occurs more than once (estimated when `sampling_rate` < 1).
    pub rows_in_duplicate_groups: u64,
    /// Keys that occur more than once (estimated when `sampling_rate` < 1).
    pub duplicate_groups: u64,
    /// Fraction of keys examined: 1 means exact.
    pub sampling_rate: f64,
}

impl DupCounter {
    /// A counter holding at most `cap` keys.
    pub fn new(cap: usize) -> DupCounter {
        DupCounter {
            cap: cap.max(16),
            level: 0,
            counts: HashMap::new(),
        }
    }

    fn kept(&self, key: u64) -> bool {
        self.level == 0 || mix64(key) >> (64 - self.level) == 0
    }

    /// Counts one row with this key.
    pub fn insert(&mut self, key: u64) {
        if !self.kept(key) {
            return;
        }
        *self.counts.entry(key).or_default() += 1;
        while self.counts.len() > self.cap && self.level < 63 {
            self.level += 1;
            let level = self.level;
            self.counts.retain(|k, _| mix64(*k) >> (64 - level) == 0);
        }
    }

    /// The duplicate figures, scaled by the sampling rate.
    pub fn finish(&self) -> DupSummary {
        let scale = (1u64 << self.level) as f64;
        let rows: u64 = self
            .counts
            .values()
            .filter(|c| **c > 1)
            .map(|c| u64::from(*c))
            .sum();
        let groups = self.counts.values().filter(|c| **c > 1).count() as u64;
        DupSummary {
            rows_in_duplicate_groups: (rows as f64 * scale).round() as u64,
            duplicate_groups: (groups as f64 * scale).round() as u64,
            sampling_rate: 1.0 / scale,
        }
    }
}

/// Hash functions per MinHash signature.
pub const MINHASH_PERM: usize = 64;
/// LSH bands (rows per band = `MINHASH_PERM / BANDS`): candidates from Jaccard about 0.5 up.
const BANDS: usize = 16;

/// A MinHash signature of a text's word 3-gram shingles.
pub fn minhash(text: &str) -> [u64; MINHASH_PERM] {
    let words: Vec<String> = crate::text::words(text).map(|w| w.to_lowercase()).collect();
    let mut sig = [u64::MAX; MINHASH_PERM];
    let mut shingle = |h: u64| {
        for (i, slot) in sig.iter_mut().enumerate() {
            // One cheap permutation per seed: mixing with a distinct constant.
            let v = mix64(h ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
            if v < *slot {
                *slot = v;
            }
        }
    };
    if words.len() < 3 {
        shingle(hash_bytes(words.join(" ").as_bytes()));
    } else {
        for w in words.windows(3) {
            shingle(hash_bytes(w.join(" ").as_bytes()));
        }
    }
    sig
}

/// Fraction of equal slots: an estimate of the Jaccard similarity of the shingle sets.
pub fn similarity(a: &[u64; MINHASH_PERM], b: &[u64; MINHASH_PERM]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / MINHASH_PERM as f64
}

/// A fixed-size, order-independent sample of captions (the smallest id hashes) for near-duplicate
/// search, so the figure does not depend on shard order.
#[derive(Debug, Default)]
pub struct NearDupSample {
    cap: usize,
    heap: BinaryHeap<(u64, usize)>,
    signatures: Vec<[u64; MINHASH_PERM]>,
    free: Vec<usize>,
    rows_seen: u64,
}

/// Near-duplicate captions found in the sample.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NearDupSummary {
    /// Captions examined (all when the dataset is smaller than the sample cap).
    pub sample_size: u64,
    /// Accepted rows in the dataset.
    pub rows: u64,
    /// Estimated Jaccard similarity of word 3-grams at or above which two captions count.
    pub threshold: f64,
    /// Pairs of sampled captions at or above the threshold.
    pub pairs: u64,
    /// Sampled captions with at least one near-duplicate in the sample.
    pub rows_with_near_duplicate: u64,
    /// `rows_with_near_duplicate / sample_size`.
    pub rate: f64,
}

impl NearDupSample {
    /// A sample of at most `cap` captions.
    pub fn new(cap: usize) -> NearDupSample {
        NearDupSample {
            cap: cap.max(2),
            ..NearDupSample::default()
        }
    }

    /// Offers one caption; `id_hash` decides whether it is kept.
    pub fn offer(&mut self, id_hash: u64, caption: &str) {
        self.rows_seen += 1;
        if self.heap.len() >= self.cap {
            match self.heap.peek() {
                Some(&(top, _)) if id_hash < top => {}
                _ => return,
            }
            if let Some((_, slot)) = self.heap.pop() {
                self.free.push(slot);
            }
        }
        let sig = minhash(caption);
        let slot = if let Some(slot) = self.free.pop() {
            self.signatures[slot] = sig;
            slot
        } else {
            self.signatures.push(sig);
            self.signatures.len() - 1
        };
        self.heap.push((id_hash, slot));
    }

    /// Finds near-duplicate pairs by LSH banding, then checks each candidate's similarity.
    pub fn finish(&self, threshold: f64) -> NearDupSummary {
        let slots: Vec<usize> = self.heap.iter().map(|(_, s)| *s).collect();
        let rows = MINHASH_PERM / BANDS;
        let mut pairs = std::collections::HashSet::new();
        for band in 0..BANDS {
            let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
            for &slot in &slots {
                let part = &self.signatures[slot][band * rows..(band + 1) * rows];
                let key = part.iter().fold(band as u64, |h, v| mix64(h ^ v));
                buckets.entry(key).or_default().push(slot);
            }
            for members in buckets.values().filter(|m| m.len() > 1) {
                // Large buckets are identical boilerplate; cap the quadratic work per bucket.
                let members = &members[..members.len().min(200)];
                for (i, a) in members.iter().enumerate() {
                    for b in &members[i + 1..] {
                        let pair = ((*a).min(*b), (*a).max(*b));
                        if !pairs.contains(&pair)
                            && similarity(&self.signatures[*a], &self.signatures[*b]) >= threshold
                        {
                            pairs.insert(pair);
                        }
                    }
                }
            }
        }
        let mut with_dup = std::collections::HashSet::new();
        for (a, b) in &pairs {
            with_dup.insert(*a);
            with_dup.insert(*b);
        }
        let n = slots.len() as u64;
        NearDupSummary {
            sample_size: n,
            rows: self.rows_seen,
            threshold,
            pairs: pairs.len() as u64,
            rows_with_near_duplicate: with_dup.len() as u64,
            rate: if n == 0 {
                0.0
            } else {
                with_dup.len() as f64 / n as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_is_exact_for_small_series() {
        let mut acc = DistAcc::default();
        for v in [1.0, 2.0, 3.0, 4.0, 100.0, f64::NAN] {
            acc.push(v);
        }
        let d = acc.finish();
        assert_eq!(d.count, 5);
        assert!((d.mean - 22.0).abs() < 1e-9);
        assert_eq!((d.min, d.max, d.p50), (1.0, 100.0, 3.0));
        assert_eq!(DistAcc::default().finish(), Dist::default());
    }

    #[test]
    fn dist_memory_is_bounded_and_mean_exact() {
        let mut acc = DistAcc::default();
        for i in 0..100_000 {
            acc.push(f64::from(i));
        }
        assert_eq!(acc.sample().len(), RESERVOIR);
        let d = acc.finish();
        assert!((d.mean - 49_999.5).abs() < 1e-6);
        // The sampled median is within a few percent of the true one.
        assert!((d.p50 - 50_000.0).abs() < 3_000.0, "{}", d.p50);
    }

    #[test]
    fn kmv_exact_then_close() {
        let mut small = Kmv::new(1024);
        for i in 0..500u64 {
            small.insert(mix64(i));
            small.insert(mix64(i));
        }
        assert_eq!(small.estimate(), (500, true));
        let mut big = Kmv::new(1024);
        for i in 0..200_000u64 {
            big.insert(mix64(i));
        }
        let (est, exact) = big.estimate();
        assert!(!exact);
        assert!((est as f64 / 200_000.0 - 1.0).abs() < 0.1, "{est}");
    }

    #[test]
    fn dup_counter_exact_and_sampled() {
        let mut exact = DupCounter::new(1000);
        for k in [1u64, 1, 2, 3, 3, 3] {
            exact.insert(k);
        }
        let s = exact.finish();
        assert_eq!((s.rows_in_duplicate_groups, s.duplicate_groups), (5, 2));
        assert_eq!(s.sampling_rate, 1.0);
        // 50,000 keys each twice and 50,000 singletons, with a cap far below.
        let mut sampled = DupCounter::new(5_000);
        for k in 0..50_000u64 {
            sampled.insert(k);
            sampled.insert(k);
            sampled.insert(1_000_000 + k);
        }
        let s = sampled.finish();
        assert!(s.sampling_rate < 1.0);
        let err = (s.rows_in_duplicate_groups as f64 / 100_000.0 - 1.0).abs();
        assert!(err < 0.1, "{s:?}");
    }

    #[test]
    fn minhash_finds_near_duplicates_only() {
        let base = "the optic disc is pink with sharp margins and a cup to disc ratio of about 0.3 the vessels are of normal calibre the macula shows no exudates or haemorrhages";
        let near = format!("{base} overall");
        let other = "large flame haemorrhages surround the disc and cotton wool spots lie along the arcades with venous beading in all four quadrants";
        assert!(similarity(&minhash(base), &minhash(&near)) > 0.8);
        assert!(similarity(&minhash(base), &minhash(other)) < 0.2);
        let mut sample = NearDupSample::new(10);
        sample.offer(1, base);
        sample.offer(2, &near);
        sample.offer(3, other);
        let s = sample.finish(0.8);
        assert_eq!(
            (s.pairs, s.rows_with_near_duplicate, s.sample_size),
            (1, 2, 3)
        );
    }

    #[test]
    fn near_dup_sample_is_bounded_and_order_free() {
        let mut a = NearDupSample::new(50);
        let mut b = NearDupSample::new(50);
        for i in 0..500u64 {
            a.offer(mix64(i), &format!("caption number {i} of many"));
            b.offer(
                mix64(499 - i),
                &format!("caption number {} of many", 499 - i),
            );
        }
        assert_eq!(a.heap.len(), 50);
        assert!(a.signatures.len() <= 51);
        let mut ka: Vec<u64> = a.heap.iter().map(|x| x.0).collect();
        let mut kb: Vec<u64> = b.heap.iter().map(|x| x.0).collect();
        ka.sort_unstable();
        kb.sort_unstable();
        assert_eq!(ka, kb);
    }
}
