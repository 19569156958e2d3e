//! A small synthetic dataset written through the real shard writer: for tests, examples and
//! benchmarks of code that reads datasets (this crate, the exporters), with no build needed.

use retina_records::{
    CaptionAnswer, Glaucoma, ImageFacts, Provenance, QualityGrade, Record, Usage,
};
use retina_shards::{AcceptedRow, CardShard, DatasetCard, DatasetWriter, ShardConfig};
use std::path::{Path, PathBuf};

/// Width of every fixture image: wider than high, so a swapped width/height shows.
pub const WIDTH: u32 = 48;
/// Height of every fixture image.
pub const HEIGHT: u32 = 32;

/// One fixture row: item `n` of dataset `eyepacs` (even `n`) or `rfmid` (odd `n`), a real
/// `WIDTH`x`HEIGHT` JPEG whose red channel encodes `n`, DR grade `n % 5`, a `short` caption
/// variant on every third item and the dataset's own quality label `reject` on every seventh.
pub fn row(n: usize) -> AcceptedRow {
    let dataset = if n.is_multiple_of(2) {
        "eyepacs"
    } else {
        "rfmid"
    };
    let mut record = Record::new(
        dataset,
        &format!("train/{n}.jpeg"),
        PathBuf::from(format!("/data/{dataset}/train/{n}.jpeg")),
    );
    record.split = Some("train".into());
    record.labels.dr_grade = Some((n % 5) as u8);
    record.labels.glaucoma = n.is_multiple_of(4).then_some(Glaucoma::Suspect);
    record.labels.disease_codes = vec![format!("C{}", n % 3)];
    record.labels.quality = n.is_multiple_of(7).then_some(QualityGrade::Reject);
    let mut facts = ImageFacts::fixture(3888, 2592);
    facts.output_width = WIDTH;
    facts.output_height = HEIGHT;
    let caption = format!("Colour fundus photograph {n}: pink disc, normal vessels, clear macula.");
    let mut answer = CaptionAnswer {
        optic_disc: "Pink disc.".into(),
        rnfl: "Striations visible.".into(),
        vessels: "Normal calibre.".into(),
        macula: "Foveal reflex present.".into(),
        background: "Normal.".into(),
        lesions: Vec::new(),
        quality: "Good.".into(),
        impression: "No referable disease.".into(),
        caption,
        caption_variants: Default::default(),
    };
    if n.is_multiple_of(3) {
        answer
            .caption_variants
            .insert("short".into(), format!("Fundus photograph {n}."));
    }
    AcceptedRow {
        record,
        facts,
        image: jpeg(n),
        image_ext: "jpg",
        answer,
        provenance: Provenance {
            model: "fixture-model".into(),
            endpoint: "http://127.0.0.1:1/v1".into(),
            prompt_hash: "p".into(),
            schema_hash: "s".into(),
            captioned_at: "2026-01-01T00:00:00Z".into(),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
            },
            latency_ms: 5,
        },
    }
}

/// A `WIDTH`x`HEIGHT` JPEG, flat colour with red = `n % 256` (decoded back within JPEG error).
pub fn jpeg(n: usize) -> Vec<u8> {
    let pixels = image::RgbImage::from_pixel(WIDTH, HEIGHT, image::Rgb([(n % 256) as u8, 90, 40]));
    let mut out = std::io::Cursor::new(Vec::new());
    // Encoding an in-memory RGB buffer of valid size cannot fail.
    let _ = pixels.write_to(&mut out, image::ImageFormat::Jpeg);
    out.into_inner()
}

/// Writes items `0..n` into `dir` (shards of about `shard_bytes` encoded bytes) with a
/// card, as a build would; returns the ids in write order.
pub fn write_dataset(
    dir: &Path,
    n: usize,
    shard_bytes: u64,
) -> Result<Vec<String>, retina_shards::ShardError> {
    let config = ShardConfig {
        target_shard_bytes: shard_bytes,
        max_row_group_bytes: shard_bytes.min(100_000_000),
        ..ShardConfig::default()
    };
    let mut writer = DatasetWriter::open(dir, config)?;
    let mut committed = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let row = row(i);
        ids.push(row.record.id.to_string());
        committed.extend(writer.write_accepted(row)?);
    }
    committed.extend(writer.finish()?);
    let card = DatasetCard {
        format_version: 1,
        created_by: "retina-reader fixture".into(),
        model: "fixture-model".into(),
        endpoint: String::new(),
        prompt_hash: "p".into(),
        schema_hash: "s".into(),
        counts: retina_shards::CardCounts {
            accepted: n as u64,
            rejected: 0,
            failed: 0,
        },
        shards: committed.iter().map(CardShard::from).collect(),
        features: retina_shards::hf_features(),
        config: serde_json::Value::Null,
        cost: None,
    };
    retina_shards::write_card(dir, &card)?;
    Ok(ids)
}
