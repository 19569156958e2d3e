//! A training loop's data side: `cargo run -p retina-reader --example train_loop -- [DIR] [EPOCHS]`.
//!
//! Opens DIR (the `--out` of a build; without one, a small synthetic dataset is written to a
//! temporary folder first), then per epoch streams the train split shuffled with the epoch as the
//! seed, decodes each image to RGB, groups them into mini-batches of 8 as a model step would take
//! them, and finally streams the validation split in order. Prints what a step saw.

use retina_reader::{Dataset, Filter, ReadOptions, Split};
use std::path::PathBuf;

const BATCH: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let _tmp;
    let dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            let tmp = std::env::temp_dir().join(format!("train-loop-{}", std::process::id()));
            retina_reader::fixture::write_dataset(&tmp, 64, 20_000)?;
            _tmp = RemoveOnDrop(tmp.clone());
            tmp
        }
    };
    let epochs: u64 = args.next().map(|e| e.parse()).transpose()?.unwrap_or(2);
    let dataset = Dataset::open(&dir)?;
    println!(
        "{}: {} accepted rows in {} shards, model {:?}",
        dir.display(),
        dataset.len(),
        dataset.shard_paths().len(),
        dataset.card().model
    );

    for epoch in 0..epochs {
        let options = ReadOptions {
            // Trainers usually drop what the dataset itself graded unusable.
            filter: Filter::default().qualities(["good", "usable"]),
            split: Split::Train,
            validation_fraction: 0.1,
            shuffle: Some((epoch, 256)),
            ..ReadOptions::default()
        };
        let mut batch = Vec::with_capacity(BATCH);
        let (mut steps, mut seen) = (0usize, 0usize);
        for record in dataset.stream(&options) {
            let record = record?;
            let rgb = record.decode_rgb()?;
            batch.push((rgb, record.caption));
            if batch.len() == BATCH {
                steps += 1;
                seen += step(&batch, steps);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            steps += 1;
            seen += step(&batch, steps);
        }
        println!("epoch {epoch}: {steps} steps, {seen} images");
    }

    let validation = ReadOptions {
        split: Split::Validation,
        validation_fraction: 0.1,
        with_images: false,
        ..ReadOptions::default()
    };
    let held_out = dataset.stream(&validation).collect::<Result<Vec<_>, _>>()?;
    println!(
        "validation: {} records (same ids every run)",
        held_out.len()
    );
    Ok(())
}

/// Stands in for a model step: reports the mean red value and the longest caption.
fn step(batch: &[(image::RgbImage, String)], number: usize) -> usize {
    let pixels: u64 = batch.iter().map(|(img, _)| img.pixels().len() as u64).sum();
    let red: u64 = batch
        .iter()
        .flat_map(|(img, _)| img.pixels().map(|p| u64::from(p[0])))
        .sum();
    let longest = batch.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    if number <= 2 {
        println!(
            "  step {number}: {} images, mean red {:.1}, longest caption {longest} bytes",
            batch.len(),
            red as f64 / pixels.max(1) as f64
        );
    }
    batch.len()
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
