//! `build-dataset finalize DIR`: joins the workers of a crawl split with `--workers N` into one
//! dataset. Every worker folder `DIR/workers/<i>/` is checked (present, its last run finished,
//! no failed or unfinished items, every shard matching its card), then the workers' cards are
//! merged into `DIR/dataset.json` with shard paths relative to it. The card is written only when
//! every worker is complete, so its presence means the whole crawl is.

use crate::partition::{Partition, WorkerState};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `build-dataset finalize`.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// The crawl's output folder (the --out every worker was given).
    pub dir: PathBuf,
    /// How many workers the crawl has (default: what the workers recorded). Give it when whole
    /// worker folders may be missing, e.g. `--workers 64`.
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,
}

/// What finalizing found.
#[derive(Debug, Default)]
pub struct FinalizeReport {
    /// Worker count of the crawl.
    pub workers: u32,
    /// One line per problem, each naming the worker.
    pub problems: Vec<String>,
    /// Shards listed in the merged card (when written).
    pub shards: usize,
    /// Accepted rows over all workers.
    pub accepted: u64,
}

/// Runs `finalize`, printing the report; exits 1 when a worker is missing or incomplete.
pub fn run(args: &FinalizeArgs) -> Result<ExitCode> {
    let report = finalize(&args.dir, args.workers)?;
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.problems.is_empty() {
        println!(
            "{} workers complete: {} shards, {} accepted items; wrote {}",
            report.workers,
            report.shards,
            report.accepted,
            args.dir.join(retina_shards::CARD_FILE).display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "not finalized: {} problems in {} workers (re-run the workers named above with the \
             same --out and --workers; each resumes its own share)",
            report.problems.len(),
            report.workers
        );
        Ok(ExitCode::from(1))
    }
}

/// Checks every worker of the crawl in `dir` and, when all are complete, writes the merged card.
pub fn finalize(dir: &Path, workers: Option<u32>) -> Result<FinalizeReport> {
    let workers_dir = dir.join("workers");
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&workers_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(index) = name.parse::<u32>() {
                found.push((index, entry.path()));
            }
        }
    }
    found.sort();
    let mut report = FinalizeReport::default();
    let mut states = Vec::new();
    for (index, path) in &found {
        match WorkerState::read(path) {
            Ok(state) => states.push((*index, path.clone(), state)),
            Err(error) => report
                .problems
                .push(format!("worker {index}: incomplete: {error:#}")),
        }
    }
    let recorded: std::collections::BTreeSet<u32> =
        states.iter().map(|(_, _, s)| s.partition.workers).collect();
    let count = match (workers, recorded.iter().next()) {
        (Some(n), _) => n,
        (None, Some(n)) if recorded.len() == 1 => *n,
        (None, Some(_)) => bail!(
            "the workers in {} record different worker counts ({:?}): pass --workers N",
            workers_dir.display(),
            recorded
        ),
        (None, None) if found.is_empty() => bail!(
            "{} has no worker folders: run `build-dataset build --out {} --workers N --worker-index I` first",
            workers_dir.display(),
            dir.display()
        ),
        (None, None) => found.iter().map(|(i, _)| i + 1).max().unwrap_or(1),
    };
    report.workers = count;
    let mut parts = Vec::new();
    for index in 0..count {
        let Some((_, path, state)) = states.iter().find(|(i, _, _)| *i == index) else {
            if !found.iter().any(|(i, _)| *i == index) {
                report.problems.push(format!(
                    "worker {index}: missing ({} does not exist): run it with --worker-index {index}",
                    workers_dir.join(index.to_string()).display()
                ));
            }
            continue;
        };
        let expected = Partition {
            workers: count,
            index,
        };
        if state.partition != expected {
            report.problems.push(format!(
                "worker {index}: holds worker {} of {}, not {index} of {count}",
                state.partition.index, state.partition.workers
            ));
            continue;
        }
        match check_worker(path, state) {
            Ok(card) => parts.push((format!("workers/{index}"), card)),
            Err(problems) => report
                .problems
                .extend(problems.into_iter().map(|p| format!("worker {index}: {p}"))),
        }
    }
    for (index, _) in &found {
        if *index >= count {
            report.problems.push(format!(
                "worker {index}: not part of a crawl of {count} workers (a folder from another --workers?)"
            ));
        }
    }
    if !report.problems.is_empty() {
        return Ok(report);
    }
    let card = retina_shards::merge_cards(&parts).context("cannot merge the workers' cards")?;
    report.shards = card.shards.len();
    report.accepted = card.counts.accepted;
    retina_shards::write_card(dir, &card)
        .with_context(|| format!("cannot write {}", dir.join("dataset.json").display()))?;
    Ok(report)
}

/// One worker's card if the worker is complete and sound; else every problem found.
fn check_worker(
    path: &Path,
    state: &WorkerState,
) -> std::result::Result<retina_shards::DatasetCard, Vec<String>> {
    let mut problems = Vec::new();
    if !state.finished {
        problems.push(format!(
            "incomplete: its last run did not finish ({}); run it again",
            state.stopped.as_deref().unwrap_or("interrupted")
        ));
    }
    match retina_journal::Journal::open_read_only(&crate::pipeline::journal_path(path)) {
        Ok(journal) => match journal.counts() {
            Ok(counts) if counts.failed > 0 || counts.in_flight > 0 => problems.push(format!(
                "incomplete: {} failed and {} unfinished items; run it again to retry them",
                counts.failed, counts.in_flight
            )),
            Ok(_) => {}
            Err(error) => problems.push(format!("cannot read its journal: {error}")),
        },
        Err(error) => problems.push(format!("cannot open its journal: {error}")),
    }
    let card = match retina_shards::read_card(path) {
        Ok(card) => card,
        Err(error) => {
            problems.push(format!("no readable dataset.json: {error}"));
            return Err(problems);
        }
    };
    match retina_shards::verify_dataset(path) {
        Ok(verified) => problems.extend(verified.problems),
        Err(error) => problems.push(format!("cannot verify: {error}")),
    }
    if problems.is_empty() {
        Ok(card)
    } else {
        Err(problems)
    }
}
