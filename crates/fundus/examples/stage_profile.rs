//! Runs the full stage and the codec-only path in a loop on a camera-sized (3888x2592) synthetic
//! JPEG, for a profiler (`perf record`) or a quick timing. With `both`, the two run as
//! alternating pairs of calls and the median ratio codec / stage over the pairs is printed.
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
            // Per-call pairs in alternating order: each ratio compares two calls a few tens of
            // milliseconds apart, so slow drifts in the machine's speed cancel out.
            // Wall time: the thread's CPU time is counted in scheduler ticks on some kernels,
            // too coarse for one call.
            let one = |f: &dyn Fn() -> bool| -> f64 {
                let t = Instant::now();
                assert!(f());
                t.elapsed().as_secs_f64() * 1e3
            };
            let (mut fs, mut cs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                let (f, c) = if i % 2 == 0 {
                    let f = one(&full);
                    (f, one(&codec))
                } else {
                    let c = one(&codec);
                    (one(&full), c)
                };
                fs.push(f);
                cs.push(c);
                ratios.push(c / f);
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "full {:.2} ms, codec {:.2} ms (medians, wall); codec/full: median of {n} pairs {:.3}",
                median(fs),
                median(cs),
                median(ratios)
            );
        }
    }
    Ok(())
}
