//! Which records a stream yields: filters on dataset, labels and quality, and the stable
//! train/validation split.

use crate::TrainingRecord;
use std::collections::BTreeSet;

/// Keeps a record only when every condition that is set holds (unset conditions keep all).
///
/// Built with the chaining methods: `Filter::default().datasets(["eyepacs"]).dr_grades([3, 4])`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Source dataset names to keep.
    pub datasets: Option<BTreeSet<String>>,
    /// DR grades to keep; a record without a DR grade is dropped when this is set.
    pub dr_grades: Option<BTreeSet<u8>>,
    /// Glaucoma labels to keep (`no`, `suspect`, `yes`).
    pub glaucoma: Option<BTreeSet<String>>,
    /// AMD label to keep.
    pub amd: Option<bool>,
    /// Keep records carrying at least one of these disease codes.
    pub disease_codes: Option<BTreeSet<String>>,
    /// Quality grades to keep (`good`, `usable`, `reject`): the dataset's label when it has one,
    /// else the measured grade ([`TrainingRecord::quality`]).
    pub qualities: Option<BTreeSet<String>>,
}

fn set<T: Ord, S: Into<T>>(values: impl IntoIterator<Item = S>) -> Option<BTreeSet<T>> {
    Some(values.into_iter().map(Into::into).collect())
}

impl Filter {
    /// Keep only these source datasets.
    pub fn datasets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.datasets = set(names);
        self
    }

    /// Keep only these DR grades.
    pub fn dr_grades(mut self, grades: impl IntoIterator<Item = u8>) -> Self {
        self.dr_grades = set(grades);
        self
    }

    /// Keep only these glaucoma labels.
    pub fn glaucoma<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.glaucoma = set(labels);
        self
    }

    /// Keep only records with this AMD label.
    pub fn amd(mut self, present: bool) -> Self {
        self.amd = Some(present);
        self
    }

    /// Keep records with at least one of these disease codes.
    pub fn disease_codes<S: Into<String>>(mut self, codes: impl IntoIterator<Item = S>) -> Self {
        self.disease_codes = set(codes);
        self
    }

    /// Keep only these quality grades.
    pub fn qualities<S: Into<String>>(mut self, grades: impl IntoIterator<Item = S>) -> Self {
        self.qualities = set(grades);
        self
    }

    /// Whether `record` passes every condition that is set.
    pub fn matches(&self, record: &TrainingRecord) -> bool {
        let labels = &record.labels;
        self.datasets
            .as_ref()
            .is_none_or(|keep| keep.contains(&record.dataset))
            && self
                .dr_grades
                .as_ref()
                .is_none_or(|keep| labels.dr_grade.is_some_and(|g| keep.contains(&g)))
            && self
                .glaucoma
                .as_ref()
                .is_none_or(|keep| labels.glaucoma.as_ref().is_some_and(|g| keep.contains(g)))
            && self.amd.is_none_or(|want| labels.amd == Some(want))
            && self
                .disease_codes
                .as_ref()
                .is_none_or(|keep| labels.disease_codes.iter().any(|code| keep.contains(code)))
            && self
                .qualities
                .as_ref()
                .is_none_or(|keep| record.quality().is_some_and(|q| keep.contains(q)))
    }
}

/// Which part of the dataset a stream yields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Split {
    /// Every record.
    #[default]
    All,
    /// Records whose id hashes outside the validation fraction.
    Train,
    /// Records whose id hashes inside the validation fraction.
    Validation,
}

/// The split of an item id for a validation fraction in `0.0..=1.0`.
///
/// The id is hashed (BLAKE3, domain-separated) to a number in `[0, 1)`; below the fraction is
/// validation. It depends on the id alone: stable across runs, machines, shard orders and dataset
/// growth, and raising the fraction only moves items from train to validation.
pub fn split_of(id: &str, validation_fraction: f64) -> Split {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"retinalogos-split\0");
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    // 53 bits: exactly representable in an f64, uniform in [0, 1).
    let unit = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    if unit < validation_fraction {
        Split::Validation
    } else {
        Split::Train
    }
}

impl Split {
    /// Whether an item with this id belongs to this split.
    pub fn contains(self, id: &str, validation_fraction: f64) -> bool {
        match self {
            Split::All => true,
            wanted => split_of(id, validation_fraction) == wanted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordLabels;
    use proptest::prelude::*;

    fn record(
        dataset: &str,
        dr: Option<u8>,
        quality: Option<&str>,
        measured: &str,
    ) -> TrainingRecord {
        TrainingRecord {
            id: format!("{dataset}-{dr:?}"),
            dataset: dataset.into(),
            image: Vec::new(),
            width: 8,
            height: 6,
            laterality: "left".into(),
            source_split: None,
            labels: RecordLabels {
                dr_grade: dr,
                quality: quality.map(String::from),
                glaucoma: Some("suspect".into()),
                disease_codes: vec!["DR".into()],
                ..RecordLabels::default()
            },
            measured_quality: Some(measured.into()),
            caption: "c".into(),
            captions: vec!["c".into()],
            caption_styles: vec!["detailed".into()],
        }
    }

    #[test]
    fn filters_combine_and_unset_conditions_keep_everything() {
        let a = record("eyepacs", Some(3), None, "good");
        let b = record("rfmid", None, Some("reject"), "good");
        assert!(Filter::default().matches(&a) && Filter::default().matches(&b));
        let f = Filter::default().datasets(["eyepacs"]);
        assert!(f.matches(&a) && !f.matches(&b));
        let f = Filter::default().dr_grades([3, 4]);
        assert!(f.matches(&a) && !f.matches(&b), "no grade is not a match");
        // The dataset's own quality label wins over the measured grade.
        let f = Filter::default().qualities(["good"]);
        assert!(f.matches(&a) && !f.matches(&b));
        let f = Filter::default()
            .glaucoma(["suspect"])
            .disease_codes(["DR", "AMD"]);
        assert!(f.matches(&a));
        assert!(!Filter::default().amd(true).matches(&a));
        assert!(
            !Filter::default()
                .datasets(["eyepacs"])
                .dr_grades([0])
                .matches(&a)
        );
    }

    #[test]
    fn the_split_is_about_the_fraction_asked() {
        let n = 20_000;
        let validation = (0..n)
            .filter(|i| split_of(&format!("{i:032x}"), 0.1) == Split::Validation)
            .count();
        assert!((1_700..2_300).contains(&validation), "{validation} of {n}");
    }

    proptest! {
        #[test]
        fn split_is_stable_and_monotone_in_the_fraction(id in "[0-9a-f]{32}", f in 0.0f64..1.0, g in 0.0f64..1.0) {
            let (low, high) = if f <= g { (f, g) } else { (g, f) };
            prop_assert_eq!(split_of(&id, low), split_of(&id, low));
            if split_of(&id, low) == Split::Validation {
                prop_assert_eq!(split_of(&id, high), Split::Validation);
            }
            prop_assert!(Split::All.contains(&id, low));
            prop_assert_ne!(Split::Train.contains(&id, low), Split::Validation.contains(&id, low));
        }
    }
}
