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

struct Inner {
    bar: ProgressBar,
    counters: Counters,
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
        }
    }

    fn counts(&self) -> String {
        let s = self.snapshot("running");
        format!(
            "{:.1} items/s · accepted {} · rejected {} · failed {} · in flight {}{} · images prepared {} ({:.1}/s) · tokens {} in / {} out · shards {}",
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
    }
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
