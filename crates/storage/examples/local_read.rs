//! Local reads through [`Reader`] cost what `std::fs::read` costs: reads every file of a folder
//! both ways, alternating rounds, and prints the time ratio.
//!
//! `cargo run --release -p retina-storage --example local_read -- DIR [ROUNDS]`

use retina_storage::Reader;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: local_read DIR [ROUNDS]");
    let rounds: usize = args
        .next()
        .map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let reader = Reader::new(u64::MAX);
    let (mut plain, mut through) = (Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        for file in &files {
            bytes += std::fs::read(file).expect("readable").len();
        }
        plain += start.elapsed();
        let start = Instant::now();
        for file in &files {
            bytes += reader.read(file).expect("readable").len();
        }
        through += start.elapsed();
    }
    println!(
        "{} files x {rounds} rounds ({:.1} MB read): std::fs::read {:.3} s, Reader::read {:.3} s, ratio {:.3}",
        files.len(),
        bytes as f64 / 1e6,
        plain.as_secs_f64(),
        through.as_secs_f64(),
        through.as_secs_f64() / plain.as_secs_f64()
    );
}
