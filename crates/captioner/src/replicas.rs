//! Several replicas of one model behind one captioner (`captioner.endpoints`).
//!
//! Each replica is a full [`OpenAiCaptioner`] with its own adaptive limiter, rate gate and
//! retries; they share the response cache folder (cache keys never name the endpoint). A request
//! goes to the healthy replica with the fewest requests in flight per unit of weight (ties: the
//! fewest sent per unit of weight), so in-flight work, and with equal latency the answers, follow
//! the weights, and a slow replica is not flooded while a fast one idles.
//!
//! A replica whose request still fails after its own retries (timeouts, 5xx, resets) is taken out
//! for a cooling-off period that doubles with each further failure (10 s up to 5 minutes) and the
//! request moves on to another replica; after the period the next request probes it, and one
//! success makes it healthy again. When every replica is cooling off, the one that comes back
//! first is tried anyway: a run never stalls because all replicas hiccuped at once. Refusals and
//! fatal errors (authentication, quota) are the answer's or the run's, not the replica's, and are
//! returned as they are.

use crate::{
    CaptionError, CaptionReply, CaptionRequest, Captioner, CaptionerInfo, OpenAiCaptioner,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// First cooling-off period of a failing replica.
const COOLDOWN: Duration = Duration::from_secs(10);
/// Longest cooling-off period.
const MAX_COOLDOWN: Duration = Duration::from_secs(300);

struct Replica {
    captioner: OpenAiCaptioner,
    weight: f64,
    in_flight: AtomicUsize,
    sent: AtomicU64,
    failed: AtomicU64,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    down_until: Option<Instant>,
    strikes: u32,
}

/// What one replica did, for progress lines, status and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStats {
    /// Base URL of the replica.
    pub endpoint: String,
    /// Its configured weight.
    pub weight: f64,
    /// Requests handed to it (each may include its own retries).
    pub sent: u64,
    /// Requests that still failed after its retries.
    pub failed: u64,
    /// False while it is cooling off after a failure.
    pub healthy: bool,
    /// Its adaptive concurrency limit now.
    pub limit: usize,
}

/// A captioner that spreads requests over several replicas of one model.
pub struct ReplicaSet {
    replicas: Vec<Replica>,
    cooldown: Duration,
}

impl ReplicaSet {
    /// Replicas with their weights. They must serve the same model with the same vision setting,
    /// and weights must be positive: anything else is a configuration error (`Fatal`).
    pub fn new(replicas: Vec<(OpenAiCaptioner, f64)>) -> Result<Self, CaptionError> {
        let fatal = |message: String| CaptionError::Fatal { message };
        let Some((first, _)) = replicas.first() else {
            return Err(fatal("captioner.endpoints is empty".into()));
        };
        let info = first.info();
        for (captioner, weight) in &replicas {
            let other = captioner.info();
            if !(weight.is_finite() && *weight > 0.0) {
                return Err(fatal(format!(
                    "captioner.endpoints: the weight of {} is {weight}; weights must be positive numbers",
                    other.endpoint
                )));
            }
            if other.model != info.model || other.vision != info.vision {
                return Err(fatal(format!(
                    "captioner.endpoints: {} and {} differ in model or vision; replicas must serve the same model",
                    info.endpoint, other.endpoint
                )));
            }
        }
        Ok(ReplicaSet {
            replicas: replicas
                .into_iter()
                .map(|(captioner, weight)| Replica {
                    captioner,
                    weight,
                    in_flight: AtomicUsize::new(0),
                    sent: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            cooldown: COOLDOWN,
        })
    }

    /// Changes the first cooling-off period (tests use a short one).
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Per-replica figures, in configuration order.
    pub fn stats(&self) -> Vec<ReplicaStats> {
        let now = Instant::now();
        self.replicas
            .iter()
            .map(|r| ReplicaStats {
                endpoint: r.captioner.info().endpoint,
                weight: r.weight,
                sent: r.sent.load(Ordering::Relaxed),
                failed: r.failed.load(Ordering::Relaxed),
                healthy: down_until(r).is_none_or(|t| t <= now),
                limit: r.captioner.limiter_stats().limit,
            })
            .collect()
    }

    /// The replica to ask next, among those not yet tried for this request.
    fn choose(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let untried = || (0..self.replicas.len()).filter(|i| !tried.contains(i));
        let load = |i: usize| {
            let r = &self.replicas[i];
            (
                r.in_flight.load(Ordering::Relaxed) as f64 / r.weight,
                r.sent.load(Ordering::Relaxed) as f64 / r.weight,
            )
        };
        let healthy = untried()
            .filter(|&i| down_until(&self.replicas[i]).is_none_or(|t| t <= now))
            .min_by(|&a, &b| {
                load(a)
                    .partial_cmp(&load(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        healthy.or_else(|| untried().min_by_key(|&i| down_until(&self.replicas[i])))
    }

    fn mark(&self, index: usize, ok: bool) {
        let replica = &self.replicas[index];
        let mut health = replica.health.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            *health = Health::default();
            return;
        }
        replica.failed.fetch_add(1, Ordering::Relaxed);
        health.strikes = health.strikes.saturating_add(1);
        let period = self
            .cooldown
            .saturating_mul(1u32 << health.strikes.saturating_sub(1).min(10))
            .min(MAX_COOLDOWN.max(self.cooldown));
        health.down_until = Some(Instant::now() + period);
        tracing::warn!(
            endpoint = %replica.captioner.info().endpoint,
            cooling_off_s = period.as_secs_f64(),
            "replica failed; sending its requests to the others"
        );
    }
}

fn down_until(replica: &Replica) -> Option<Instant> {
    replica
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .down_until
}

#[async_trait::async_trait]
impl Captioner for ReplicaSet {
    fn info(&self) -> CaptionerInfo {
        let first = self.replicas[0].captioner.info();
        let endpoints: Vec<String> = self
            .replicas
            .iter()
            .map(|r| r.captioner.info().endpoint)
            .collect();
        CaptionerInfo {
            endpoint: endpoints.join(","),
            ..first
        }
    }

    fn concurrency_limit(&self) -> Option<usize> {
        Some(
            self.replicas
                .iter()
                .map(|r| r.captioner.limiter_stats().limit)
                .sum(),
        )
    }

    async fn caption(&self, request: CaptionRequest) -> Result<CaptionReply, CaptionError> {
        let mut tried = Vec::new();
        let mut last_error = None;
        while let Some(index) = self.choose(&tried) {
            tried.push(index);
            let replica = &self.replicas[index];
            replica.sent.fetch_add(1, Ordering::Relaxed);
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = replica.captioner.caption(request.clone()).await;
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Err(error @ CaptionError::Transient { .. }) => {
                    self.mark(index, false);
                    last_error = Some(error);
                }
                other => {
                    if other.is_ok() {
                        self.mark(index, true);
                    }
                    return other;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| CaptionError::Fatal {
            message: "captioner.endpoints is empty".into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointConfig;
    use loopback_endpoint::{Endpoint, FaultRule, Latency, Spec};
    use retina_prompt::RenderedPrompt;
    use retina_records::{ImageFacts, Record};
    use std::sync::Arc;

    fn spec(faults: &[&str]) -> Spec {
        Spec {
            slots: 64,
            queue: 64,
            latency: Latency::Fixed(Duration::from_millis(5)),
            faults: faults
                .iter()
                .map(|f| f.parse::<FaultRule>().unwrap())
                .collect(),
            ..Spec::default()
        }
    }

    fn client(endpoint: &Endpoint) -> OpenAiCaptioner {
        let mut config = EndpointConfig::new(
            endpoint.base_url(),
            "loopback-vlm",
            serde_json::json!({"type": "object"}),
        );
        config.vision = false;
        config.max_retries = 0;
        config.request_timeout = Duration::from_secs(5);
        OpenAiCaptioner::new(config).unwrap()
    }

    fn request(i: usize) -> CaptionRequest {
        let record = Record::new("test", &format!("{i}.jpg"), format!("{i}.jpg").into());
        CaptionRequest {
            record: Arc::new(record),
            facts: Arc::new(ImageFacts::fixture(512, 512)),
            prompt: RenderedPrompt {
                system: "system".into(),
                user: format!("describe item {i}"),
            },
            image: None,
            image_mime: "image/jpeg",
            repair: None,
        }
    }

    async fn run_all(set: &ReplicaSet, count: usize, in_flight: usize) -> usize {
        use futures::StreamExt;
        futures::stream::iter(0..count)
            .map(|i| set.caption(request(i)))
            .buffer_unordered(in_flight)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await
    }

    #[tokio::test]
    async fn requests_follow_the_weights() {
        let light = Endpoint::start(spec(&[]), "127.0.0.1:0").await.unwrap();
        let heavy = Endpoint::start(spec(&[]), "127.0.0.1:0").await.unwrap();
        let set = ReplicaSet::new(vec![(client(&light), 1.0), (client(&heavy), 3.0)]).unwrap();
        assert_eq!(run_all(&set, 80, 1).await, 80);
        let completed = |e: &Endpoint| e.stats().completed.load(Ordering::Relaxed);
        // One at a time: sent per unit of weight is kept equal, so exactly 20 and 60.
        assert_eq!((completed(&light), completed(&heavy)), (20, 60));
        assert_eq!(run_all(&set, 80, 8).await, 80);
        assert!(
            completed(&heavy) > 2 * completed(&light),
            "light {} heavy {}",
            completed(&light),
            completed(&heavy)
        );
    }

    #[tokio::test]
    async fn a_failing_replica_is_taken_out_and_every_request_still_succeeds() {
        let broken = Endpoint::start(spec(&["500"]), "127.0.0.1:0")
            .await
            .unwrap();
        let good = Endpoint::start(spec(&[]), "127.0.0.1:0").await.unwrap();
        let set = ReplicaSet::new(vec![(client(&broken), 1.0), (client(&good), 1.0)])
            .unwrap()
            .with_cooldown(Duration::from_secs(60));
        assert_eq!(run_all(&set, 40, 4).await, 40);
        let stats = set.stats();
        assert!(!stats[0].healthy && stats[1].healthy, "{stats:?}");
        // Only the requests already on their way when it first failed went to the broken one.
        assert!(stats[0].sent <= 4, "{stats:?}");
        assert_eq!(good.stats().completed.load(Ordering::Relaxed), 40);
    }

    #[tokio::test]
    async fn a_cooled_off_replica_is_probed_and_comes_back() {
        let flaky = Endpoint::start(spec(&["500:first=1"]), "127.0.0.1:0")
            .await
            .unwrap();
        let good = Endpoint::start(spec(&[]), "127.0.0.1:0").await.unwrap();
        let set = ReplicaSet::new(vec![(client(&flaky), 1.0), (client(&good), 1.0)])
            .unwrap()
            .with_cooldown(Duration::from_millis(50));
        assert_eq!(run_all(&set, 1, 1).await, 1);
        assert!(!set.stats()[0].healthy);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(run_all(&set, 10, 1).await, 10);
        let stats = set.stats();
        assert!(stats[0].healthy, "{stats:?}");
        assert!(
            flaky.stats().completed.load(Ordering::Relaxed) >= 4,
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn all_replicas_down_still_tries_one_and_reports_the_error() {
        let a = Endpoint::start(spec(&["500"]), "127.0.0.1:0")
            .await
            .unwrap();
        let b = Endpoint::start(spec(&["500"]), "127.0.0.1:0")
            .await
            .unwrap();
        let set = ReplicaSet::new(vec![(client(&a), 1.0), (client(&b), 1.0)]).unwrap();
        let error = set.caption(request(0)).await.unwrap_err();
        assert!(matches!(error, CaptionError::Transient { .. }), "{error}");
        // Both were tried once for that request; a second request still gets an attempt.
        assert_eq!(set.stats().iter().map(|s| s.sent).sum::<u64>(), 2);
        assert!(set.caption(request(1)).await.is_err());
        assert_eq!(set.stats().iter().map(|s| s.sent).sum::<u64>(), 4);
    }

    #[test]
    fn bad_weights_and_mixed_models_are_refused() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let endpoint = runtime
            .block_on(Endpoint::start(spec(&[]), "127.0.0.1:0"))
            .unwrap();
        let _guard = runtime.enter();
        assert!(ReplicaSet::new(vec![]).is_err());
        assert!(ReplicaSet::new(vec![(client(&endpoint), 0.0)]).is_err());
        assert!(ReplicaSet::new(vec![(client(&endpoint), f64::NAN)]).is_err());
        let mut other =
            EndpointConfig::new(endpoint.base_url(), "another-model", serde_json::json!({}));
        other.vision = false;
        let other = OpenAiCaptioner::new(other).unwrap();
        assert!(ReplicaSet::new(vec![(client(&endpoint), 1.0), (other, 1.0)]).is_err());
    }
}
