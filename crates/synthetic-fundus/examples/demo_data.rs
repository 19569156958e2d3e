//! Writes the default demo datasets into a folder and prints how long it took.
//!
//! `cargo run --release -p synthetic-fundus --example demo_data -- /tmp/demo`

use std::path::PathBuf;
use std::time::Instant;
use synthetic_fundus::{DemoConfig, write_demo_datasets};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "demo".to_string()),
    );
    let config = DemoConfig::default();
    let start = Instant::now();
    let summary = write_demo_datasets(&root, &config)?;
    let first = start.elapsed();
    let start = Instant::now();
    write_demo_datasets(&root, &config)?;
    println!(
        "{} images in {} and {}: {:.1} s (again, cached: {:.1} ms)",
        summary.images,
        summary.eyepacs_dir.display(),
        summary.rfmid_dir.display(),
        first.as_secs_f64(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
