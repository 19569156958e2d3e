//! The warnings list: what a data engineer should look at before training.

use crate::report::{QaReport, Warning};

/// Largest / smallest class ratio from which a label is called imbalanced.
pub const IMBALANCE_RATIO: u64 = 10;
/// Section coverage below which a section is "rarely covered".
pub const SECTION_MIN_COVERAGE: f64 = 0.9;
/// Overall acceptance below which the build is flagged.
pub const MIN_ACCEPTANCE: f64 = 0.5;

fn push(report: &mut QaReport, code: &str, message: String) {
    report.warnings.push(Warning {
        code: code.to_string(),
        message,
    });
}

/// Appends every warning that applies to a finished report.
pub fn add(report: &mut QaReport) {
    let total = report.counts.accepted + report.counts.rejected;
    if total > 0 && report.counts.acceptance_rate < MIN_ACCEPTANCE {
        let message = format!(
            "only {:.0}% of items were accepted: read the reject reasons before training",
            report.counts.acceptance_rate * 100.0
        );
        push(report, "low_acceptance", message);
    }
    let mostly: Vec<String> = report
        .by_dataset
        .iter()
        .filter(|(_, c)| c.rejected > c.accepted)
        .map(|(name, c)| {
            format!(
                "dataset {name} is mostly rejected ({} of {})",
                c.rejected,
                c.rejected + c.accepted
            )
        })
        .collect();
    for m in mostly {
        push(report, "mostly_rejected", m);
    }
    let labels = [
        ("DR grade", report.labels.dr_grade.clone()),
        ("glaucoma", report.labels.glaucoma.clone()),
        ("AMD", report.labels.amd.clone()),
    ];
    for (name, counts) in labels {
        let graded: Vec<(&String, &u64)> = counts
            .iter()
            .filter(|(k, _)| k.as_str() != "unlabelled")
            .collect();
        if graded.len() < 2 {
            continue;
        }
        let max = graded.iter().max_by_key(|(_, v)| **v);
        let min = graded.iter().min_by_key(|(_, v)| **v);
        if let (Some((kmax, max)), Some((kmin, min))) = (max, min)
            && **max >= IMBALANCE_RATIO * (**min).max(1)
        {
            push(
                report,
                "class_imbalance",
                format!(
                    "{name} classes are imbalanced: {kmax} has {max} rows, {kmin} only {min}; consider reweighting or resampling"
                ),
            );
        }
    }
    if report.counts.accepted > 0 {
        let rare: Vec<(String, f64)> = report
            .section_coverage
            .iter()
            .filter(|(_, f)| **f < SECTION_MIN_COVERAGE)
            .map(|(k, f)| (k.clone(), *f))
            .collect();
        for (name, f) in rare {
            push(
                report,
                "section_rare",
                format!(
                    "section {name} is covered in only {:.0}% of captions",
                    f * 100.0
                ),
            );
        }
    }
    if report.captions.over_256_tokens > 0 {
        let m = format!(
            "{} captions exceed the 256-token budget and would be cut by the text encoder",
            report.captions.over_256_tokens
        );
        push(report, "over_token_budget", m);
    }
    if report.captions.over_77_rate > 0.5 {
        let m = format!(
            "{:.0}% of captions exceed 77 tokens: a CLIP text encoder sees only their beginning",
            report.captions.over_77_rate * 100.0
        );
        push(report, "over_token_budget", m);
    }
    let images = &report.duplicates.images;
    if images.rows_in_duplicate_groups > 0 {
        let m = format!(
            "{} rows share a perceptual hash with another row ({} groups): check for duplicate photographs across datasets or splits",
            images.rows_in_duplicate_groups, images.duplicate_groups
        );
        push(report, "duplicate_images", m);
    }
    let near = &report.duplicates.near_captions;
    if near.sample_size > 0 && near.rate > 0.2 {
        let m = format!(
            "{:.0}% of sampled captions have a near-duplicate (MinHash Jaccard >= {}): captions lack diversity",
            near.rate * 100.0,
            near.threshold
        );
        push(report, "near_duplicate_captions", m);
    }
    if report.consistency.checked > 0 && report.consistency.label_consistency_rate < 0.9 {
        let m = format!(
            "only {:.0}% of captioned items agree with their labels",
            report.consistency.label_consistency_rate * 100.0
        );
        push(report, "label_inconsistency", m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_imbalance_rare_sections_and_mostly_rejected() {
        let mut r = QaReport::default();
        r.counts.accepted = 100;
        r.counts.rejected = 20;
        r.counts.acceptance_rate = 100.0 / 120.0;
        r.labels.dr_grade.insert("0".into(), 95);
        r.labels.dr_grade.insert("4".into(), 5);
        r.section_coverage.insert("rnfl".into(), 0.1);
        r.section_coverage.insert("macula".into(), 1.0);
        r.by_dataset.insert(
            "bad".into(),
            crate::report::DatasetCounts {
                accepted: 1,
                rejected: 20,
                acceptance_rate: 1.0 / 21.0,
            },
        );
        add(&mut r);
        let codes: Vec<&str> = r.warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(codes.contains(&"class_imbalance"), "{codes:?}");
        assert!(codes.contains(&"section_rare"), "{codes:?}");
        assert!(codes.contains(&"mostly_rejected"), "{codes:?}");
        assert!(!codes.contains(&"low_acceptance"), "{codes:?}");
        assert!(r.warnings.iter().any(|w| w.message.contains("rnfl")));
        assert!(!r.warnings.iter().any(|w| w.message.contains("macula")));
    }

    #[test]
    fn a_clean_report_has_no_warnings() {
        let mut r = QaReport::default();
        r.counts.accepted = 10;
        r.counts.acceptance_rate = 1.0;
        r.labels.dr_grade.insert("0".into(), 5);
        r.labels.dr_grade.insert("1".into(), 5);
        r.section_coverage.insert("rnfl".into(), 1.0);
        add(&mut r);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
}
