//! Times the journal at dataset scale: `cargo run -p retina-journal --example journal_load -- DIR [ITEMS]`.
//!
//! Simulates one run over ITEMS items (default 1,400,000): in-flight marks in batches of 256,
//! shards of 5,000 rows committed with `synchronous=FULL`, every 50th item failing once, then
//! the resume queries (`done_ids`, `counts`, `reset_in_flight`) on a reopened journal.

use retina_journal::{Journal, ShardCommit};
use retina_records::{ItemId, ItemState};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: journal_load DIR [ITEMS]")?);
    let total: u32 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_400_000);
    let path = dir.join("journal_load.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let ids: Vec<ItemId> = (0..total)
        .map(|n| ItemId::from_source("load", &format!("img/{n}.jpeg")))
        .collect();

    let j = Journal::open(&path)?;
    let start = Instant::now();
    let mut mark_time = 0.0;
    let mut commit_time = 0.0;
    let mut commits = 0u32;
    for (s, shard) in ids.chunks(5_000).enumerate() {
        let t = Instant::now();
        for batch in shard.chunks(256) {
            j.mark_in_flight(batch)?;
        }
        mark_time += t.elapsed().as_secs_f64();
        for id in shard.iter().step_by(50) {
            j.record_failure(id, "endpoint.timeout", "simulated")?;
        }
        let items: Vec<_> = shard
            .iter()
            .map(|id| (id.clone(), ItemState::Accepted))
            .collect();
        let t = Instant::now();
        j.commit_shard(&ShardCommit {
            file_name: format!("shard-{s:05}.parquet"),
            kind: "accepted".into(),
            rows: items.len() as u64,
            bytes: 0,
            blake3: String::new(),
            items,
        })?;
        commit_time += t.elapsed().as_secs_f64();
        commits += 1;
    }
    let run = start.elapsed().as_secs_f64();
    drop(j);
    let size = std::fs::metadata(&path)?.len();

    let t = Instant::now();
    let j = Journal::open(&path)?;
    let reset = j.reset_in_flight()?;
    let open_reset = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let done = j.done_ids()?;
    let done_time = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let counts = j.counts()?;
    let counts_time = t.elapsed().as_secs_f64();

    println!("items {total}, shards {commits}, run {run:.2} s");
    println!(
        "  mark_in_flight total {mark_time:.2} s ({:.1} us/item)",
        mark_time * 1e6 / total as f64
    );
    println!(
        "  commit_shard total {commit_time:.2} s ({:.1} ms/shard of 5000)",
        commit_time * 1e3 / commits as f64
    );
    println!("journal file {:.1} MB", size as f64 / 1e6);
    println!("reopen + reset_in_flight ({reset}) {open_reset:.3} s");
    println!("done_ids ({}) {done_time:.3} s", done.len());
    println!("counts {counts:?} {counts_time:.3} s");
    Ok(())
}
