//! Progress of a run: an indicatif bar on a terminal, periodic plain log lines otherwise, a
//! `run-state.json` beside the journal that `build-dataset status` reads from another process,
//! and the figures the Prometheus metrics endpoint serves.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often plain log lines and the state file are written.
const PLAIN_INTERVAL: Duration = Duration::from_secs(10);
const STATE_INTERVAL: Duration = Duration::from_secs(2);

/// Shared progress state; cheap to clone into every task.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    already_done: AtomicU64,
    prepared: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    shards: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// The captioner's current concurrency limit, 0 when it does not adapt.
    concurrency: AtomicU64,
}

/// Money: what answers cost at the model's price, the budget, and the dataset's earlier spend.
#[derive(Default)]
struct Money {
    price: Option<retina_captioner::Price>,
    /// This run's spend.
    run: retina_captioner::Spend,
    /// Spend of earlier runs into the same dataset (from the ledger).
    earlier: retina_captioner::Spend,
    /// Stop once this run has spent this many dollars.
    budget: Option<f64>,
    /// Where the dataset's cumulative spend is kept (`journal/spend.json`).
    ledger: Option<PathBuf>,
}

struct Inner {
    bar: ProgressBar,
    counters: Counters,
    money: Mutex<Money>,
    plain: bool,
    state_file: Mutex<Option<PathBuf>>,
    last_line: Mutex<Instant>,
    last_state: Mutex<Instant>,
    started: Instant,
    started_at: String,
}

/// A snapshot of a run, as written to `journal/run-state.json` and served as metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub pid: u32,
    pub started_at: String,
    pub updated_at: String,
    /// `running`, `finished` or `stopped`.
    pub phase: String,
    pub total: u64,
    pub already_done: u64,
    pub prepared: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub shards_committed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub items_per_second: f64,
    /// Throughput of the image stage alone (items prepared per second).
    pub images_per_second: f64,
    /// The captioner's current concurrency limit, when it adapts it.
    pub concurrency_limit: Option<u64>,
    pub eta_seconds: Option<f64>,
    /// Answers this run paid for (not from the response cache).
    #[serde(default)]
    pub billed_requests: u64,
    /// Answers this run took from the response cache, free.
    #[serde(default)]
    pub cache_hits: u64,
    /// Prompt tokens of billed answers the provider served from its prompt cache.
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// US dollars this run spent; `None` when the model has no price.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// US dollars spent on the dataset over all runs, this one included.
    #[serde(default)]
    pub dataset_cost_usd: Option<f64>,
    /// The run's budget (`--max-cost`), if any.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

impl Progress {
    /// A bar when standard error is a terminal; plain log lines every ten seconds otherwise.
    pub fn new() -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta}\n{msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        Progress {
            inner: Arc::new(Inner {
                bar,
                counters: Counters::default(),
                money: Mutex::new(Money::default()),
                plain,
                state_file: Mutex::new(None),
                last_line: Mutex::new(Instant::now()),
                last_state: Mutex::new(Instant::now() - STATE_INTERVAL),
                started: Instant::now(),
                started_at: now_rfc3339(),
            }),
        }
    }

    /// A display that shows nothing (benchmarks, tests).
    pub fn hidden() -> Progress {
        let progress = Progress::new();
        progress
            .inner
            .bar
            .set_draw_target(ProgressDrawTarget::hidden());
        progress
    }

    /// Also keep `path` up to date with a [`RunState`] (for `status` from another process).
    pub fn write_state_to(&self, path: PathBuf) {
        if let Ok(mut slot) = self.inner.state_file.lock() {
            *slot = Some(path);
        }
    }

    /// Prices answers at `price` (none: tokens are counted, dollars are not) and stops counting
    /// toward `budget` dollars; `ledger` keeps the dataset's spend across runs, starting from
    /// `earlier`.
    pub fn set_money(
        &self,
        price: Option<retina_captioner::Price>,
        budget: Option<f64>,
        ledger: Option<PathBuf>,
        earlier: retina_captioner::Spend,
    ) {
        let mut money = self.money();
        money.price = price;
        money.budget = budget.filter(|b| *b > 0.0);
        money.ledger = ledger;
        money.earlier = earlier;
    }

    fn money(&self) -> std::sync::MutexGuard<'_, Money> {
        // Plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.inner.money.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answer's cost (nothing for a response-cache hit).
    pub fn answer_cost(&self, reply: &retina_captioner::CaptionReply) {
        let mut money = self.money();
        let price = money.price;
        money.run.add_answer(
            price.as_ref(),
            u64::from(reply.usage.prompt_tokens),
            u64::from(reply.cached_prompt_tokens),
            u64::from(reply.usage.completion_tokens),
            reply.from_cache,
        );
    }

    /// When this run has spent its budget: a message saying so.
    pub fn budget_reached(&self) -> Option<String> {
        let money = self.money();
        let budget = money.budget?;
        let spent = money.run.usd.unwrap_or(0.0);
        (spent >= budget)
            .then(|| format!("cost budget reached: spent ${spent:.4} of --max-cost ${budget:.4}"))
    }

    pub fn start(&self, to_do: u64, already_done: u64) {
        let c = &self.inner.counters;
        c.total.store(to_do, Ordering::Relaxed);
        c.already_done.store(already_done, Ordering::Relaxed);
        // Log before the bar starts drawing, so the line does not strand a copy of the bar.
        tracing::info!(to_do, already_done, "starting");
        self.inner.bar.set_length(to_do);
        if !self.inner.plain && !self.inner.bar.is_hidden() {
            self.inner
                .bar
                .enable_steady_tick(Duration::from_millis(200));
        }
        self.write_state("running", true);
    }

    /// Replaces the totals given to [`Progress::start`] (an estimate for a streamed input) with
    /// the exact figures once the whole input has been read.
    pub fn set_totals(&self, to_do: u64, already_done: u64) {
        let c = &self.inner.counters;
        c.total.store(to_do, Ordering::Relaxed);
        c.already_done.store(already_done, Ordering::Relaxed);
        self.inner.bar.set_length(to_do);
    }

    /// The image stage finished one item (successfully or not).
    pub fn item_prepared(&self) {
        self.inner.counters.prepared.fetch_add(1, Ordering::Relaxed);
    }

    /// A captioner request started / finished (for the in-flight gauge and token totals).
    pub fn request_started(&self) {
        self.inner
            .counters
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records the captioner's current concurrency limit.
    pub fn concurrency_limit(&self, limit: Option<usize>) {
        let value = limit.map_or(0, |l| l as u64);
        self.inner
            .counters
            .concurrency
            .store(value, Ordering::Relaxed);
    }

    pub fn request_finished(&self, prompt_tokens: u32, completion_tokens: u32) {
        let c = &self.inner.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
        c.completion_tokens
            .fetch_add(u64::from(completion_tokens), Ordering::Relaxed);
    }

    pub fn item_done(&self, outcome: &str) {
        let c = &self.inner.counters;
        let counter = match outcome {
            "accepted" => &c.accepted,
            "rejected" => &c.rejected,
            _ => &c.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.bar.inc(1);
        self.inner.bar.set_message(self.counts());
        if self.inner.plain {
            self.maybe_log_line();
        }
        self.write_state("running", false);
    }

    pub fn shard_committed(&self, count: usize) {
        self.inner
            .counters
            .shards
            .fetch_add(count as u64, Ordering::Relaxed);
        self.write_state("running", true);
    }

    /// Ends the display; `phase` is `finished` or `stopped`.
    pub fn finish(&self, phase: &str) {
        self.inner.bar.finish_and_clear();
        self.write_state(phase, true);
    }

    /// The current figures.
    pub fn snapshot(&self, phase: &str) -> RunState {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let done = load(&c.accepted) + load(&c.rejected) + load(&c.failed);
        let elapsed = self.inner.started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / elapsed;
        let remaining = load(&c.total).saturating_sub(done);
        let (run, dataset, budget) = {
            let money = self.money();
            (money.run, money.earlier.plus(&money.run), money.budget)
        };
        RunState {
            pid: std::process::id(),
            started_at: self.inner.started_at.clone(),
            updated_at: now_rfc3339(),
            phase: phase.to_string(),
            total: load(&c.total),
            already_done: load(&c.already_done),
            prepared: load(&c.prepared),
            accepted: load(&c.accepted),
            rejected: load(&c.rejected),
            failed: load(&c.failed),
            in_flight: load(&c.in_flight),
            shards_committed: load(&c.shards),
            prompt_tokens: load(&c.prompt_tokens),
            completion_tokens: load(&c.completion_tokens),
            items_per_second: rate,
            images_per_second: load(&c.prepared) as f64 / elapsed,
            concurrency_limit: Some(load(&c.concurrency)).filter(|l| *l > 0),
            eta_seconds: (rate > 0.0).then(|| remaining as f64 / rate),
            billed_requests: run.requests,
            cache_hits: run.cache_hits,
            cached_prompt_tokens: run.cached_prompt_tokens,
            cost_usd: run.usd,
            dataset_cost_usd: dataset.usd,
            max_cost_usd: budget,
        }
    }

    fn counts(&self) -> String {
        let s = self.snapshot("running");
        format!(
            "{:.1} items/s · accepted {} · rejected {} · failed {} · in flight {}{} · images prepared {} ({:.1}/s) · tokens {} in / {} out{} · shards {}",
            s.items_per_second,
            s.accepted,
            s.rejected,
            s.failed,
            s.in_flight,
            s.concurrency_limit
                .map(|l| format!(" (limit {l})"))
                .unwrap_or_default(),
            s.prepared,
            s.images_per_second,
            s.prompt_tokens,
            s.completion_tokens,
            cost_text(&s),
            s.shards_committed
        )
    }

    fn maybe_log_line(&self) {
        let Ok(mut last) = self.inner.last_line.lock() else {
            return;
        };
        if last.elapsed() < PLAIN_INTERVAL {
            return;
        }
        *last = Instant::now();
        let s = self.snapshot("running");
        tracing::info!(
            done = s.accepted + s.rejected + s.failed,
            total = s.total,
            rate = format!("{:.1}/s", s.items_per_second),
            eta = s
                .eta_seconds
                .map(|e| format!("{e:.0}s"))
                .unwrap_or_default(),
            "{}",
            self.counts()
        );
    }

    /// Writes the state file atomically, at most every two seconds unless `force`.
    fn write_state(&self, phase: &str, force: bool) {
        let Ok(slot) = self.inner.state_file.lock() else {
            return;
        };
        let Some(path) = slot.as_ref() else {
            return;
        };
        if let Ok(mut last) = self.inner.last_state.lock() {
            if !force && last.elapsed() < STATE_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        let Ok(text) = serde_json::to_string_pretty(&self.snapshot(phase)) else {
            return;
        };
        let tmp = path.with_extension("json.tmp");
        // Best effort: the state file is a convenience, never a reason to stop a run.
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
        drop(slot);
        self.write_ledger();
    }

    /// Writes the dataset's cumulative spend (atomically), so a crash loses at most two seconds.
    pub fn write_ledger(&self) {
        let (path, spend) = {
            let money = self.money();
            let Some(path) = money.ledger.clone() else {
                return;
            };
            (path, money.earlier.plus(&money.run))
        };
        if let Err(err) = write_spend(&path, &spend) {
            tracing::warn!(path = %path.display(), %err, "cannot record the dataset's spend");
        }
    }
}

/// `, $1.2345 (3 cache hits)` for the live line: the run's cost, the budget, free cache hits.
fn cost_text(s: &RunState) -> String {
    let mut text = String::new();
    if let Some(usd) = s.cost_usd {
        text.push_str(&format!(" · cost ${usd:.4}"));
        if let Some(budget) = s.max_cost_usd {
            text.push_str(&format!(" of ${budget:.2}"));
        }
    }
    if s.cache_hits > 0 {
        text.push_str(&format!(" · {} cached (free)", s.cache_hits));
    }
    text
}

/// The dataset's cumulative spend, kept beside the journal.
pub fn spend_path(out: &std::path::Path) -> PathBuf {
    out.join("journal").join("spend.json")
}

/// Reads the spend ledger; a missing file is no spend yet.
pub fn read_spend(path: &std::path::Path) -> anyhow::Result<retina_captioner::Spend> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{} is not a spend record: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(retina_captioner::Spend::default())
        }
        Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
    }
}

pub fn write_spend(path: &std::path::Path, spend: &retina_captioner::Spend) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(spend)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl RunState {
    /// The figures in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP retinalogos_{name} {help}\n# TYPE retinalogos_{name} {kind}\nretinalogos_{name} {value}\n"
            ));
        };
        metric(
            "items_total",
            "gauge",
            "Items this run works on.",
            self.total as f64,
        );
        metric(
            "items_already_done",
            "gauge",
            "Items done by earlier runs.",
            self.already_done as f64,
        );
        metric(
            "items_prepared_total",
            "counter",
            "Items through the image stage.",
            self.prepared as f64,
        );
        metric(
            "items_accepted_total",
            "counter",
            "Items accepted.",
            self.accepted as f64,
        );
        metric(
            "items_rejected_total",
            "counter",
            "Items rejected.",
            self.rejected as f64,
        );
        metric(
            "items_failed_total",
            "counter",
            "Items failed (retried next run).",
            self.failed as f64,
        );
        metric(
            "requests_in_flight",
            "gauge",
            "Captioner requests in flight.",
            self.in_flight as f64,
        );
        metric(
            "shards_committed_total",
            "counter",
            "Shards made durable.",
            self.shards_committed as f64,
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens used.",
            self.prompt_tokens as f64,
        );
        metric(
            "completion_tokens_total",
            "counter",
            "Completion tokens used.",
            self.completion_tokens as f64,
        );
        metric(
            "items_per_second",
            "gauge",
            "Items finished per second since the start.",
            self.items_per_second,
        );
        metric(
            "images_per_second",
            "gauge",
            "Items through the image stage per second since the start.",
            self.images_per_second,
        );
        metric(
            "concurrency_limit",
            "gauge",
            "The captioner's current concurrency limit (0: fixed).",
            self.concurrency_limit.unwrap_or(0) as f64,
        );
        metric(
            "billed_requests_total",
            "counter",
            "Answers paid for (not from the response cache).",
            self.billed_requests as f64,
        );
        metric(
            "cache_hits_total",
            "counter",
            "Answers taken from the response cache, free.",
            self.cache_hits as f64,
        );
        metric(
            "cached_prompt_tokens_total",
            "counter",
            "Prompt tokens the provider served from its prompt cache.",
            self.cached_prompt_tokens as f64,
        );
        if let Some(usd) = self.cost_usd {
            metric(
                "cost_usd_total",
                "counter",
                "US dollars this run spent, at the configured price.",
                usd,
            );
        }
        if let Some(budget) = self.max_cost_usd {
            metric(
                "cost_budget_usd",
                "gauge",
                "The run's --max-cost budget in US dollars.",
                budget,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_counts_and_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::hidden();
        let path = dir.path().join("run-state.json");
        progress.write_state_to(path.clone());
        progress.start(10, 5);
        progress.request_started();
        progress.request_finished(100, 50);
        progress.set_money(
            Some(retina_captioner::Price {
                input: 1.0,
                output: 2.0,
                cached_input: None,
                batch_factor: None,
            }),
            Some(0.0002),
            Some(dir.path().join("spend.json")),
            retina_captioner::Spend {
                usd: Some(1.0),
                ..Default::default()
            },
        );
        let reply = |from_cache| retina_captioner::CaptionReply {
            raw: String::new(),
            usage: retina_records::Usage {
                prompt_tokens: 100,
                completion_tokens: 50,
            },
            latency_ms: 0,
            finish_reason: "stop".into(),
            cached_prompt_tokens: 0,
            from_cache,
        };
        progress.answer_cost(&reply(true));
        assert!(progress.budget_reached().is_none(), "a cache hit is free");
        progress.answer_cost(&reply(false));
        assert!(progress.budget_reached().unwrap().contains("budget"));
        progress.concurrency_limit(Some(12));
        progress.item_prepared();
        progress.item_done("accepted");
        progress.item_done("rejected");
        progress.finish("finished");
        let state: RunState =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((state.total, state.already_done), (10, 5));
        assert_eq!((state.accepted, state.rejected, state.failed), (1, 1, 0));
        assert_eq!((state.prompt_tokens, state.completion_tokens), (100, 50));
        assert_eq!(state.in_flight, 0);
        assert_eq!(state.phase, "finished");
        assert_eq!(state.concurrency_limit, Some(12));
        assert_eq!(state.prepared, 1);
        assert!(state.images_per_second > 0.0);
        assert_eq!(state.pid, std::process::id());
        assert_eq!((state.billed_requests, state.cache_hits), (1, 1));
        assert!((state.cost_usd.unwrap() - 0.0002).abs() < 1e-12);
        assert!((state.dataset_cost_usd.unwrap() - 1.0002).abs() < 1e-12);
        let ledger = read_spend(&dir.path().join("spend.json")).unwrap();
        assert!((ledger.usd.unwrap() - 1.0002).abs() < 1e-12);
        assert!(
            state
                .prometheus()
                .contains("\nretinalogos_cost_usd_total 0.0002\n")
        );
    }

    #[test]
    fn prometheus_text_has_help_type_and_value() {
        let state = RunState {
            accepted: 7,
            ..RunState::default()
        };
        let text = state.prometheus();
        assert!(text.contains("# TYPE retinalogos_items_accepted_total counter"));
        assert!(text.contains("\nretinalogos_items_accepted_total 7\n"));
    }
}
