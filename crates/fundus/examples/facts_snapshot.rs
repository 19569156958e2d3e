//! Prints the facts the stage measures on rendered photographs (sizes, eyes, grades, AMD and
//! glaucoma varied), one line each, so a speed change can be checked to keep every fact: run it
//! before and after and `diff` the two outputs.
//!
//! Run with `cargo run --release -p retina-fundus --example facts_snapshot [COUNT] > facts.txt`
//! (24 photographs unless COUNT says otherwise).

use retina_fundus::{PrepareConfig, prepare};
use retina_records::Laterality;
use synthetic_fundus::{SceneSpec, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes = [(900, 600), (1536, 1024), (1200, 1200), (2400, 1600)];
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(24);
    let config = PrepareConfig::default();
    for k in 0..count {
        let (w, h) = sizes[k as usize % sizes.len()];
        let laterality = if k % 2 == 0 {
            Laterality::Left
        } else {
            Laterality::Right
        };
        let spec = SceneSpec {
            dr_grade: (k % 5) as u8,
            amd: k % 7 == 3,
            glaucoma: k % 6 == 5,
            ..SceneSpec::normal(w, h, laterality, 7000 + k)
        };
        let (img, truth) = render(&spec);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92).encode_image(&img)?;
        match prepare(&jpeg, &config) {
            Ok(p) => {
                let side = p.facts.disc.as_ref().map(|d| d.side);
                println!(
                    "{k:2} {w}x{h} {laterality:?} truth_vessels={:.3} side={side:?} {:?}",
                    truth.vessel_fraction, p.facts
                );
            }
            Err(e) => println!("{k:2} {w}x{h} {laterality:?} rejected: {e}"),
        }
    }
    Ok(())
}
