//! `bench --only shards`: shard-writing throughput against a plain sequential write + fsync of the
//! same bytes, in the same run and on the same disk, so the ratio is the writer's own cost
//! (Arrow assembly, Parquet encoding, zstd of the text columns, hashing, the tmp+fsync+rename
//! protocol) over what the disk needs anyway.

use super::{BenchContext, Results};
use anyhow::{Context, Result};
use retina_shards::{DatasetWriter, ShardConfig};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// 1,200 rows of 150 KB images (a fundus JPEG at 1024 px): 180 MB in three 64 MB shards.
const ROWS: usize = 1200;
const IMAGE_BYTES: usize = 150_000;
const SHARD_BYTES: u64 = 64_000_000;
const PASSES: usize = 3;

/// Incompressible bytes (xorshift), as JPEG data is.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn rows() -> Vec<retina_shards::AcceptedRow> {
    (0..ROWS)
        .map(|n| {
            let mut row = retina_reader::fixture::row(n);
            row.image = noise(n as u64, IMAGE_BYTES);
            row
        })
        .collect()
}

/// Writes every row through the shard writer; returns seconds and the shard files written.
fn write_shards(dir: &Path, rows: &[retina_shards::AcceptedRow]) -> Result<(f64, Vec<Vec<u8>>)> {
    let config = ShardConfig {
        target_shard_bytes: SHARD_BYTES,
        ..ShardConfig::default()
    };
    // Cloning happens before the clock starts: the pipeline hands rows over by value.
    let owned: Vec<_> = rows.to_vec();
    let started = Instant::now();
    let mut writer = DatasetWriter::open(dir, config)?;
    let mut committed = Vec::new();
    for row in owned {
        committed.extend(writer.write_accepted(row)?);
    }
    committed.extend(writer.finish()?);
    let seconds = started.elapsed().as_secs_f64();
    let files = committed
        .iter()
        .map(|c| std::fs::read(dir.join(&c.file_name)))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((seconds, files))
}

/// Writes the same bytes as plain files, sequentially, each fsync'd.
fn write_plain(dir: &Path, files: &[Vec<u8>]) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    for (i, bytes) in files.iter().enumerate() {
        let mut file = std::fs::File::create(dir.join(format!("plain-{i}.bin")))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let root =
        std::env::temp_dir().join(format!("retinalogos-bench-shards-{}", std::process::id()));
    let rows = rows();
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    let mut total_bytes = 0u64;
    // Alternating passes, so drift in the machine's load hits both sides alike.
    for pass in 0..PASSES {
        let dir = root.join(format!("pass-{pass}"));
        let (seconds, files) = write_shards(&dir.join("dataset"), &rows)
            .with_context(|| format!("shard writer pass {pass}"))?;
        total_bytes = files.iter().map(|f| f.len() as u64).sum();
        ours.push(seconds);
        plain.push(write_plain(&dir.join("plain"), &files)?);
        std::fs::remove_dir_all(&dir)?;
    }
    let _ = std::fs::remove_dir_all(&root);
    let (ours, plain) = (median(ours), median(plain));
    let mb = total_bytes as f64 / 1e6;
    results.put(
        "shards_write_mb_per_s",
        mb / ours,
        "MB/s",
        &format!("shard writer, {ROWS} rows of {IMAGE_BYTES}-byte images into {SHARD_BYTES}-byte shards (tmp, fsync, rename), median of {PASSES}"),
    );
    results.put(
        "shards_plain_write_mb_per_s",
        mb / plain,
        "MB/s",
        "plain sequential write + fsync of the same bytes, same run",
    );
    results.put(
        "shards_write_vs_plain_ratio",
        plain / ours,
        "x",
        "shard writer throughput / plain write throughput (1.0 = as fast as the disk)",
    );
    results.put(
        "shards_rows_per_s",
        ROWS as f64 / ours,
        "rows/s",
        "accepted rows the shard writer makes durable per second",
    );
    Ok(())
}
