//! Times decode-only against the full `prepare` on a 1536x1024 synthetic fundus JPEG.
//!
//! Run with `cargo run --release -p retina-fundus --example prepare_speed`.

use retina_fundus::{OutputFormat, PrepareConfig, prepare};
use retina_records::Laterality;
use std::time::{Duration, Instant};
use synthetic_fundus::{SceneSpec, render};

const RUNS: usize = 30;

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn time(mut f: impl FnMut()) -> f64 {
    f(); // warm up
    median_ms(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = SceneSpec {
        dr_grade: 2,
        ..SceneSpec::normal(1536, 1024, Laterality::Right, 7)
    };
    let (img, _) = render(&spec);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92).encode_image(&img)?;
    println!(
        "input: 1536x1024 JPEG, {} KB; median of {RUNS} runs, one thread",
        jpeg.len() / 1024
    );

    let decode = time(|| {
        let d = image::load_from_memory(&jpeg).map(|i| i.into_rgb8());
        assert!(d.is_ok());
    });
    println!("decode only                      {decode:7.2} ms");

    for (name, config) in [
        ("prepare -> 1024 JPEG q90", PrepareConfig::default()),
        (
            "prepare -> 512 JPEG q90",
            PrepareConfig {
                target_size: 512,
                ..PrepareConfig::default()
            },
        ),
        (
            "prepare -> 1024 PNG",
            PrepareConfig {
                output_format: OutputFormat::Png,
                ..PrepareConfig::default()
            },
        ),
    ] {
        let mut size = 0;
        let ms = time(|| {
            let p = prepare(&jpeg, &config);
            size = p.as_ref().map_or(0, |p| p.bytes.len());
            assert!(p.is_ok());
        });
        println!("{name:32} {ms:7.2} ms  ({} KB out)", size / 1024);
    }

    // Encoding alone, for the share of the total it takes.
    let out = image::imageops::resize(&img, 1024, 1024, image::imageops::FilterType::Nearest);
    let encode = time(|| {
        let mut buf = Vec::new();
        let r = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90).encode_image(&out);
        assert!(r.is_ok());
    });
    println!("JPEG encode 1024x1024 q90 only   {encode:7.2} ms");
    Ok(())
}
