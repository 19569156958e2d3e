//! `build-dataset verify DIR`: the shards check themselves (retina-shards); this adds the
//! cross-check against the journal, which only the binary sees both sides of.

use anyhow::{Context, Result};
use retina_records::ItemState;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

/// Prints every problem found; exit code 1 when there is any.
pub fn run(dir: &Path) -> Result<ExitCode> {
    if retina_storage::Location::path_is_object_url(dir) {
        return run_remote(&dir.to_string_lossy());
    }
    let problems = problems(dir)?;
    if problems.is_empty() {
        println!("ok: {} is consistent", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    println!("{} problem(s) in {}", problems.len(), dir.display());
    Ok(ExitCode::from(1))
}

/// Every inconsistency between card, shards and journal, as sentences naming the file or item.
pub fn problems(dir: &Path) -> Result<Vec<String>> {
    let report = retina_shards::verify_dataset(dir)
        .with_context(|| format!("cannot verify {}", dir.display()))?;
    let mut problems = report.problems;
    let card = retina_shards::read_card(dir)?;
    let journal_path = crate::pipeline::journal_path(dir);
    if !journal_path.exists() {
        problems.push(format!("journal {} is missing", journal_path.display()));
        return Ok(problems);
    }
    let journal = retina_journal::Journal::open_read_only(&journal_path)?;

    // Which state each id has according to the shards themselves.
    let mut in_shards: HashMap<String, ItemState> = HashMap::new();
    for shard in &card.shards {
        let path = dir.join(&shard.path);
        let (ids, state): (Vec<String>, ItemState) =
            if shard.kind == retina_shards::ShardKind::Accepted {
                match retina_shards::read_accepted(&path, false) {
                    Ok(rows) => (
                        rows.into_iter().map(|r| r.id).collect(),
                        ItemState::Accepted,
                    ),
                    Err(err) => {
                        problems.push(format!("{}: unreadable: {err}", shard.path));
                        continue;
                    }
                }
            } else {
                match retina_shards::read_rejects(&path) {
                    Ok(rows) => (
                        rows.into_iter().map(|r| r.id).collect(),
                        ItemState::Rejected,
                    ),
                    Err(err) => {
                        problems.push(format!("{}: unreadable: {err}", shard.path));
                        continue;
                    }
                }
            };
        for id in ids {
            in_shards.insert(id, state);
        }
    }
    for (id, state) in journal.item_states()? {
        match (state, in_shards.remove(&id)) {
            (ItemState::Accepted, Some(ItemState::Accepted))
            | (ItemState::Rejected, Some(ItemState::Rejected)) => {}
            (ItemState::Failed | ItemState::Pending | ItemState::InFlight, None) => {}
            (journal_state, shard_state) => problems.push(format!(
                "item {id}: journal says {}, shards say {}",
                journal_state.as_str(),
                shard_state.map_or("absent", |s| s.as_str())
            )),
        }
    }
    for (id, state) in in_shards {
        problems.push(format!(
            "item {id}: in a {} shard but not in the journal",
            state.as_str()
        ));
    }
    let counts = journal.counts()?;
    if counts.accepted != card.counts.accepted || counts.rejected != card.counts.rejected {
        problems.push(format!(
            "dataset.json counts (accepted {}, rejected {}) differ from the journal (accepted {}, rejected {})",
            card.counts.accepted, card.counts.rejected, counts.accepted, counts.rejected
        ));
    }
    Ok(problems)
}

/// `verify URL`: the published card and shards (the journal stays in the local build folder).
fn run_remote(text: &str) -> Result<ExitCode> {
    let url = crate::object_storage::upload_target(text)?;
    let problems = crate::object_storage::verify_remote(&url)?;
    if problems.is_empty() {
        println!("ok: {url} is consistent (card, shard sizes, checksums, rows, unique ids)");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    println!("{} problem(s) in {url}", problems.len());
    Ok(ExitCode::from(1))
}
