//! `bench --only resume`: how long a resume takes to start on a journal of 1.4 million items
//! (the RetinaLogos-1400k scale). The journal is built once into `target/bench/` and reused.
//!
//! State of the cached journal, as a crash in a long run leaves it: 1,000,000 items committed in
//! 200 shards of 5,000 (every 50th item failed once before), 5,000 in flight, and 400,000 never
//! started (absent from the journal). Measured: what a run does before its first item
//! (`Journal::open`, `reset_in_flight`, `counts`, `shards`, the fingerprint), `done_ids`, and the
//! pipeline's pending filter (one indexed `Journal::status` lookup per input item, as
//! `pipeline::run`'s input thread does) over all 1.4 million inputs: the time until the first
//! pending item when the done ones come first, and per item.

use super::{BenchContext, Results};
use anyhow::{Context, Result};
use retina_journal::{Journal, ShardCommit};
use retina_records::{ItemId, ItemState};
use std::path::{Path, PathBuf};
use std::time::Instant;

const ITEMS: u32 = 1_400_000;
const COMMITTED: u32 = 1_000_000;
const IN_FLIGHT: u32 = 5_000;
const SHARD_ITEMS: usize = 5_000;

fn id(n: u32) -> ItemId {
    ItemId::from_source("bench", &format!("img/{n}.jpeg"))
}

/// The cached journal, built when absent (a marker file says the build finished).
fn journal(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("journal.sqlite");
    let marker = dir.join("complete");
    if marker.exists() {
        return Ok(path);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let journal = Journal::open(&path)?;
    let committed: Vec<ItemId> = (0..COMMITTED).map(id).collect();
    for (seq, shard) in committed.chunks(SHARD_ITEMS).enumerate() {
        for item in shard.iter().step_by(50) {
            journal.record_failure(item, "endpoint.timeout", "bench")?;
        }
        let items: Vec<_> = shard
            .iter()
            .map(|id| (id.clone(), ItemState::Accepted))
            .collect();
        journal.commit_shard(&ShardCommit {
            file_name: format!("shards/part-{seq:05}.parquet"),
            kind: "accepted".into(),
            rows: items.len() as u64,
            bytes: 0,
            blake3: String::new(),
            items,
        })?;
    }
    let in_flight: Vec<ItemId> = (COMMITTED..COMMITTED + IN_FLIGHT).map(id).collect();
    for batch in in_flight.chunks(256) {
        journal.mark_in_flight(batch)?;
    }
    drop(journal);
    std::fs::write(&marker, b"")?;
    eprintln!(
        "resume bench: built a {ITEMS}-item journal in {:.1} s (cached in {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(path)
}

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let dir = PathBuf::from("target/bench/resume-journal-v1");
    let path = journal(&dir).context("cannot build the resume benchmark journal")?;
    // A copy per measurement keeps the cached journal in its crashed state (reset_in_flight
    // writes); SQLite's WAL is checkpointed into the main file when the builder closed it.
    let work = dir.join("work.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
    }
    std::fs::copy(&path, &work)?;
    let inputs: Vec<ItemId> = (0..ITEMS).map(id).collect();

    let started = Instant::now();
    let journal = Journal::open(&work)?;
    let reset = journal.reset_in_flight()?;
    let counts = journal.counts()?;
    let shards = journal.shards()?;
    let _ = journal.fingerprint()?;
    let open_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        reset == u64::from(IN_FLIGHT) && counts.accepted == u64::from(COMMITTED),
        "unexpected journal state: reset {reset}, {counts:?}"
    );

    let started = Instant::now();
    let done = journal.done_ids()?;
    let done_ids_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(done.len() == COMMITTED as usize);
    drop(done);

    // The pipeline's filter: its own read-only connection, one status lookup per input item.
    let lookup = Journal::open_read_only(&work)?;
    let started = Instant::now();
    let mut first_pending = None;
    let (mut skipped, mut pending) = (0u64, 0u64);
    for item in &inputs {
        let status = lookup.status(item)?;
        if status.done {
            skipped += 1;
            continue;
        }
        pending += 1;
        first_pending.get_or_insert_with(|| started.elapsed().as_secs_f64());
    }
    let filter_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(skipped == u64::from(COMMITTED) && pending == u64::from(ITEMS - COMMITTED));
    let first_pending = first_pending.unwrap_or(filter_s);
    drop((journal, lookup));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
    }

    let what = format!(
        "journal of {ITEMS} items ({COMMITTED} done in {} shards, {IN_FLIGHT} in flight)",
        shards.len()
    );
    results.put(
        "resume_open_seconds",
        open_s,
        "s",
        &format!("open + reset_in_flight + counts + shards + fingerprint, {what}"),
    );
    results.put(
        "resume_done_ids_seconds",
        done_ids_s,
        "s",
        &format!("Journal::done_ids ({COMMITTED} ids into a set), {what}"),
    );
    results.put(
        "resume_first_pending_seconds",
        open_s + first_pending,
        "s",
        "time until a resumed run has its first pending item (done items first in the input)",
    );
    results.put(
        "resume_filter_us_per_item",
        filter_s * 1e6 / f64::from(ITEMS),
        "us",
        "the pipeline's pending filter (Journal::status per input item), per item",
    );
    results.put(
        "resume_filter_seconds",
        filter_s,
        "s",
        &format!("the pending filter over all {ITEMS} inputs"),
    );
    Ok(())
}
