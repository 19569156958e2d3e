//! Progress display: an indicatif bar on a terminal, periodic plain log lines otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared progress state; cheap to clone into every task.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    bar: ProgressBar,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    shards: AtomicU64,
    total: AtomicU64,
    plain: bool,
    last_line: Mutex<Instant>,
    started: Instant,
}

impl Progress {
    /// A bar when standard error is a terminal; plain log lines every `interval` otherwise.
    pub fn new() -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Progress {
            inner: Arc::new(Inner {
                bar,
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                shards: AtomicU64::new(0),
                total: AtomicU64::new(0),
                plain,
                last_line: Mutex::new(Instant::now()),
                started: Instant::now(),
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

    pub fn start(&self, to_do: u64, already_done: u64) {
        self.inner.total.store(to_do, Ordering::Relaxed);
        self.inner.bar.set_length(to_do);
        tracing::info!(to_do, already_done, "starting");
    }

    pub fn item_done(&self, outcome: &str) {
        let counter = match outcome {
            "accepted" => &self.inner.accepted,
            "rejected" => &self.inner.rejected,
            _ => &self.inner.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.bar.inc(1);
        self.inner.bar.set_message(self.counts());
        if self.inner.plain {
            self.maybe_log_line();
        }
    }

    pub fn shard_committed(&self, count: usize) {
        self.inner.shards.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.inner.bar.finish_and_clear();
    }

    fn counts(&self) -> String {
        format!(
            "accepted {} rejected {} failed {} shards {}",
            self.inner.accepted.load(Ordering::Relaxed),
            self.inner.rejected.load(Ordering::Relaxed),
            self.inner.failed.load(Ordering::Relaxed),
            self.inner.shards.load(Ordering::Relaxed)
        )
    }

    fn maybe_log_line(&self) {
        let Ok(mut last) = self.inner.last_line.lock() else {
            return;
        };
        if last.elapsed() < Duration::from_secs(10) {
            return;
        }
        *last = Instant::now();
        let done = self.inner.bar.position();
        let rate = done as f64 / self.inner.started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            done,
            total = self.inner.total.load(Ordering::Relaxed),
            rate = format!("{rate:.1}/s"),
            "{}",
            self.counts()
        );
    }
}
