use super::*;

fn chat_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
}

async fn post(
    client: &reqwest::Client,
    endpoint: &Endpoint,
) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
    let response = client
        .post(format!("{}/chat/completions", endpoint.base_url()))
        .json(&chat_body())
        .send()
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    Ok((status, headers, text))
}

fn spec(faults: &[&str]) -> Spec {
    Spec {
        latency: Latency::Fixed(Duration::from_millis(1)),
        faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
        ..Spec::default()
    }
}

#[tokio::test]
async fn answers_a_schema_shaped_completion_and_lists_models() {
    let endpoint = Endpoint::start(spec(&[]), "127.0.0.1:0").await.unwrap();
    let client = reqwest::Client::new();
    let (status, _, text) = post(&client, &endpoint).await.unwrap();
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    let content: Value =
        serde_json::from_str(value["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        content["caption"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count()
            >= 40
    );
    let models: Value = client
        .get(format!("{}/models", endpoint.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "loopback-vlm");
    assert_eq!(endpoint.stats().completed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn capacity_beyond_slots_and_queue_is_refused_with_the_overflow_status() {
    let spec = Spec {
        slots: 2,
        queue: 1,
        overflow_status: 503,
        latency: Latency::Fixed(Duration::from_millis(300)),
        ..Spec::default()
    };
    let endpoint = Endpoint::start(spec, "127.0.0.1:0").await.unwrap();
    let client = reqwest::Client::new();
    let calls = (0..6).map(|_| post(&client, &endpoint));
    let results = futures_join(calls).await;
    let statuses: Vec<u16> = results.into_iter().map(|r| r.unwrap().0).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    let stats = endpoint.stats();
    assert_eq!(stats.overflow.load(Ordering::Relaxed), 3);
    assert_eq!(stats.max_active.load(Ordering::Relaxed), 2);
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    // Run concurrently on one task so no extra dependency is needed.
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn faults_hit_the_scripted_requests() {
    let endpoint = Endpoint::start(
        spec(&["429:first=1,after=70", "500:every=3"]),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let (s1, h1, _) = post(&client, &endpoint).await.unwrap();
    assert_eq!(s1, 429);
    assert_eq!(h1["retry-after-ms"], "70");
    assert_eq!(h1["retry-after"], "1");
    let (s2, _, _) = post(&client, &endpoint).await.unwrap();
    assert_eq!(s2, 200);
    let (s3, _, _) = post(&client, &endpoint).await.unwrap();
    assert_eq!(s3, 500);
}

#[tokio::test]
async fn content_faults_shape_the_completion() {
    let client = reqwest::Client::new();
    for (fault, check) in [
        (
            "refusal",
            &(|v: &Value| v["choices"][0]["message"]["refusal"].is_string())
                as &dyn Fn(&Value) -> bool,
        ),
        ("length", &|v: &Value| {
            v["choices"][0]["finish_reason"] == "length"
        }),
        ("content-filter", &|v: &Value| {
            v["choices"][0]["finish_reason"] == "content_filter"
        }),
        ("schema-violation", &|v: &Value| {
            let content: Value =
                serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap())
                    .unwrap();
            content["caption"].is_number()
        }),
    ] {
        let endpoint = Endpoint::start(spec(&[fault]), "127.0.0.1:0")
            .await
            .unwrap();
        let (status, _, text) = post(&client, &endpoint).await.unwrap();
        assert_eq!(status, 200, "{fault}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(check(&value), "{fault}: {text}");
    }
    let endpoint = Endpoint::start(spec(&["invalid-json"]), "127.0.0.1:0")
        .await
        .unwrap();
    let (_, _, text) = post(&client, &endpoint).await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let endpoint = Endpoint::start(spec(&["insufficient-quota"]), "127.0.0.1:0")
        .await
        .unwrap();
    let (status, _, text) = post(&client, &endpoint).await.unwrap();
    assert_eq!(status, 429);
    assert!(text.contains("insufficient_quota"));
}

#[tokio::test]
async fn reset_and_truncated_bodies_fail_at_the_transport() {
    let client = reqwest::Client::new();
    for fault in ["reset", "truncated"] {
        let endpoint = Endpoint::start(spec(&[fault]), "127.0.0.1:0")
            .await
            .unwrap();
        assert!(
            post(&client, &endpoint).await.is_err(),
            "{fault} must break the exchange"
        );
    }
    let endpoint = Endpoint::start(spec(&["slow:first=1,delay=2000"]), "127.0.0.1:0")
        .await
        .unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = post(&quick, &endpoint).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_enforce() {
    let spec = Spec {
        rate_limit: Some(RateLimit {
            requests: 2,
            tokens: 1_000_000,
            window: Duration::from_secs(30),
            enforce: true,
        }),
        ..spec(&[])
    };
    let endpoint = Endpoint::start(spec, "127.0.0.1:0").await.unwrap();
    let client = reqwest::Client::new();
    let (_, h1, _) = post(&client, &endpoint).await.unwrap();
    assert_eq!(h1["x-ratelimit-limit-requests"], "2");
    assert_eq!(h1["x-ratelimit-remaining-requests"], "1");
    let _ = post(&client, &endpoint).await.unwrap();
    let (s3, h3, _) = post(&client, &endpoint).await.unwrap();
    assert_eq!(s3, 429);
    assert!(h3.contains_key("retry-after-ms"));
    assert_eq!(endpoint.stats().rate_limited.load(Ordering::Relaxed), 1);
}

#[test]
fn specs_parse_and_bad_ones_say_why() {
    assert_eq!(
        "50ms".parse::<Latency>().unwrap(),
        Latency::Fixed(Duration::from_millis(50))
    );
    assert!(matches!(
        "lognormal:500ms,0.3".parse::<Latency>().unwrap(),
        Latency::LogNormal { .. }
    ));
    assert!(
        "fast"
            .parse::<Latency>()
            .unwrap_err()
            .to_string()
            .contains("unit")
    );
    assert_eq!(
        "429:every=4,after=10".parse::<FaultRule>().unwrap(),
        FaultRule {
            fault: Fault::RateLimited { retry_after_ms: 10 },
            when: When::Every(4)
        }
    );
    assert!(
        "teapot"
            .parse::<FaultRule>()
            .unwrap_err()
            .to_string()
            .contains("known faults")
    );
    assert!("500:p=2".parse::<FaultRule>().is_err());
}

#[test]
fn lognormal_latency_has_the_asked_median() {
    let latency = Latency::LogNormal {
        median: Duration::from_millis(100),
        sigma: 0.5,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut samples: Vec<f64> = (0..2001)
        .map(|_| latency.sample(&mut rng).as_secs_f64())
        .collect();
    samples.sort_by(f64::total_cmp);
    assert!(
        (samples[1000] - 0.1).abs() < 0.01,
        "median {}",
        samples[1000]
    );
}
