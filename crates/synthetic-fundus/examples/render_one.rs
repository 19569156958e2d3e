//! Renders one synthetic fundus photograph to a PNG and prints how long rendering took.
//!
//! `cargo run --release -p synthetic-fundus --example render_one -- OUT.png [GRADE] [SEED] [left|right] [amd] [glaucoma]`

use retina_records::Laterality;
use std::time::Instant;
use synthetic_fundus::{SceneSpec, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "fundus.png".to_string());
    let grade = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let laterality = match args.get(3).map(String::as_str) {
        Some("left") => Laterality::Left,
        _ => Laterality::Right,
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let spec = SceneSpec {
        dr_grade: grade,
        amd: flag("amd"),
        glaucoma: flag("glaucoma"),
        cup_to_disc: if flag("glaucoma") { 0.8 } else { 0.35 },
        ..SceneSpec::normal(1536, 1024, laterality, seed)
    };
    // Warm the thread pool, then time a few renders.
    let _ = render(&spec);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..9 {
        let start = Instant::now();
        last = Some(render(&spec));
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let (image, truth) = last.ok_or("no render")?;
    image.save(&out)?;
    println!(
        "1536x1024 render: median {:.1} ms (min {:.1}, max {:.1}) on {} threads; vessel fraction {:.3}; {} lesions -> {out}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        rayon::current_num_threads(),
        truth.vessel_fraction,
        truth.lesions.len()
    );
    Ok(())
}
