//! Deterministic randomness: seeded random streams for scene planning, and per-pixel hashing and
//! smooth value noise for texture.
//!
//! Every pixel's randomness comes from its coordinates and the scene seed (never from a shared
//! generator), so rendering bands in parallel gives the same bytes on every run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a seed and two integer coordinates.
#[inline]
pub(crate) fn hash2(seed: u64, x: u32, y: u32) -> u64 {
    let packed = (u64::from(x) << 32) | u64::from(y);
    mix64(seed ^ packed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Maps a hash to `[-1, 1)`.
#[inline]
pub(crate) fn signed(h: u64) -> f32 {
    // 24 high bits are exactly representable in an f32 mantissa.
    ((h >> 40) as f32 / 16_777_216.0) * 2.0 - 1.0
}

/// An independent random stream for one purpose (`stream`) of one scene (`seed`), so that
/// changing how one part of a scene is drawn does not reshuffle the others.
pub(crate) fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(stream.wrapping_add(0x5eed))))
}

/// Uniform in `[lo, hi)`; never panics, even for an empty or reversed range.
#[inline]
pub(crate) fn uni<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Uniform integer in `lo..=hi` (returns `lo` when `hi < lo`).
#[inline]
pub(crate) fn pick<R: Rng>(rng: &mut R, lo: u32, hi: u32) -> u32 {
    if hi <= lo {
        return lo;
    }
    lo + rng.random::<u32>() % (hi - lo + 1)
}

/// True with probability `p`.
#[inline]
pub(crate) fn chance<R: Rng>(rng: &mut R, p: f32) -> bool {
    rng.random::<f32>() < p
}

/// Standard normal deviate (Box-Muller).
pub(crate) fn gauss<R: Rng>(rng: &mut R) -> f32 {
    let u1 = rng.random::<f32>().max(1e-7);
    let u2 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Smooth value noise in `[-1, 1]` on a lattice of `cell` pixels, precomputed for one frame so
/// sampling costs four loads and a few multiplies.
pub(crate) struct ValueNoise {
    cols: usize,
    rows: usize,
    inv_cell: f32,
    values: Vec<f32>,
}

impl ValueNoise {
    /// Lattice covering a `width` x `height` frame.
    pub(crate) fn new(width: u32, height: u32, cell: f32, seed: u64) -> Self {
        let cell = cell.max(1.0);
        let cols = (width as f32 / cell).ceil() as usize + 2;
        let rows = (height as f32 / cell).ceil() as usize + 2;
        let values = (0..rows)
            .flat_map(|j| (0..cols).map(move |i| signed(hash2(seed, i as u32, j as u32))))
            .collect();
        ValueNoise {
            cols,
            rows,
            inv_cell: 1.0 / cell,
            values,
        }
    }

    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.values.get(j * self.cols + i).copied().unwrap_or(0.0)
    }

    /// Noise at pixel coordinates (clamped to the lattice outside the frame).
    #[inline]
    pub(crate) fn sample(&self, x: f32, y: f32) -> f32 {
        let gx = (x * self.inv_cell).max(0.0);
        let gy = (y * self.inv_cell).max(0.0);
        let ix = (gx as usize).min(self.cols.saturating_sub(2));
        let iy = (gy as usize).min(self.rows.saturating_sub(2));
        let fx = (gx - ix as f32).clamp(0.0, 1.0);
        let fy = (gy - iy as f32).clamp(0.0, 1.0);
        let sx = fx * fx * (3.0 - 2.0 * fx);
        let sy = fy * fy * (3.0 - 2.0 * fy);
        let top = self.at(ix, iy) + (self.at(ix + 1, iy) - self.at(ix, iy)) * sx;
        let bottom = self.at(ix, iy + 1) + (self.at(ix + 1, iy + 1) - self.at(ix, iy + 1)) * sx;
        top + (bottom - top) * sy
    }

    /// The lattice interpolated at row `y`, for fast sampling along that row.
    pub(crate) fn row(&self, y: f32) -> RowNoise {
        let gy = (y * self.inv_cell).max(0.0);
        let iy = (gy as usize).min(self.rows.saturating_sub(2));
        let fy = (gy - iy as f32).clamp(0.0, 1.0);
        let sy = fy * fy * (3.0 - 2.0 * fy);
        let values = (0..self.cols)
            .map(|i| {
                let top = self.at(i, iy);
                top + (self.at(i, iy + 1) - top) * sy
            })
            .collect();
        RowNoise {
            inv_cell: self.inv_cell,
            values,
        }
    }
}

/// One row of a [`ValueNoise`]: sampling costs two loads.
pub(crate) struct RowNoise {
    inv_cell: f32,
    values: Vec<f32>,
}

impl RowNoise {
    /// Noise at column `x` of the row (same value as [`ValueNoise::sample`]).
    #[inline]
    pub(crate) fn sample(&self, x: f32) -> f32 {
        let gx = (x * self.inv_cell).max(0.0);
        let ix = (gx as usize).min(self.values.len().saturating_sub(2));
        let fx = (gx - ix as f32).clamp(0.0, 1.0);
        let sx = fx * fx * (3.0 - 2.0 * fx);
        match (self.values.get(ix), self.values.get(ix + 1)) {
            (Some(a), Some(b)) => a + (b - a) * sx,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ValueNoise, pick, signed, stream, uni};
    use proptest::prelude::{prop_assert, proptest};
    use rand::Rng;

    #[test]
    fn streams_are_independent_and_repeatable() {
        let a: u64 = stream(7, 1).random();
        let b: u64 = stream(7, 1).random();
        let c: u64 = stream(7, 2).random();
        let d: u64 = stream(8, 1).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn empty_ranges_do_not_panic() {
        let mut rng = stream(1, 1);
        assert_eq!(pick(&mut rng, 5, 3), 5);
        let v = uni(&mut rng, 2.0, 2.0);
        assert_eq!(v, 2.0);
    }

    proptest! {
        #[test]
        fn value_noise_is_bounded_and_continuous(
            w in 1u32..400, h in 1u32..400, cell in 0.5f32..50.0, seed: u64,
            x in -10.0f32..500.0, y in -10.0f32..500.0,
        ) {
            let noise = ValueNoise::new(w, h, cell, seed);
            let v = noise.sample(x, y);
            prop_assert!((-1.0..=1.0).contains(&v), "{v}");
            // Smooth: a tiny step changes the value only a little.
            let v2 = noise.sample(x + 0.01, y);
            prop_assert!((v - v2).abs() < 0.2, "{v} vs {v2}");
        }

        #[test]
        fn row_sampling_matches_full_sampling(
            w in 1u32..300, h in 1u32..300, cell in 1.0f32..40.0, seed: u64,
            x in 0.0f32..300.0, y in 0.0f32..300.0,
        ) {
            let noise = ValueNoise::new(w, h, cell, seed);
            let full = noise.sample(x, y);
            let row = noise.row(y).sample(x);
            prop_assert!((full - row).abs() < 1e-4, "{full} vs {row}");
        }

        #[test]
        fn signed_is_in_range(h: u64) {
            let v = signed(h);
            prop_assert!((-1.0..1.0).contains(&v));
        }
    }
}
