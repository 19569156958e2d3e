//! Synthetic accepted and reject shards without images, for measuring the report at scale
//! (`build-dataset bench` runs it on 100,000 and 1,000,000 rows) and for tests.

use retina_records::{
    CaptionAnswer, Centring, DiscEstimate, DiscSide, Glaucoma, ImageFacts, ItemState, LesionExtent,
    LesionFinding, LesionLocation, LesionType, Measured, Provenance, QualityGrade, QualityMetrics,
    Record, RejectReason, Usage,
};
use retina_shards::{
    AcceptedRow, CardCounts, CardShard, DatasetCard, DatasetWriter, RejectedRow, ShardConfig,
    ShardError,
};
use std::path::{Path, PathBuf};

const PHRASES: [&str; 8] = [
    "the optic disc is pink with well defined margins",
    "scattered dot and blot haemorrhages lie in the temporal quadrant",
    "hard exudates form a partial ring near the fovea",
    "the retinal nerve fibre layer striations are visible superiorly",
    "arteries and veins are of normal calibre without beading",
    "the background shows mild tessellation",
    "a few microaneurysms are seen along the inferior arcade",
    "the foveal reflex is present and the macula is flat",
];

fn caption(n: usize) -> String {
    // Varied but realistic: a permutation of phrases plus a per-row number, ~60 words.
    let mut out = String::new();
    for i in 0..5 {
        out.push_str(PHRASES[(n / (i + 1) + i * 3) % PHRASES.len()]);
        out.push_str(". ");
    }
    out.push_str(&format!(
        "Vessel density is about {:.3}.",
        0.1 + (n % 97) as f64 / 1000.0
    ));
    out
}

fn row(dataset: &str, n: usize) -> AcceptedRow {
    let mut record = Record::new(
        dataset,
        &format!("train/{n}.jpeg"),
        PathBuf::from(format!("/data/{dataset}/train/{n}.jpeg")),
    );
    record.split = Some(
        if n.is_multiple_of(10) {
            "test"
        } else {
            "train"
        }
        .into(),
    );
    record.labels.dr_grade = Some([0, 0, 0, 1, 2, 2, 3, 4][n % 8]);
    record.labels.glaucoma = match n % 7 {
        0 => Some(Glaucoma::Yes),
        1 => Some(Glaucoma::Suspect),
        _ => Some(Glaucoma::No),
    };
    record.labels.amd = Some(n.is_multiple_of(11));
    record.labels.disease_codes = vec!["DR".into()];
    let grade = f32::from(record.labels.dr_grade.unwrap_or(0));
    let facts = ImageFacts {
        original_width: 3888,
        original_height: 2592,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.7,
        quality: QualityMetrics {
            brightness: 0.4,
            contrast: 0.2,
            sharpness: 100.0 + (n % 50) as f32,
            illumination_uniformity: 0.9,
            grade: QualityGrade::Good,
        },
        disc: Some(DiscEstimate {
            x: 0.3,
            y: 0.5,
            diameter: 0.15,
            side: DiscSide::Left,
            confidence: 0.8,
        }),
        centring: Some(Centring::Macula),
        vessel_density: Some(Measured {
            value: 0.14 - grade * 0.01 + (n % 13) as f32 / 1000.0,
            confidence: 0.9,
        }),
        tortuosity: None,
        fractal_dimension: None,
        cup_to_disc_ratio: Some(Measured {
            value: 0.3 + (n % 7) as f32 * 0.05,
            confidence: 0.6,
        }),
        bright_lesion_candidates: None,
        dark_lesion_candidates: None,
        // Every 50th row repeats an earlier image hash: duplicates to find.
        perceptual_hash: if n % 50 == 49 {
            (n - 1) as u64
        } else {
            n as u64
        },
    };
    let answer = CaptionAnswer {
        optic_disc: "Pink disc.".into(),
        rnfl: if n.is_multiple_of(5) {
            String::new()
        } else {
            "Visible striations.".into()
        },
        vessels: "Normal calibre.".into(),
        macula: "Flat macula.".into(),
        background: "Mild tessellation.".into(),
        lesions: (0..n % 3)
            .map(|i| LesionFinding {
                kind: LesionType::ALL[(n + i) % LesionType::ALL.len()],
                location: LesionLocation::Temporal,
                extent: LesionExtent::Few,
            })
            .collect(),
        quality: "Good image.".into(),
        impression: "Moderate NPDR.".into(),
        caption: caption(n),
        caption_variants: Default::default(),
    };
    AcceptedRow {
        record,
        facts,
        // A stand-in: the report never decodes images except for the gallery.
        image: b"none".to_vec(),
        image_ext: "jpg",
        answer,
        provenance: Provenance {
            model: "synthetic".into(),
            endpoint: String::new(),
            prompt_hash: "p".into(),
            schema_hash: "s".into(),
            captioned_at: format!(
                "2026-01-01T{:02}:{:02}:00Z",
                (n / 60 / 60) % 24,
                (n / 60) % 60
            ),
            usage: Usage {
                prompt_tokens: 900,
                completion_tokens: 250 + (n % 40) as u32,
            },
            latency_ms: 800 + (n % 400) as u32,
        },
    }
}

/// Writes a dataset of `rows` accepted rows (4-byte stand-ins for images) and `rows / 20` rejects into `dir`,
/// with its card, in shards of about `rows_per_shard` rows.
pub fn write_synthetic_dataset(
    dir: &Path,
    rows: usize,
    rows_per_shard: usize,
) -> Result<DatasetCard, ShardError> {
    // Rows are about 700 bytes encoded; shard size is set in bytes.
    let config = ShardConfig {
        target_shard_bytes: (rows_per_shard as u64 * 400).max(1_000_000),
        max_row_group_bytes: 16_000_000,
        name_prefix: "part".into(),
    };
    let mut writer = DatasetWriter::open(dir, config)?;
    let mut shards = Vec::new();
    let rejected = rows / 20;
    for n in 0..rows {
        let dataset = if n % 3 == 0 { "rfmid" } else { "eyepacs" };
        shards.extend(writer.write_accepted(row(dataset, n))?);
        if n < rejected {
            let mut reject = row(dataset, rows + n);
            reject.record.dataset = dataset.to_string();
            shards.extend(writer.write_rejected(RejectedRow {
                record: reject.record,
                facts: Some(reject.facts),
                state: ItemState::Rejected,
                reasons: vec![RejectReason::new(
                    if n % 2 == 0 {
                        "consistency.dr_grade"
                    } else {
                        "hygiene.hedging"
                    },
                    "synthetic",
                )],
                raw_answer: Some("{\"caption\": \"...\"}".into()),
                provenance: None,
            })?);
        }
    }
    shards.extend(writer.finish()?);
    let card = DatasetCard {
        format_version: 1,
        created_by: "retina-qa synthetic".into(),
        model: "synthetic".into(),
        endpoint: String::new(),
        prompt_hash: "p".into(),
        schema_hash: "s".into(),
        counts: CardCounts {
            accepted: rows as u64,
            rejected: rejected as u64,
            failed: 0,
        },
        shards: shards.iter().map(CardShard::from).collect(),
        features: retina_shards::hf_features(),
        config: serde_json::Value::Null,
        cost: None,
    };
    retina_shards::write_card(dir, &card)?;
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_over_many_shards_matches_the_generator() {
        let tmp = tempfile::tempdir().unwrap();
        let card = write_synthetic_dataset(tmp.path(), 3000, 500).unwrap();
        assert!(
            card.shards.len() > 3,
            "several shards: {}",
            card.shards.len()
        );
        let report = crate::compute_report(tmp.path()).unwrap();
        assert_eq!(report.counts.accepted, 3000);
        assert_eq!(report.counts.rejected, 150);
        // Grades follow [0,0,0,1,2,2,3,4] by n % 8.
        assert_eq!(report.labels.dr_grade["0"], 3000 / 8 * 3);
        assert_eq!(report.labels.dr_grade["4"], 3000 / 8);
        // rnfl is empty for n % 5 == 0.
        assert!((report.section_coverage["rnfl"] - 0.8).abs() < 1e-9);
        // Every 50th row repeats the previous row's hash: 60 pairs.
        assert_eq!(report.duplicates.images.duplicate_groups, 60);
        assert_eq!(report.duplicates.images.rows_in_duplicate_groups, 120);
        assert_eq!(report.reject_reasons["consistency.dr_grade"], 75);
        assert_eq!(report.consistency.inconsistent, 75);
        assert_eq!(report.cost.prompt_tokens, 900 * 3000);
        let cdr_yes = &report.measurements.cup_to_disc_by_glaucoma["yes"];
        // glaucoma yes is n % 7 == 0, whose CDR is exactly 0.3.
        assert!((cdr_yes.mean - 0.3).abs() < 1e-6, "{cdr_yes:?}");
    }
}
