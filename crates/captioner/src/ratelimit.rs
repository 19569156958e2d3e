//! Request and token rate limits: configured, or learned from `x-ratelimit-*` headers.
//!
//! Two mechanisms, both off until there is something to obey:
//!
//! - **Pacing** (the governor crate's GCRA): at most `requests` and `tokens` per window (a minute
//!   unless configured otherwise), whichever is lower of the configured figure and the server's
//!   `x-ratelimit-limit-requests` / `-tokens`. Requests are spread evenly (burst 1), which never
//!   exceeds a fixed window nor a token bucket; tokens may come in chunks of a tenth of the limit.
//! - **Remaining**: when an answer says `x-ratelimit-remaining-requests: 0` (or fewer tokens left
//!   than the last request used), no new request starts before `x-ratelimit-reset-*` has passed.
//!
//! With no configuration and no headers nothing is limited: self-hosted servers send no headers,
//! and a fixed fallback rate would leave their GPUs idle.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Configured limits; 0 means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests per window.
    pub requests: u32,
    /// Prompt plus completion tokens per window.
    pub tokens: u32,
    /// The window the configured limits and the server's `x-ratelimit-limit-*` refer to.
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests: 0,
            tokens: 0,
            window: Duration::from_secs(60),
        }
    }
}

/// The limits in force now, for progress lines and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitState {
    /// Requests per window in force (0: none).
    pub requests: u32,
    /// Tokens per window in force (0: none).
    pub tokens: u32,
    /// Limits learned from the server's headers (0: none sent).
    pub learned_requests: u32,
    /// See `learned_requests`.
    pub learned_tokens: u32,
}

struct Pacer {
    limit: u32,
    burst: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

#[derive(Default)]
struct Inner {
    learned_requests: u32,
    learned_tokens: u32,
    requests: Option<Pacer>,
    tokens: Option<Pacer>,
    paused_until: Option<Instant>,
}

/// Paces requests to the limits in force; cheap to share.
pub struct RateGate {
    config: RateLimitConfig,
    inner: Mutex<Inner>,
}

fn pacer(limit: u32, window: Duration, burst: u32) -> Option<Pacer> {
    let per = window.checked_div(limit)?;
    let burst = NonZeroU32::new(burst.clamp(1, limit))?;
    let quota = Quota::with_period(per.max(Duration::from_nanos(1)))?.allow_burst(burst);
    Some(Pacer {
        limit,
        burst: burst.get(),
        limiter: Arc::new(RateLimiter::direct(quota)),
    })
}

/// The lower of two limits where 0 means none.
fn lower(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

impl RateGate {
    /// A gate with the configured limits (none if both are 0).
    pub fn new(config: RateLimitConfig) -> RateGate {
        let gate = RateGate {
            config,
            inner: Mutex::new(Inner::default()),
        };
        {
            let mut inner = gate.lock();
            gate.refresh(&mut inner);
        }
        gate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds the pacers when the limits in force changed.
    fn refresh(&self, inner: &mut Inner) {
        let requests = lower(self.config.requests, inner.learned_requests);
        if inner.requests.as_ref().map_or(0, |p| p.limit) != requests {
            inner.requests = pacer(requests, self.config.window, 1);
        }
        let tokens = lower(self.config.tokens, inner.learned_tokens);
        if inner.tokens.as_ref().map_or(0, |p| p.limit) != tokens {
            inner.tokens = pacer(tokens, self.config.window, tokens / 10);
        }
    }

    /// The limits in force.
    pub fn state(&self) -> RateLimitState {
        let inner = self.lock();
        RateLimitState {
            requests: inner.requests.as_ref().map_or(0, |p| p.limit),
            tokens: inner.tokens.as_ref().map_or(0, |p| p.limit),
            learned_requests: inner.learned_requests,
            learned_tokens: inner.learned_tokens,
        }
    }

    /// Waits until a request of about `tokens` tokens may start.
    pub async fn wait(&self, tokens: u32) {
        let (pause, requests, token_pacer) = {
            let inner = self.lock();
            (
                inner.paused_until,
                inner.requests.as_ref().map(|p| p.limiter.clone()),
                inner
                    .tokens
                    .as_ref()
                    .map(|p| (p.limiter.clone(), tokens.clamp(1, p.burst))),
            )
        };
        if let Some(until) = pause {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
        if let Some(limiter) = requests {
            limiter.until_ready().await;
        }
        if let Some((limiter, n)) = token_pacer
            && let Some(n) = NonZeroU32::new(n)
        {
            // n is clamped to the burst, so capacity always suffices.
            let _ = limiter.until_n_ready(n).await;
        }
    }

    /// Learns from an answer's headers; `last_tokens` is what the request used (for "too few
    /// tokens left").
    pub fn observe(&self, headers: &HeaderMap, last_tokens: u32) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let reset = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_reset)
        };
        let limit_requests = number("x-ratelimit-limit-requests");
        let limit_tokens = number("x-ratelimit-limit-tokens");
        let mut pause: Option<Duration> = None;
        if number("x-ratelimit-remaining-requests") == Some(0) {
            pause = reset("x-ratelimit-reset-requests").or(Some(Duration::from_secs(1)));
        }
        if let Some(left) = number("x-ratelimit-remaining-tokens")
            && left < u64::from(last_tokens.max(1))
        {
            let wait = reset("x-ratelimit-reset-tokens").unwrap_or(Duration::from_secs(1));
            pause = Some(pause.map_or(wait, |p| p.max(wait)));
        }
        if limit_requests.is_none() && limit_tokens.is_none() && pause.is_none() {
            return;
        }
        let mut inner = self.lock();
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        if let Some(limit) = limit_requests {
            inner.learned_requests = clamp(limit);
        }
        if let Some(limit) = limit_tokens {
            inner.learned_tokens = clamp(limit);
        }
        if let Some(pause) = pause {
            // Never trust an absurd reset: at most one window.
            let until = Instant::now() + pause.min(self.config.window);
            inner.paused_until = Some(inner.paused_until.map_or(until, |u| u.max(until)));
        }
        self.refresh(&mut inner);
    }
}

/// Parses OpenAI's reset durations: `12ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.5s`.
pub fn parse_reset(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let scale = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += value * scale;
        any = true;
    }
    if !number.is_empty() {
        // A bare number: seconds.
        total += number.parse::<f64>().ok()?;
        any = true;
    }
    (any && total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn reset_durations_parse() {
        assert_eq!(parse_reset("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_reset(""), None);
        assert_eq!(parse_reset("soon"), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn nothing_is_limited_without_configuration_or_headers() {
        let gate = RateGate::new(RateLimitConfig::default());
        gate.observe(&HeaderMap::new(), 100);
        assert_eq!(gate.state(), RateLimitState::default());
    }

    #[test]
    fn limits_are_learned_and_the_lower_one_wins() {
        let gate = RateGate::new(RateLimitConfig {
            requests: 500,
            tokens: 0,
            window: Duration::from_secs(60),
        });
        assert_eq!(gate.state().requests, 500);
        gate.observe(
            &headers(&[
                ("x-ratelimit-limit-requests", "300"),
                ("x-ratelimit-limit-tokens", "150000"),
                ("x-ratelimit-remaining-requests", "299"),
                ("x-ratelimit-remaining-tokens", "149000"),
            ]),
            1000,
        );
        let state = gate.state();
        assert_eq!((state.requests, state.tokens), (300, 150_000));
        assert_eq!(state.learned_requests, 300);
        assert!(gate.lock().paused_until.is_none());
    }

    #[tokio::test]
    async fn no_remaining_requests_pauses_until_the_reset() {
        let gate = RateGate::new(RateLimitConfig::default());
        gate.observe(
            &headers(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "150ms"),
            ]),
            10,
        );
        let paused = gate.lock().paused_until.unwrap();
        assert!(paused > Instant::now() + Duration::from_millis(100));
        gate.wait(10).await;
        assert!(Instant::now() >= paused);
    }

    #[tokio::test]
    async fn requests_are_paced() {
        // One per minute: after the first request the pacer refuses a second at once.
        let gate = RateGate::new(RateLimitConfig {
            requests: 1,
            tokens: 0,
            window: Duration::from_secs(60),
        });
        gate.wait(1).await;
        let limiter = gate.lock().requests.as_ref().unwrap().limiter.clone();
        assert!(limiter.check().is_err());
    }

    proptest! {
        #[test]
        fn reset_parsing_never_panics(text in "[0-9hms. a-z]{0,12}") {
            let _ = parse_reset(&text);
        }
    }
}
