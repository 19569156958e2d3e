//! `build-dataset status DIR`: how a run is going, from another process. Durable counts come from
//! the journal (opened read-only, so a running build is not disturbed); live figures (rate, in
//! flight, tokens) from the `run-state.json` the running build refreshes.

use crate::progress::RunState;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Debug, Serialize)]
struct Status {
    dir: String,
    /// `running`, `finished`, `stopped`, `interrupted` (the process died) or `never started`.
    state: String,
    committed_accepted: u64,
    committed_rejected: u64,
    failed: u64,
    shards: usize,
    live: Option<RunState>,
    seconds_since_update: Option<u64>,
}

pub fn run(dir: &Path, json: bool) -> Result<ExitCode> {
    let journal_path = crate::pipeline::journal_path(dir);
    if !journal_path.exists() {
        anyhow::bail!(
            "{} has no journal ({}): no build has started there",
            dir.display(),
            journal_path.display()
        );
    }
    let journal = retina_journal::Journal::open_read_only(&journal_path)
        .with_context(|| format!("cannot read the journal of {}", dir.display()))?;
    let counts = journal.counts()?;
    let shards = journal.shards()?.len();
    let live: Option<RunState> = std::fs::read_to_string(crate::pipeline::run_state_path(dir))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let age = live.as_ref().and_then(|s| seconds_since(&s.updated_at));
    let state = match &live {
        None => "never started".to_string(),
        Some(s) if s.phase == "running" && !process_alive(s.pid) => "interrupted".to_string(),
        Some(s) => s.phase.clone(),
    };
    let status = Status {
        dir: dir.display().to_string(),
        state,
        committed_accepted: counts.accepted,
        committed_rejected: counts.rejected,
        failed: counts.failed,
        shards,
        live,
        seconds_since_update: age,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {}", status.dir, status.state);
    println!(
        "committed: {} accepted, {} rejected in {} shards; {} failed (retried by the next run)",
        status.committed_accepted, status.committed_rejected, status.shards, status.failed
    );
    if let Some(s) = &status.live {
        let done = s.accepted + s.rejected + s.failed;
        println!(
            "this run: {done} of {} items ({} already done before), {:.1} items/s, ETA {}, {} in flight",
            s.total,
            s.already_done,
            s.items_per_second,
            s.eta_seconds
                .map(|e| humantime::format_duration(Duration::from_secs(e as u64)).to_string())
                .unwrap_or_else(|| "unknown".into()),
            s.in_flight
        );
        println!(
            "tokens: {} prompt, {} completion; started {}, updated {}{}",
            s.prompt_tokens,
            s.completion_tokens,
            s.started_at,
            s.updated_at,
            status
                .seconds_since_update
                .map(|a| format!(" ({a} s ago)"))
                .unwrap_or_default()
        );
        println!(
            "cost: {} this run{} ({} answers paid for, {} from the cache for free); {} for the dataset",
            s.cost_usd.map_or_else(
                || "unknown (no price for the model)".to_string(),
                |c| format!("${c:.4}")
            ),
            s.max_cost_usd
                .map(|b| format!(" of a ${b:.2} budget"))
                .unwrap_or_default(),
            s.billed_requests,
            s.cache_hits,
            s.dataset_cost_usd
                .map_or_else(|| "unknown".to_string(), |c| format!("${c:.4}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds_since(rfc3339: &str) -> Option<u64> {
    let then = humantime::parse_rfc3339(rfc3339).ok()?;
    SystemTime::now()
        .duration_since(then)
        .ok()
        .map(|d| d.as_secs())
}

/// Whether the build's process still runs (on this machine; elsewhere the state file's age tells).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}
