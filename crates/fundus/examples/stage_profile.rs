//! Runs the full stage and the codec-only path in a loop on a camera-sized (3888x2592) synthetic
//! JPEG, for a profiler (`perf record`) or a quick timing.
//!
//! Run with `cargo run --release -p retina-fundus --example stage_profile -- [full|codec] [N]`.

use retina_fundus::{PrepareConfig, codec_only, prepare};
use retina_records::Laterality;
use std::time::Instant;
use synthetic_fundus::{SceneSpec, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let cache = std::env::temp_dir().join("retina-fundus-profile-3888.jpg");
    let jpeg = match std::fs::read(&cache) {
        Ok(b) => b,
        Err(_) => {
            let spec = SceneSpec {
                dr_grade: 2,
                ..SceneSpec::normal(3888, 2592, Laterality::Left, 990)
            };
            let (img, _) = render(&spec);
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92).encode_image(&img)?;
            std::fs::write(&cache, &jpeg)?;
            jpeg
        }
    };
    let config = PrepareConfig::default();
    let run = |name: &str, f: &dyn Fn() -> bool| {
        assert!(f());
        let t = Instant::now();
        for _ in 0..n {
            assert!(f());
        }
        println!(
            "{name:<12} {:7.2} ms/image",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    };
    if mode != "codec" {
        run("full", &|| prepare(&jpeg, &config).is_ok());
    }
    if mode != "full" {
        run("codec", &|| codec_only(&jpeg, &config).is_ok());
    }
    Ok(())
}
