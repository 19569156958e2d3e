//! Measures validation throughput on realistic answers and prints their verdicts.
//!
//! `cargo run -p retina-validate --example measure --release`

use retina_records::{
    ImageFacts, Labels, Laterality, LesionExtent, LesionFinding, LesionLocation, LesionType, Record,
};
use retina_validate::{CaptionSchema, Rules, Validator};
use std::path::PathBuf;
use std::time::Instant;

fn answer(caption: &str, optic_disc: &str, lesions: &[LesionType]) -> String {
    serde_json::json!({
        "optic_disc": optic_disc,
        "rnfl": "Nerve fibre layer striations are visible along the arcades.",
        "vessels": "Arteries and veins have normal calibre and course.",
        "macula": "The foveal reflex is present.",
        "background": "Evenly pigmented orange-red fundus.",
        "lesions": lesions.iter().map(|k| LesionFinding {
            kind: *k, location: LesionLocation::PosteriorPole, extent: LesionExtent::Several,
        }).collect::<Vec<_>>(),
        "quality": "Well focused and evenly illuminated.",
        "impression": "As described.",
        "caption": caption,
    })
    .to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let validator = Validator::new(&CaptionSchema::embedded(), Rules::embedded())?;
    let facts = ImageFacts::fixture(2000, 1500);
    let mut record = Record::new("demo", "1.png", PathBuf::from("1.png"));
    record.laterality = Laterality::Right;
    let disc = "Pink disc with a cup-to-disc ratio of about 0.3 and a healthy rim.";
    let cases = [
        (
            "dr0",
            Labels {
                dr_grade: Some(0),
                ..Labels::default()
            },
            answer(
                "Colour fundus photograph of the right eye, centred on the macula. The optic disc is pink and well defined with a cup-to-disc ratio of about 0.3 and a healthy neuroretinal rim. Nerve fibre layer striations are visible along the arcades. Arteries and veins show normal calibre and course. The macula has a clear foveal reflex with no haemorrhages, exudates or microaneurysms. The background is evenly pigmented. The image is well focused and evenly illuminated. Impression: a normal fundus without signs of diabetic retinopathy.",
                disc,
                &[],
            ),
        ),
        (
            "dr2",
            Labels {
                dr_grade: Some(2),
                ..Labels::default()
            },
            answer(
                "Colour fundus photograph of the right eye, centred on the macula. The optic disc is pink with a cup-to-disc ratio of about 0.3. Nerve fibre layer striations are visible. Arteries and veins show normal calibre. Several dot and blot haemorrhages and scattered hard exudates lie in the posterior pole, with a few microaneurysms temporal to the fovea; there is no neovascularisation. The background is evenly pigmented. The image is well focused. Impression: moderate non-proliferative diabetic retinopathy.",
                disc,
                &[
                    LesionType::IntraretinalHaemorrhage,
                    LesionType::HardExudate,
                    LesionType::Microaneurysm,
                ],
            ),
        ),
        (
            "glaucoma",
            Labels {
                glaucoma: Some(retina_records::Glaucoma::Yes),
                ..Labels::default()
            },
            answer(
                "Colour fundus photograph of the right eye, centred on the optic disc. The disc shows enlarged cupping with a vertical cup-to-disc ratio of about 0.8 and inferior neuroretinal rim thinning. An inferotemporal nerve fibre layer defect is visible. Arteries and veins show normal calibre. The macula has a foveal reflex. The background is evenly pigmented. No lesions are seen apart from the disc changes. The image is well focused. Impression: glaucomatous optic neuropathy.",
                "Enlarged cupping, vertical cup-to-disc ratio 0.8, inferior rim thinning.",
                &[LesionType::RnflDefect],
            ),
        ),
    ];
    for (name, labels, raw) in &cases {
        record.labels = labels.clone();
        // The samples quote a cup-to-disc ratio: give it as a labelled CDR column.
        let cdr = if labels.glaucoma.is_some() {
            "0.8"
        } else {
            "0.3"
        };
        record.labels.raw.insert("CDR".into(), cdr.into());
        let verdict = validator.validate(raw, &record, &facts);
        println!(
            "{name}: accepted={} {:?}",
            verdict.is_accepted(),
            verdict.reasons()
        );
    }
    let n = 20_000;
    let start = Instant::now();
    let mut accepted = 0;
    for i in 0..n {
        let (_, labels, raw) = &cases[i % cases.len()];
        record.labels = labels.clone();
        // The samples quote a cup-to-disc ratio: give it as a labelled CDR column.
        let cdr = if labels.glaucoma.is_some() {
            "0.8"
        } else {
            "0.3"
        };
        record.labels.raw.insert("CDR".into(), cdr.into());
        accepted += usize::from(validator.validate(raw, &record, &facts).is_accepted());
    }
    let elapsed = start.elapsed();
    println!(
        "{n} validations ({accepted} accepted) in {:.2?}: {:.1} µs each, one core",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
