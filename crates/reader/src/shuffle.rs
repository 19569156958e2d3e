//! A seeded shuffle buffer: the streaming shuffle trainers use when a dataset does not fit in
//! memory.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shuffles any iterator through a buffer of `capacity` items: the buffer is filled, then each
/// item out is drawn uniformly from it and replaced by the next item in. Memory is `capacity`
/// items; an item can move at most about `capacity` places earlier, so pair it with a shuffled
/// shard order (as [`crate::Dataset::stream`] does) for a dataset-wide mix.
///
/// The same seed over the same input gives the same order (a ChaCha8 generator, portable across
/// platforms).
pub struct ShuffleBuffer<I: Iterator> {
    inner: I,
    buffer: Vec<I::Item>,
    capacity: usize,
    rng: ChaCha8Rng,
    exhausted: bool,
}

impl<I: Iterator> ShuffleBuffer<I> {
    /// Wraps `inner`; a `capacity` of 0 or 1 passes items through in order.
    pub fn new(inner: I, capacity: usize, seed: u64) -> Self {
        ShuffleBuffer {
            inner,
            buffer: Vec::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            rng: ChaCha8Rng::seed_from_u64(seed),
            exhausted: false,
        }
    }
}

impl<I: Iterator> Iterator for ShuffleBuffer<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        while !self.exhausted && self.buffer.len() < self.capacity {
            match self.inner.next() {
                Some(item) => self.buffer.push(item),
                None => self.exhausted = true,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let pick = self.rng.random_range(0..self.buffer.len());
        Some(self.buffer.swap_remove(pick))
    }
}

/// Shuffles `items` in place with the generator of `seed` (Fisher-Yates).
pub(crate) fn shuffle_in_place<T>(items: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_item_once_and_reproducible(n in 0usize..300, capacity in 0usize..64, seed: u64) {
            let out: Vec<usize> = ShuffleBuffer::new(0..n, capacity, seed).collect();
            let mut sorted = out.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(out, ShuffleBuffer::new(0..n, capacity, seed).collect::<Vec<_>>());
        }
    }

    #[test]
    fn capacity_one_keeps_order_and_seeds_differ() {
        let same: Vec<u32> = ShuffleBuffer::new(0..50, 1, 9).collect();
        assert_eq!(same, (0..50).collect::<Vec<_>>());
        let a: Vec<u32> = ShuffleBuffer::new(0..50, 50, 1).collect();
        let b: Vec<u32> = ShuffleBuffer::new(0..50, 50, 2).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn in_place_shuffle_is_a_permutation() {
        let mut items: Vec<u32> = (0..40).collect();
        shuffle_in_place(&mut items, 5);
        assert_ne!(items, (0..40).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..40).collect::<Vec<_>>());
    }
}
