//! Runs the full stage and the codec-only path in a loop on a camera-sized (3888x2592) synthetic
//! JPEG, for a profiler (`perf record`) or a quick timing. With `both`, the two run in
//! alternating rounds and the ratio codec / stage is printed by wall time and by the thread's
//! CPU time (Linux), which other load on the machine disturbs far less.
//!
//! Run with `cargo run --release -p retina-fundus --example stage_profile -- [full|codec|both] [N]`.

use retina_fundus::{PrepareConfig, codec_only, prepare};
use retina_records::Laterality;
use std::time::Instant;
use synthetic_fundus::{SceneSpec, render};

/// CPU time of this thread in milliseconds, if the system reports it.
fn cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(text.split_whitespace().next()?.parse::<f64>().ok()? / 1e6)
}

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
    let full = || prepare(&jpeg, &config).is_ok();
    let codec = || codec_only(&jpeg, &config).is_ok();
    // (wall ms, cpu ms) per image over `n` calls.
    let time = |f: &dyn Fn() -> bool| -> (f64, Option<f64>) {
        let (t, c) = (Instant::now(), cpu_ms());
        for _ in 0..n {
            assert!(f());
        }
        let cpu = match (c, cpu_ms()) {
            (Some(a), Some(b)) => Some((b - a) / n as f64),
            _ => None,
        };
        (t.elapsed().as_secs_f64() * 1e3 / n as f64, cpu)
    };
    let show = |name: &str, (wall, cpu): (f64, Option<f64>)| {
        let cpu = cpu.map_or("-".to_string(), |c| format!("{c:.2}"));
        println!("{name:<6} {wall:7.2} ms/image wall, {cpu} ms/image CPU");
    };
    assert!(full() && codec());
    match mode.as_str() {
        "full" => show("full", time(&full)),
        "codec" => show("codec", time(&codec)),
        _ => {
            for round in 0..3 {
                let (f, c) = if round % 2 == 0 {
                    let f = time(&full);
                    (f, time(&codec))
                } else {
                    let c = time(&codec);
                    (time(&full), c)
                };
                show("full", f);
                show("codec", c);
                let cpu = match (f.1, c.1) {
                    (Some(fc), Some(cc)) => format!("{:.2}", cc / fc),
                    _ => "-".into(),
                };
                println!("codec/full: {:.2} wall, {cpu} CPU", c.0 / f.0);
            }
        }
    }
    Ok(())
}
