//! Measures shard writing, verification and reading on synthetic rows.
//!
//! `cargo run -p retina-shards --example throughput -- OUT_DIR [ROWS] [IMAGE_KB]`
//! (OUT_DIR must not hold a dataset yet; defaults: 2000 rows of 150 KB.)

use retina_records::{
    CaptionAnswer, ImageFacts, LesionExtent, LesionFinding, LesionLocation, LesionType, Measured,
    Provenance, QualityGrade, QualityMetrics, Record, Usage,
};
use retina_shards::{
    AcceptedRow, CardCounts, CardShard, DatasetCard, DatasetWriter, ShardConfig, hf_features,
    read_accepted, verify_dataset, write_card,
};
use std::path::PathBuf;
use std::time::Instant;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn row(n: usize, image: Vec<u8>) -> AcceptedRow {
    let mut record = Record::new(
        "eyepacs",
        &format!("train/{n}_left.jpeg"),
        PathBuf::from("/nonexistent"),
    );
    record.labels.dr_grade = Some((n % 5) as u8);
    let measured = |value| {
        Some(Measured {
            value,
            confidence: 0.8,
        })
    };
    AcceptedRow {
        record,
        facts: ImageFacts {
            original_width: 3888,
            original_height: 2592,
            output_width: 1024,
            output_height: 1024,
            fov_fraction: 0.7,
            quality: QualityMetrics {
                brightness: 0.4,
                contrast: 0.2,
                sharpness: 100.0,
                illumination_uniformity: 0.9,
                grade: QualityGrade::Good,
            },
            disc: None,
            centring: None,
            vessel_density: measured(0.12),
            tortuosity: measured(0.05),
            fractal_dimension: measured(1.6),
            cup_to_disc_ratio: measured(0.4),
            bright_lesion_candidates: None,
            dark_lesion_candidates: None,
            perceptual_hash: n as u64,
        },
        image,
        image_ext: "jpg",
        answer: CaptionAnswer {
            optic_disc:
                "The optic disc is pink with a distinct margin and a cup-to-disc ratio near 0.4."
                    .into(),
            rnfl: "Nerve fibre layer striations are visible in the arcades.".into(),
            vessels: "Arteries and veins have normal calibre and course.".into(),
            macula: "The macula shows a foveal reflex without exudates.".into(),
            background: "Mildly tessellated fundus.".into(),
            lesions: vec![LesionFinding {
                kind: LesionType::Microaneurysm,
                location: LesionLocation::Temporal,
                extent: LesionExtent::Few,
            }],
            quality: "Good image quality.".into(),
            impression: format!("Mild non-proliferative diabetic retinopathy, case {n}."),
            caption: format!(
                "Colour fundus photograph of a left eye, case {n}, with a pink optic disc, visible \
                 nerve fibre layer, normal vessels and a few temporal microaneurysms."
            ),
            caption_variants: Default::default(),
        },
        provenance: Provenance {
            model: "m".into(),
            endpoint: "http://127.0.0.1:8000/v1".into(),
            prompt_hash: "p".into(),
            schema_hash: "s".into(),
            captioned_at: "2025-01-01T00:00:00Z".into(),
            usage: Usage {
                prompt_tokens: 1000,
                completion_tokens: 250,
            },
            latency_ms: 900,
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: throughput OUT_DIR [ROWS] [IMAGE_KB]")?,
    );
    let rows: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let image_kb: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(150);
    let pool: Vec<Vec<u8>> = (0..16).map(|i| noise(i, image_kb * 1024)).collect();
    let config = ShardConfig {
        target_shard_bytes: 100_000_000,
        ..ShardConfig::default()
    };

    let start = Instant::now();
    let mut writer = DatasetWriter::open(&out, config)?;
    let mut shards = Vec::new();
    for n in 0..rows {
        let image = pool.get(n % pool.len()).cloned().unwrap_or_default();
        shards.extend(writer.write_accepted(row(n, image))?);
    }
    shards.extend(writer.finish()?);
    let write = start.elapsed().as_secs_f64();
    let bytes: u64 = shards.iter().map(|s| s.bytes).sum();
    println!(
        "write: {rows} rows, {} shards, {:.1} MB in {write:.2} s = {:.0} MB/s, {:.0} rows/s",
        shards.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / write,
        rows as f64 / write
    );

    let card = DatasetCard {
        format_version: 1,
        created_by: "throughput example".into(),
        model: "m".into(),
        endpoint: String::new(),
        prompt_hash: "p".into(),
        schema_hash: "s".into(),
        counts: CardCounts {
            accepted: rows as u64,
            ..CardCounts::default()
        },
        shards: shards.iter().map(CardShard::from).collect(),
        features: hf_features(),
        config: serde_json::Value::Null,
        cost: None,
    };
    write_card(&out, &card)?;
    let start = Instant::now();
    let report = verify_dataset(&out)?;
    let verify = start.elapsed().as_secs_f64();
    println!(
        "verify: {} shards, {} rows, {} problems in {verify:.2} s = {:.0} MB/s",
        report.shards_checked,
        report.rows,
        report.problems.len(),
        bytes as f64 / 1e6 / verify
    );

    for with_images in [true, false] {
        let start = Instant::now();
        let mut n = 0;
        for shard in &shards {
            n += read_accepted(&out.join(&shard.file_name), with_images)?.len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "read (images: {with_images}): {n} rows in {secs:.2} s = {:.0} rows/s",
            n as f64 / secs
        );
    }
    Ok(())
}
