//! Adaptive concurrency: how many requests the client keeps in flight against one endpoint.
//!
//! The limit starts small and doubles every round trip (slow start, +1 per success) while the
//! endpoint's latency holds; once latency rises above its baseline the server has started to
//! queue, so the limit then grows only ~1/16 per round trip (a quarter while latency is back at
//! the baseline) and shrinks by 10% (at most once per
//! round trip) when smoothed latency passes 1.5x the baseline, but latency alone never takes it
//! below the starting limit. 429, 503, timeouts and connection resets cut it by 30% (once per
//! round trip; each further one within that round trip takes one slot away). Holding the
//! limit where latency is 1.1-1.5x the baseline keeps every server slot busy with a short queue:
//! full throughput, no overload. It never exceeds the configured maximum nor drops below 1.
//!
//! The limit is enforced by a semaphore that is resized in place: growth adds permits, shrinking
//! takes idle permits away at once and retires busy ones as their requests finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Smoothing of the latency average: the last ten answers, or an eighth of the limit's worth at
/// large limits.
const ALPHA: f64 = 0.1;
const MIN_ALPHA: f64 = 0.001;
/// Latency ratio above which the server is taken to be queueing (leaves slow start).
const QUEUEING: f64 = 1.1;
/// Latency ratio above which the limit shrinks.
const OVERLOADED: f64 = 1.5;
/// Time constant of the baseline's upward drift.
const BASELINE_DRIFT: Duration = Duration::from_secs(60);

/// Why a request ended, as far as concurrency is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered (whatever the answer's content) after this long.
    Answered(Duration),
    /// 429, 503 or 529: the server asks for less.
    Overloaded,
    /// Timeout or connection reset: probably overload too.
    Dropped,
    /// Other errors say nothing about load.
    Neutral,
}

/// Settings of the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Limit at the start.
    pub initial: usize,
    /// Never more in flight than this.
    pub max: usize,
    /// False: always `max` in flight (a fixed limit).
    pub adaptive: bool,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            initial: 16,
            max: 256,
            adaptive: true,
        }
    }
}

/// A snapshot of the limiter, for progress lines and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterStats {
    /// The current limit.
    pub limit: usize,
    /// The highest limit reached.
    pub peak_limit: usize,
    /// Overload answers seen (429, 503).
    pub overloaded: u64,
    /// Timeouts and connection resets seen.
    pub dropped: u64,
    /// Smoothed answer latency, in seconds.
    pub latency_s: f64,
    /// The latency baseline, in seconds.
    pub baseline_s: f64,
}

struct State {
    limit: f64,
    /// Permits that exist (idle in the semaphore or held).
    granted: usize,
    /// Held permits to retire when released.
    debt: usize,
    slow_start: bool,
    ewma: Option<f64>,
    baseline: Option<f64>,
    last_decrease: Option<Instant>,
    /// When the last answer was recorded (the baseline drifts by time).
    last_answer: Option<Instant>,
    /// The limit when the server last refused (429/503) or dropped a request.
    ceiling: Option<f64>,
    peak: usize,
}

/// The adaptive concurrency limiter; cheap to share.
pub struct Limiter {
    config: LimiterConfig,
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
    overloaded: AtomicU64,
    dropped: AtomicU64,
    /// `State::debt`, readable without the lock.
    owed: AtomicUsize,
}

/// One slot in flight; returned (or retired) on drop.
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Most releases owe nothing: skip the lock then (a stale read only delays a retirement
        // to a later release).
        if self.limiter.owed.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(permit) = self.permit.take() {
            let mut state = self.limiter.lock();
            if state.debt > 0 {
                state.debt -= 1;
                state.granted -= 1;
                permit.forget();
                self.limiter.owed.store(state.debt, Ordering::Relaxed);
            }
        }
    }
}

impl Limiter {
    /// A limiter starting at `config.initial` (clamped to `1..=max`).
    pub fn new(config: LimiterConfig) -> Arc<Limiter> {
        let max = config.max.max(1);
        let initial = if config.adaptive {
            config.initial.clamp(1, max)
        } else {
            max
        };
        Arc::new(Limiter {
            config: LimiterConfig { max, ..config },
            semaphore: Arc::new(Semaphore::new(initial)),
            state: Mutex::new(State {
                limit: initial as f64,
                granted: initial,
                debt: 0,
                slow_start: true,
                ewma: None,
                baseline: None,
                last_decrease: None,
                last_answer: None,
                ceiling: None,
                peak: initial,
            }),
            overloaded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            owed: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent numbers; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        // The semaphore is never closed, so acquisition only fails if it were; then run unlimited.
        let permit = self.semaphore.clone().acquire_owned().await.ok();
        Permit {
            permit,
            limiter: self.clone(),
        }
    }

    /// Feeds what happened to one request back into the limit.
    pub fn record(&self, signal: Signal) {
        if !self.config.adaptive {
            return;
        }
        let mut state = self.lock();
        let now = Instant::now();
        let round_trip = Duration::from_secs_f64(state.baseline.unwrap_or(0.05).clamp(0.001, 60.0));
        match signal {
            Signal::Neutral => return,
            Signal::Overloaded | Signal::Dropped => {
                let counter = if signal == Signal::Overloaded {
                    &self.overloaded
                } else {
                    &self.dropped
                };
                counter.fetch_add(1, Ordering::Relaxed);
                state.slow_start = false;
                if state
                    .last_decrease
                    .is_none_or(|t| now.duration_since(t) >= round_trip)
                {
                    state.ceiling = Some(state.limit);
                    state.limit *= 0.7;
                    state.last_decrease = Some(now);
                } else {
                    // Within the round trip of a cut, each further refusal still retires its
                    // slot: a refusal comes back at once, so without this an overshoot (slow
                    // start runs a round trip ahead of its signal) cycles the surplus slots
                    // through hundreds of 429s before the next cut.
                    state.limit -= 1.0;
                }
            }
            Signal::Answered(latency) => {
                let latency = latency.as_secs_f64().max(1e-6);
                // In slow start the average is the last ten answers, so a queue stops the
                // doubling within a few answers (a late stop overshoots into 429s). After it, the
                // average spans about an eighth of the requests in flight (an eighth of a round
                // trip): ten answers are a millisecond at 10,000 answers/s, where one scheduling
                // hiccup of the client read as a queue and cut the limit below the server's slots.
                let alpha = if state.slow_start {
                    ALPHA
                } else {
                    (8.0 / state.limit.max(1.0)).clamp(MIN_ALPHA, ALPHA)
                };
                let ewma = match state.ewma {
                    Some(previous) => previous + alpha * (latency - previous),
                    None => latency,
                };
                state.ewma = Some(ewma);
                // The baseline follows the smoothed minimum, drifting up slowly so a server that
                // became slower for good is re-learned instead of read as overload forever. The
                // drift is by time (a minute's time constant), not per answer: per answer, a
                // server answering 10,000 requests/s re-learned its queue as the baseline within
                // a tenth of a second, and the limit crept into the server's queue until 429s.
                let elapsed = state
                    .last_answer
                    .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
                state.last_answer = Some(now);
                let drift = (elapsed / BASELINE_DRIFT.as_secs_f64()).min(1.0);
                let baseline = match state.baseline {
                    Some(b) if ewma >= b => b + (ewma - b) * drift,
                    _ => ewma,
                };
                state.baseline = Some(baseline);
                let ratio = ewma / baseline;
                if ratio > OVERLOADED {
                    state.slow_start = false;
                    if state
                        .last_decrease
                        .is_none_or(|t| now.duration_since(t) >= round_trip)
                    {
                        // Latency alone never takes the limit below where it started: a server
                        // whose slots share the same cores (llama.cpp on a CPU) answers each
                        // request slower with more in flight yet gains throughput; only the
                        // server's refusals, timeouts and resets (above) cut below it.
                        let floor = self.config.initial.clamp(1, self.config.max) as f64;
                        state.limit = (state.limit * 0.9).max(floor.min(state.limit));
                        state.last_decrease = Some(now);
                    }
                } else if state.slow_start && ratio <= QUEUEING {
                    state.limit += 1.0;
                } else {
                    state.slow_start = false;
                    if ratio <= QUEUEING && state.ceiling.is_none_or(|c| state.limit < 0.8 * c) {
                        // No queue in sight (slow start ended on a blip, or the server grew) and
                        // well below where the server last refused: a quarter more per round
                        // trip. Near a refusal the signal's round trip of delay would overshoot
                        // into the refusals again.
                        state.limit += (state.limit / 4.0).max(1.0) / state.limit;
                    } else if ratio <= QUEUEING * 1.1 {
                        // About 1/16 more per round trip: fast enough to follow a growing server,
                        // slow enough to hold a short queue.
                        state.limit += (state.limit / 16.0).max(1.0) / state.limit;
                    }
                }
            }
        }
        state.limit = state.limit.clamp(1.0, self.config.max as f64);
        self.resize(&mut state);
    }

    /// Brings the semaphore's permits to the current limit.
    fn resize(&self, state: &mut State) {
        let target = state.limit.floor() as usize;
        state.peak = state.peak.max(target);
        let effective = state.granted - state.debt;
        if target > effective {
            let mut grow = target - effective;
            // Cancel retirements first, then add new permits.
            let cancel = grow.min(state.debt);
            state.debt -= cancel;
            grow -= cancel;
            if grow > 0 {
                self.semaphore.add_permits(grow);
                state.granted += grow;
            }
        } else if target < effective {
            let mut shrink = effective - target;
            while shrink > 0 {
                match self.semaphore.try_acquire() {
                    Ok(idle) => {
                        idle.forget();
                        state.granted -= 1;
                        shrink -= 1;
                    }
                    Err(_) => break,
                }
            }
            state.debt += shrink;
        }
        self.owed.store(state.debt, Ordering::Relaxed);
    }

    /// The current state.
    pub fn stats(&self) -> LimiterStats {
        let state = self.lock();
        LimiterStats {
            limit: state.limit.floor() as usize,
            peak_limit: state.peak,
            overloaded: self.overloaded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            latency_s: state.ewma.unwrap_or(0.0),
            baseline_s: state.baseline.unwrap_or(0.0),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        let state = self.lock();
        state
            .granted
            .saturating_sub(self.semaphore.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(initial: usize, max: usize) -> Arc<Limiter> {
        Limiter::new(LimiterConfig {
            initial,
            max,
            adaptive: true,
        })
    }

    #[test]
    fn latency_alone_never_cuts_below_the_starting_limit() {
        let limiter = limiter(4, 10);
        limiter.record(Signal::Answered(Duration::from_millis(50)));
        assert_eq!(limiter.stats().limit, 5);
        // Latency triples (slots sharing cores): the limit shrinks back, but not below 4.
        for _ in 0..200 {
            limiter.record(Signal::Answered(Duration::from_millis(150)));
            std::thread::sleep(Duration::from_micros(100));
        }
        assert_eq!(limiter.stats().limit, 4);
        // A refusal still cuts below it (a round trip after the last cut).
        std::thread::sleep(Duration::from_millis(300));
        limiter.record(Signal::Overloaded);
        assert!(limiter.stats().limit < 4);
    }

    #[tokio::test]
    async fn slow_start_grows_one_per_answer_up_to_the_maximum() {
        let limiter = limiter(4, 10);
        for _ in 0..20 {
            limiter.record(Signal::Answered(Duration::from_millis(50)));
        }
        assert_eq!(limiter.stats().limit, 10);
        // Ten permits really exist.
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(limiter.acquire().await);
        }
        assert_eq!(limiter.semaphore.available_permits(), 0);
    }

    #[tokio::test]
    async fn overload_shrinks_and_busy_permits_retire_on_release() {
        let limiter = limiter(10, 10);
        let held: Vec<Permit> = futures_lite(limiter.clone(), 10).await;
        limiter.record(Signal::Overloaded);
        assert_eq!(limiter.stats().limit, 7);
        assert_eq!(limiter.stats().overloaded, 1);
        drop(held);
        assert_eq!(limiter.semaphore.available_permits(), 7);
        // A second overload within one round trip does not cut by 30% again (one cut per
        // congestion) but retires its own slot.
        limiter.record(Signal::Overloaded);
        assert_eq!(limiter.stats().limit, 6);
    }

    async fn futures_lite(limiter: Arc<Limiter>, n: usize) -> Vec<Permit> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(limiter.acquire().await);
        }
        held
    }

    #[test]
    fn rising_latency_leaves_slow_start_and_stops_growth() {
        let limiter = limiter(8, 1000);
        for _ in 0..20 {
            limiter.record(Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(limiter.stats().limit, 28);
        // The smoothed latency passes 1.1x the baseline within a few answers: slow start ends.
        for _ in 0..20 {
            limiter.record(Signal::Answered(Duration::from_millis(130)));
        }
        assert!(!limiter.lock().slow_start);
        let before = limiter.stats().limit;
        assert!(before < 28 + 10, "{before}");
        // 1.3x the baseline is a short queue: hold, neither grow nor cut.
        for _ in 0..200 {
            limiter.record(Signal::Answered(Duration::from_millis(130)));
        }
        assert_eq!(limiter.stats().limit, before);
    }

    #[test]
    fn many_fast_answers_do_not_relearn_a_queue_as_the_baseline() {
        // 512 slots at 50 ms answer 10,000 requests/s; a queue doubling the latency must still
        // read as a queue after thousands of answers in a short time, and cut the limit.
        let limiter = limiter(16, 4096);
        for _ in 0..2000 {
            limiter.record(Signal::Answered(Duration::from_millis(50)));
        }
        let before = limiter.stats().limit;
        for _ in 0..5000 {
            limiter.record(Signal::Answered(Duration::from_millis(100)));
        }
        let stats = limiter.stats();
        assert!(stats.baseline_s < 0.06, "{stats:?}");
        assert!(stats.limit < before, "{stats:?} vs {before}");
    }

    #[test]
    fn the_baseline_drifts_up_with_time_to_a_server_slower_for_good() {
        let limiter = limiter(4, 100);
        limiter.record(Signal::Answered(Duration::from_millis(50)));
        // Answers a second apart for five minutes, all four times slower.
        for _ in 0..300 {
            limiter.lock().last_answer = Some(Instant::now() - Duration::from_secs(1));
            limiter.record(Signal::Answered(Duration::from_millis(200)));
        }
        assert!(limiter.stats().baseline_s > 0.15, "{:?}", limiter.stats());
    }

    #[test]
    fn growth_slows_near_where_the_server_last_refused() {
        let limiter = limiter(16, 4096);
        for _ in 0..1000 {
            limiter.record(Signal::Answered(Duration::from_millis(50)));
        }
        assert_eq!(limiter.stats().limit, 1016);
        limiter.record(Signal::Overloaded);
        assert_eq!(limiter.stats().limit, 711);
        // A round trip of answers at the baseline latency: a quarter more per round trip only up
        // to 80% of the refused limit, then a sixteenth.
        for _ in 0..711 {
            limiter.record(Signal::Answered(Duration::from_millis(50)));
        }
        let limit = limiter.stats().limit;
        assert!((800..850).contains(&limit), "{limit}");
    }

    #[test]
    fn fixed_limit_ignores_signals() {
        let limiter = Limiter::new(LimiterConfig {
            initial: 1,
            max: 5,
            adaptive: false,
        });
        limiter.record(Signal::Overloaded);
        assert_eq!(limiter.stats().limit, 5);
        assert_eq!(limiter.semaphore.available_permits(), 5);
    }

    #[test]
    fn the_limit_stays_within_one_and_the_maximum() {
        let limiter = limiter(3, 6);
        for _ in 0..100 {
            limiter.record(Signal::Dropped);
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(limiter.stats().limit >= 1);
        for _ in 0..100 {
            limiter.record(Signal::Answered(Duration::from_millis(1)));
        }
        assert!(limiter.stats().limit <= 6);
    }
}
