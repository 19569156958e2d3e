//! Rows for tests, generated in code.

use crate::{AcceptedRow, RejectedRow};
use retina_records::{
    CaptionAnswer, Centring, DiscEstimate, DiscSide, Glaucoma, ImageFacts, ItemState, LesionExtent,
    LesionFinding, LesionLocation, LesionType, Measured, Provenance, QualityGrade, QualityMetrics,
    Record, RejectReason, Usage,
};
use std::path::PathBuf;

/// Incompressible pseudo-random bytes (xorshift), so sizes on disk match sizes in memory.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
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

pub fn record(dataset: &str, n: usize) -> Record {
    let mut record = Record::new(
        dataset,
        &format!("train/{n}_left.jpeg"),
        PathBuf::from(format!("/data/{dataset}/train/{n}_left.jpeg")),
    );
    record.laterality = retina_records::Laterality::Left;
    record.split = Some("train".into());
    record.labels.dr_grade = Some((n % 5) as u8);
    record.labels.glaucoma = n.is_multiple_of(2).then_some(Glaucoma::Suspect);
    record.labels.disease_codes = vec!["DR".into(), format!("C{n}")];
    record.labels.age = Some(40.5 + n as f32);
    record
        .labels
        .raw
        .insert("level".into(), format!("{}", n % 5));
    record
}

pub fn facts(n: usize) -> ImageFacts {
    ImageFacts {
        original_width: 3888,
        original_height: 2592,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.71,
        quality: QualityMetrics {
            brightness: 0.4,
            contrast: 0.2,
            sharpness: 120.0,
            illumination_uniformity: 0.9,
            grade: QualityGrade::Usable,
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
            value: 0.12 + n as f32 / 1000.0,
            confidence: 0.9,
        }),
        tortuosity: None,
        fractal_dimension: Some(Measured {
            value: 1.6,
            confidence: 0.7,
        }),
        cup_to_disc_ratio: (!n.is_multiple_of(3)).then_some(Measured {
            value: 0.4,
            confidence: 0.5,
        }),
        bright_lesion_candidates: Some(Measured {
            value: n as u32,
            confidence: 0.3,
        }),
        dark_lesion_candidates: None,
        perceptual_hash: 0xDEAD_BEEF_0000_0000 | n as u64,
    }
}

pub fn answer(n: usize) -> CaptionAnswer {
    let lesions = (0..n % 3)
        .map(|i| LesionFinding {
            kind: LesionType::ALL[i % LesionType::ALL.len()],
            location: LesionLocation::Temporal,
            extent: LesionExtent::Few,
        })
        .collect();
    CaptionAnswer {
        optic_disc: format!("Disc {n} is pink with a clear margin."),
        rnfl: "Striations visible.".into(),
        vessels: "Normal calibre.".into(),
        macula: "Foveal reflex present.".into(),
        background: "Tessellated.".into(),
        lesions,
        quality: "Usable image.".into(),
        impression: "No referable disease.".into(),
        caption: format!("Colour fundus photograph number {n} of a left eye; café-au-lait ✓."),
        caption_variants: [(
            "short".to_string(),
            format!("Fundus photograph {n}, left eye."),
        )]
        .into(),
    }
}

pub fn provenance(n: usize) -> Provenance {
    Provenance {
        model: "qwen2.5-vl-7b".into(),
        endpoint: "http://127.0.0.1:8000/v1".into(),
        prompt_hash: "p0".into(),
        schema_hash: "s0".into(),
        captioned_at: "2025-01-01T00:00:00Z".into(),
        usage: Usage {
            prompt_tokens: 900 + n as u32,
            completion_tokens: 300,
        },
        latency_ms: 1200,
    }
}

pub fn accepted(dataset: &str, n: usize, image_len: usize) -> AcceptedRow {
    AcceptedRow {
        record: record(dataset, n),
        facts: facts(n),
        image: noise(n as u64, image_len),
        image_ext: "jpg",
        answer: answer(n),
        provenance: provenance(n),
    }
}

pub fn rejected(dataset: &str, n: usize, state: ItemState) -> RejectedRow {
    RejectedRow {
        record: record(dataset, n),
        facts: n.is_multiple_of(2).then(|| facts(n)),
        state,
        reasons: vec![
            RejectReason::new("consistency.dr_grade", format!("caption says {n}")),
            RejectReason::new("schema.invalid", "missing caption"),
        ],
        raw_answer: Some(format!("{{\"caption\": {n}}}")),
        provenance: Some(provenance(n)),
    }
}
