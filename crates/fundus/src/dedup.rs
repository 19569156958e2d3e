//! Finding the same photograph across datasets (EyeQ and AIROGS both come from EyePACS) from the
//! 64-bit perceptual hash of the cropped field ([`retina_records::ImageFacts::perceptual_hash`]).
//!
//! The hash is taken after the field-of-view crop, so it does not depend on the frame size,
//! the resolution or the JPEG quality of a copy (see [`DUPLICATE_MAX_DISTANCE`] for what the
//! tests measure).

/// Largest Hamming distance between two perceptual hashes that counts as the same photograph.
///
/// Measured on synthetic 1000x666 photographs (`tests_stage.rs`): re-encoding (PNG, JPEG q60)
/// and resizing (to 60 % with a triangle filter, to 45 % with Lanczos, re-encoded) changed 0 bits;
/// six pairs of different eyes differed by 12 to 36 bits. 6 leaves margin on both sides. Real
/// photographs of different eyes look more alike than the renders (same camera, same
/// illumination), so check the nearest non-duplicate distances on real data before trusting it.
pub const DUPLICATE_MAX_DISTANCE: u32 = 6;

/// Number of differing bits between two hashes.
pub fn hash_distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Whether two hashes are within [`DUPLICATE_MAX_DISTANCE`].
pub fn is_duplicate(a: u64, b: u64) -> bool {
    hash_distance(a, b) <= DUPLICATE_MAX_DISTANCE
}

/// An index of kept hashes for grouping duplicates in one pass: a BK-tree on the Hamming
/// distance, so a lookup visits only the subtrees the triangle inequality cannot exclude (far
/// fewer than all kept items for a threshold of a few of 64 bits).
#[derive(Debug, Clone, Default)]
pub struct DuplicateIndex {
    nodes: Vec<Node>,
    max_distance: u32,
}

#[derive(Debug, Clone)]
struct Node {
    hash: u64,
    id: usize,
    /// Children by their distance to this node (0-64).
    children: Vec<(u32, usize)>,
}

impl DuplicateIndex {
    /// An empty index using [`DUPLICATE_MAX_DISTANCE`].
    pub fn new() -> Self {
        Self::with_max_distance(DUPLICATE_MAX_DISTANCE)
    }

    /// An empty index with another threshold (bits, 0-64).
    pub fn with_max_distance(max_distance: u32) -> Self {
        DuplicateIndex {
            nodes: Vec::new(),
            max_distance: max_distance.min(64),
        }
    }

    /// Number of kept (distinct) photographs.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing was kept yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of the closest kept photograph within the threshold, if any.
    pub fn find(&self, hash: u64) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        let mut stack = if self.nodes.is_empty() {
            vec![]
        } else {
            vec![0]
        };
        while let Some(i) = stack.pop() {
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            let d = hash_distance(hash, node.hash);
            if d <= self.max_distance && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, node.id));
            }
            let (lo, hi) = (d.saturating_sub(self.max_distance), d + self.max_distance);
            stack.extend(
                node.children
                    .iter()
                    .filter(|(cd, _)| (lo..=hi).contains(cd))
                    .map(|&(_, c)| c),
            );
        }
        best.map(|(_, id)| id)
    }

    /// Keeps `id` unless a kept photograph is within the threshold: returns `None` when kept,
    /// or `Some(kept_id)` naming the photograph this one duplicates (and which stays kept).
    pub fn insert(&mut self, hash: u64, id: usize) -> Option<usize> {
        if let Some(kept) = self.find(hash) {
            return Some(kept);
        }
        let new = self.nodes.len();
        self.nodes.push(Node {
            hash,
            id,
            children: Vec::new(),
        });
        // The first node is the root; every later one hangs below the node at its distance.
        let mut at = 0;
        while at != new {
            let d = hash_distance(hash, self.nodes[at].hash);
            match self.nodes[at].children.iter().find(|(cd, _)| *cd == d) {
                Some(&(_, child)) => at = child,
                None => {
                    self.nodes[at].children.push((d, new));
                    at = new;
                }
            }
        }
        None
    }
}

/// Groups duplicates in input order: the first of each group is kept. Returns, for every hash,
/// `None` when it is kept or `Some(index)` of the kept hash it duplicates.
pub fn group_duplicates(hashes: &[u64]) -> Vec<Option<usize>> {
    let mut index = DuplicateIndex::new();
    hashes
        .iter()
        .enumerate()
        .map(|(i, &h)| index.insert(h, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn distance_counts_bits() {
        assert_eq!(hash_distance(0, 0), 0);
        assert_eq!(hash_distance(0, u64::MAX), 64);
        assert!(is_duplicate(0, 0x3F));
        assert!(!is_duplicate(0, 0x7F));
    }

    #[test]
    fn groups_keep_the_first_and_name_it() {
        let hashes = [0u64, u64::MAX, 0b111, 0xFFFF_0000, u64::MAX ^ 1];
        assert_eq!(
            group_duplicates(&hashes),
            vec![None, None, Some(0), None, Some(1)]
        );
    }

    proptest! {
        /// The tree finds exactly what a linear scan over the kept hashes finds.
        #[test]
        fn index_agrees_with_a_linear_scan(
            seeds in proptest::collection::vec(any::<u64>(), 1..200),
            flips in proptest::collection::vec(any::<u64>(), 1..200),
        ) {
            // Mix near copies (few flipped bits) with unrelated hashes.
            let mut hashes = seeds.clone();
            for (i, f) in flips.iter().enumerate() {
                let base = seeds[i % seeds.len()];
                hashes.push(base ^ (f & (f >> 7) & (f >> 13) & (f >> 29)));
            }
            let got = group_duplicates(&hashes);
            let mut kept: Vec<usize> = Vec::new();
            for (i, &h) in hashes.iter().enumerate() {
                let best = kept
                    .iter()
                    .map(|&k| (hash_distance(h, hashes[k]), k))
                    .filter(|&(d, _)| d <= DUPLICATE_MAX_DISTANCE)
                    .min_by_key(|&(d, _)| d);
                match (best, got[i]) {
                    (None, None) => kept.push(i),
                    (Some((d, _)), Some(k)) => {
                        prop_assert_eq!(hash_distance(h, hashes[k]), d);
                    }
                    (b, g) => prop_assert!(false, "item {i}: scan {b:?} index {g:?}"),
                }
            }
        }
    }
}
