//! Prints the embedded prompts for a sample record, to read them as a model would.
//!
//! `cargo run -p retina-prompt --example render [text]`

use retina_prompt::{PromptMode, PromptSet};
use retina_records::{
    Centring, ImageFacts, Labels, Laterality, Measured, QualityGrade, QualityMetrics, Record,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = match std::env::args().nth(1).as_deref() {
        Some("text") => PromptMode::TextOnly,
        _ => PromptMode::Vision,
    };
    let mut record = Record::new("eyepacs", "train/10_left.jpeg", "10_left.jpeg".into());
    record.laterality = Laterality::Left;
    record.labels = Labels {
        dr_grade: Some(2),
        ..Labels::default()
    };
    let facts = ImageFacts {
        original_width: 3888,
        original_height: 2592,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.68,
        quality: QualityMetrics {
            brightness: 0.38,
            contrast: 0.17,
            sharpness: 88.0,
            illumination_uniformity: 0.81,
            grade: QualityGrade::Good,
        },
        disc: None,
        centring: Some(Centring::Macula),
        vessel_density: Some(Measured {
            value: 0.081,
            confidence: 0.8,
        }),
        tortuosity: None,
        fractal_dimension: Some(Measured {
            value: 1.47,
            confidence: 0.7,
        }),
        cup_to_disc_ratio: Some(Measured {
            value: 0.42,
            confidence: 0.55,
        }),
        bright_lesion_candidates: None,
        dark_lesion_candidates: Some(Measured {
            value: 7,
            confidence: 0.5,
        }),
        perceptual_hash: 0,
    };
    let set = PromptSet::embedded();
    let prompt = set.render(&record, &facts, mode)?;
    println!(
        "# prompt hash {}\n\n## system\n{}\n\n## user\n{}",
        set.hash(),
        prompt.system,
        prompt.user
    );
    Ok(())
}
