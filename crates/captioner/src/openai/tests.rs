use super::*;
use crate::OfflineCaptioner;
use reqwest::header::HeaderValue;
use retina_prompt::RenderedPrompt;
use retina_records::{
    Centring, ImageFacts, Labels, Laterality, QualityGrade, QualityMetrics, Record,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One canned HTTP/1.1 response.
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(body: Value) -> Canned {
    Canned {
        status: 200,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn status(status: u16, body: &str) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn with_header(mut canned: Canned, name: &'static str, value: &str) -> Canned {
    canned.headers.push((name, value.to_string()));
    canned
}

/// What the server received: request line and headers (lower-cased), and the JSON body.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// Starts a loopback server answering the canned responses in order (500 once they run out).
async fn serve(responses: Vec<Canned>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        let mut responses = responses.into_iter();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let Some(received) = read_request(&mut stream).await else {
                continue;
            };
            seen.lock().unwrap().push(received);
            let canned = responses.next().unwrap_or_else(|| status(500, "{}"));
            let mut response = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                canned.status,
                canned.body.len()
            );
            for (name, value) in &canned.headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&canned.body);
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (format!("http://{addr}/v1"), log)
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buffer[header_end..]).unwrap_or(Value::Null);
    Some(Received { head, body })
}

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../../schemas/caption.schema.json")).unwrap()
}

fn config(base_url: &str) -> EndpointConfig {
    EndpointConfig {
        api_key: Some("sk-test".to_string()),
        seed: Some(11),
        max_tokens: 600,
        max_retries: 3,
        request_timeout: Duration::from_secs(20),
        ..EndpointConfig::new(base_url, "qwen2.5-vl-7b", schema())
    }
}

fn facts() -> ImageFacts {
    ImageFacts {
        original_width: 2048,
        original_height: 1536,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.7,
        quality: QualityMetrics {
            brightness: 0.4,
            contrast: 0.2,
            sharpness: 100.0,
            illumination_uniformity: 0.9,
            grade: QualityGrade::Good,
        },
        disc: None,
        centring: Some(Centring::Macula),
        vessel_density: None,
        tortuosity: None,
        fractal_dimension: None,
        cup_to_disc_ratio: None,
        bright_lesion_candidates: None,
        dark_lesion_candidates: None,
        perceptual_hash: 0,
    }
}

fn request() -> CaptionRequest {
    let mut record = Record::new("aptos", "train/abc.png", PathBuf::from("abc.png"));
    record.laterality = Laterality::Left;
    record.labels = Labels {
        dr_grade: Some(2),
        ..Labels::default()
    };
    CaptionRequest {
        record: Arc::new(record),
        facts: Arc::new(facts()),
        prompt: RenderedPrompt {
            system: "You describe fundus photographs.".to_string(),
            user: "Facts: DR grade 2.".to_string(),
        },
        image: Some(Arc::new(vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])),
        image_mime: "image/jpeg",
        repair: None,
    }
}

/// A valid caption answer as the model would write it.
fn answer_json() -> String {
    let r = request();
    let answer = OfflineCaptioner::new(1).answer(&r.record, &r.facts);
    serde_json::to_string(&answer).unwrap()
}

fn completion(content: Option<&str>, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": finish
        }],
        "usage": {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555}
    })
}

async fn run(
    responses: Vec<Canned>,
    adjust: impl FnOnce(&mut EndpointConfig),
) -> (Result<CaptionReply, CaptionError>, Vec<Received>) {
    let (base, log) = serve(responses).await;
    let mut cfg = config(&base);
    adjust(&mut cfg);
    let captioner = OpenAiCaptioner::new(cfg).unwrap();
    let result = captioner.caption(request()).await;
    let received = log.lock().unwrap().clone();
    (result, received)
}

#[tokio::test]
async fn success_sends_schema_image_and_key_and_parses_usage() {
    let content = answer_json();
    let (result, received) = run(vec![ok(completion(Some(&content), "stop"))], |_| {}).await;
    let reply = result.unwrap();
    assert_eq!(reply.raw, content);
    assert_eq!(reply.usage.prompt_tokens, 1234);
    assert_eq!(reply.usage.completion_tokens, 321);
    assert_eq!(reply.finish_reason, "stop");
    assert_eq!(received.len(), 1);

    let sent = &received[0];
    assert!(
        sent.head.starts_with("post /v1/chat/completions http/1.1"),
        "{}",
        sent.head
    );
    assert!(sent.head.contains("authorization: bearer sk-test"));
    let body = &sent.body;
    assert_eq!(body["model"], "qwen2.5-vl-7b");
    assert_eq!(body["max_tokens"], 600);
    assert_eq!(body["seed"], 11);
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "fundus_caption");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(format["json_schema"]["schema"], schema());
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert!(keys.iter().all(|k| !k.starts_with("guided")), "{keys:?}");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(
        body["messages"][0]["content"],
        "You describe fundus photographs."
    );
    let parts = &body["messages"][1]["content"];
    assert_eq!(parts[0]["type"], "text");
    assert_eq!(parts[0]["text"], "Facts: DR grade 2.");
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        "data:image/jpeg;base64,/9j/4AECAw=="
    );
}

#[tokio::test]
async fn local_path_and_url_transports_send_the_photographs_address_not_its_bytes() {
    let absolute = std::path::absolute("abc.png").unwrap();
    for (transport, expected) in [
        (
            ImageTransport::LocalPath,
            format!("file://{}", absolute.display()),
        ),
        (
            ImageTransport::UrlPrefix("https://images.example/aptos".into()),
            "https://images.example/aptos/train/abc.png".to_string(),
        ),
    ] {
        let content = answer_json();
        let (result, received) = run(vec![ok(completion(Some(&content), "stop"))], |c| {
            c.image_transport = transport.clone();
        })
        .await;
        assert!(result.is_ok(), "{transport:?}: {result:?}");
        let parts = &received[0].body["messages"][1]["content"];
        assert_eq!(parts[0]["text"], "Facts: DR grade 2.");
        assert_eq!(
            parts[1]["image_url"]["url"],
            expected.as_str(),
            "{transport:?}"
        );
    }
}

#[test]
fn transport_urls_encode_what_a_url_path_cannot_hold() {
    let record = Record::new(
        "ds",
        "left eye/IM#1?%.jpg",
        PathBuf::from("/data/left eye/IM#1?%.jpg"),
    );
    assert_eq!(
        ImageTransport::LocalPath.url_for(&record).unwrap(),
        "file:///data/left%20eye/IM%231%3F%25.jpg"
    );
    assert_eq!(
        ImageTransport::UrlPrefix("https://h.example/ds/".into())
            .url_for(&record)
            .unwrap(),
        "https://h.example/ds/left%20eye/IM%231%3F%25.jpg"
    );
    assert_eq!(ImageTransport::DataUrl.url_for(&record), None);
}

#[test]
fn cache_keys_ignore_key_order_and_follow_the_image_transport() {
    let base = config("http://127.0.0.1:9/v1");
    let key = |c: &EndpointConfig| {
        OpenAiCaptioner::new(c.clone())
            .unwrap()
            .cache_key(&request())
    };
    let mut reordered = base.clone();
    reordered.extra_body = serde_json::Map::new();
    let mut forward = base.clone();
    forward.extra_body.insert("a".into(), json!(1));
    forward
        .extra_body
        .insert("b".into(), json!({"y": 1, "x": 2}));
    reordered
        .extra_body
        .insert("b".into(), json!({"x": 2, "y": 1}));
    reordered.extra_body.insert("a".into(), json!(1));
    assert_eq!(key(&forward), key(&reordered));
    let mut local = base.clone();
    local.image_transport = ImageTransport::LocalPath;
    assert_ne!(key(&base), key(&local));
    // Text-only requests send no image, so the transport does not matter to them.
    let (mut text, mut text_local) = (base.clone(), local.clone());
    text.vision = false;
    text_local.vision = false;
    assert_eq!(key(&text), key(&text_local));
}

#[tokio::test]
async fn text_only_models_get_no_image_and_no_key_when_unset() {
    let content = answer_json();
    let (result, received) = run(vec![ok(completion(Some(&content), "stop"))], |c| {
        c.vision = false;
        c.api_key = None;
        c.seed = None;
    })
    .await;
    assert!(result.is_ok());
    let body = &received[0].body;
    assert_eq!(body["messages"][1]["content"], "Facts: DR grade 2.");
    assert!(body.get("seed").is_none());
    assert!(!received[0].head.contains("authorization"));
}

#[tokio::test]
async fn extra_body_fields_are_sent_but_never_replace_the_clients_own() {
    let content = answer_json();
    let (result, received) = run(vec![ok(completion(Some(&content), "stop"))], |c| {
        c.extra_body
            .insert("repeat_penalty".to_string(), json!(1.1));
        c.extra_body.insert("top_k".to_string(), json!(20));
        c.extra_body.insert("max_tokens".to_string(), json!(5));
        c.extra_body.insert("model".to_string(), json!("other"));
    })
    .await;
    assert!(result.is_ok());
    let body = &received[0].body;
    assert_eq!(body["repeat_penalty"], 1.1);
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["max_tokens"], 600);
    assert_eq!(body["model"], "qwen2.5-vl-7b");
}

#[tokio::test]
async fn json_object_and_none_put_the_schema_in_the_system_message() {
    for (format, expected) in [
        (crate::ResponseFormat::JsonObject, Some("json_object")),
        (crate::ResponseFormat::None, None),
    ] {
        let content = answer_json();
        let (result, received) = run(vec![ok(completion(Some(&content), "stop"))], |c| {
            c.response_format = format;
        })
        .await;
        assert!(result.is_ok(), "{format:?}");
        let body = &received[0].body;
        assert_eq!(body["response_format"]["type"].as_str(), expected);
        assert!(body["response_format"].get("json_schema").is_none());
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| !k.starts_with("guided")), "{keys:?}");
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.starts_with("You describe fundus photographs."),
            "{system}"
        );
        assert!(system.contains(&schema().to_string()), "{system}");
    }
}

#[tokio::test]
async fn cached_prompt_tokens_are_read_from_usage_details() {
    let content = answer_json();
    let mut body = completion(Some(&content), "stop");
    body["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 1024});
    let (result, _) = run(vec![ok(body)], |_| {}).await;
    let reply = result.unwrap();
    assert_eq!(reply.cached_prompt_tokens, 1024);
    assert!(!reply.from_cache);
}

#[tokio::test]
async fn cache_hits_are_marked_free_and_another_response_format_misses() {
    let content = answer_json();
    let dir = tempfile_dir();
    let (base, log) = serve(vec![
        ok(completion(Some(&content), "stop")),
        ok(completion(Some(&content), "stop")),
    ])
    .await;
    let mut cfg = config(&base);
    cfg.cache_dir = Some(dir.clone());
    let captioner = OpenAiCaptioner::new(cfg.clone()).unwrap();
    assert!(!captioner.caption(request()).await.unwrap().from_cache);
    let again = captioner.caption(request()).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(
        again.usage.prompt_tokens, 1234,
        "provenance keeps the usage"
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    cfg.response_format = crate::ResponseFormat::JsonObject;
    let other = OpenAiCaptioner::new(cfg).unwrap();
    assert!(!other.caption(request()).await.unwrap().from_cache);
    assert_eq!(log.lock().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "retina-captioner-cache-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[tokio::test]
async fn fenced_json_is_stripped() {
    let content = answer_json();
    let fenced = format!("```json\n{content}\n```");
    let (result, _) = run(vec![ok(completion(Some(&fenced), "stop"))], |_| {}).await;
    assert_eq!(result.unwrap().raw, content);
}

#[tokio::test]
async fn rate_limited_request_waits_retry_after_ms_then_succeeds() {
    let content = answer_json();
    let limited = with_header(
        status(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
        "retry-after-ms",
        "30",
    );
    let (result, received) = run(
        vec![limited, ok(completion(Some(&content), "stop"))],
        |_| {},
    )
    .await;
    let reply = result.unwrap();
    assert_eq!(reply.raw, content);
    assert_eq!(received.len(), 2);
    assert!(
        reply.latency_ms >= 30,
        "latency includes the wait: {}",
        reply.latency_ms
    );
}

#[tokio::test]
async fn unauthorised_is_fatal_without_retry() {
    let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    let (result, received) = run(vec![status(401, body)], |_| {}).await;
    match result {
        Err(CaptionError::Fatal { message }) => {
            assert!(message.contains("Incorrect API key"), "{message}");
            assert!(message.contains("401"));
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn insufficient_quota_is_fatal_at_once() {
    let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let limited = with_header(status(429, body), "retry-after-ms", "1");
    let (result, received) = run(vec![limited], |_| {}).await;
    match result {
        Err(CaptionError::Fatal { message }) => assert!(message.contains("quota"), "{message}"),
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(received.len(), 1, "no retries on insufficient_quota");
}

#[tokio::test]
async fn length_is_retried_once_with_more_tokens_then_rejected() {
    let (result, received) = run(
        vec![
            ok(completion(Some("{\"optic_disc\":\"The opt"), "length")),
            ok(completion(
                Some("{\"optic_disc\":\"The optic disc"),
                "length",
            )),
        ],
        |_| {},
    )
    .await;
    match result {
        Err(CaptionError::Rejected { code, .. }) => assert_eq!(code, "answer.truncated"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body["max_tokens"], 600);
    assert_eq!(received[1].body["max_tokens"], 1200);
}

#[tokio::test]
async fn length_then_complete_answer_succeeds() {
    let content = answer_json();
    let (result, received) = run(
        vec![
            ok(completion(Some("{\"optic"), "length")),
            ok(completion(Some(&content), "stop")),
        ],
        |_| {},
    )
    .await;
    assert_eq!(result.unwrap().raw, content);
    assert_eq!(received.len(), 2);
}

#[tokio::test]
async fn refusal_and_content_filter_are_rejected() {
    let refusal = json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
    let (result, _) = run(vec![ok(refusal)], |_| {}).await;
    assert_eq!(
        result.unwrap_err(),
        CaptionError::Rejected {
            code: "answer.refusal".into(),
            detail: "I can't help with that.".into()
        }
    );
    let (result, received) = run(vec![ok(completion(Some(""), "content_filter"))], |_| {}).await;
    match result {
        Err(CaptionError::Rejected { code, .. }) => assert_eq!(code, "answer.content_filter"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn flat_vllm_error_body_is_parsed() {
    let body = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","param":null,"code":400}"#;
    let (result, received) = run(vec![status(400, body)], |_| {}).await;
    match result {
        Err(CaptionError::Rejected { code, detail }) => {
            assert_eq!(code, "endpoint.bad_request");
            assert!(detail.contains("maximum context length"), "{detail}");
            assert!(
                detail.contains("code 400") && detail.contains("BadRequestError"),
                "{detail}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_transient() {
    let busy = || {
        with_header(
            status(
                503,
                r#"{"object":"error","message":"queue full","code":503}"#,
            ),
            "retry-after",
            "0.01",
        )
    };
    let (result, received) = run(vec![busy(), busy(), busy()], |c| c.max_retries = 2).await;
    match result {
        Err(CaptionError::Transient { message }) => {
            assert!(
                message.contains("queue full") && message.contains("3 attempts"),
                "{message}"
            );
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert_eq!(received.len(), 3);
}

#[tokio::test]
async fn x_should_retry_overrides_the_status() {
    let no = with_header(
        status(
            503,
            r#"{"error":{"message":"down","type":null,"code":null}}"#,
        ),
        "x-should-retry",
        "false",
    );
    let (result, received) = run(vec![no], |_| {}).await;
    assert!(
        matches!(result, Err(CaptionError::Transient { .. })),
        "{result:?}"
    );
    assert_eq!(received.len(), 1);

    let content = answer_json();
    let yes = with_header(
        with_header(
            status(
                400,
                r#"{"error":{"message":"retry me","type":null,"code":null}}"#,
            ),
            "x-should-retry",
            "true",
        ),
        "retry-after-ms",
        "1",
    );
    let (result, received) = run(vec![yes, ok(completion(Some(&content), "stop"))], |_| {}).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(received.len(), 2);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = config(&format!("http://{addr}/v1"));
    cfg.max_retries = 0;
    let captioner = OpenAiCaptioner::new(cfg).unwrap();
    match captioner.caption(request()).await {
        Err(CaptionError::Transient { message }) => {
            assert!(message.contains("1 attempts"), "{message}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[test]
fn error_bodies_of_both_shapes_parse() {
    let openai = parse_error_body(
        r#"{"error":{"message":"Rate limit","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(
        openai,
        ErrorBody {
            message: "Rate limit".into(),
            kind: Some("tokens".into()),
            code: Some("rate_limit_exceeded".into())
        }
    );
    let null_code =
        parse_error_body(r#"{"error":{"message":"x","type":"server_error","code":null}}"#);
    assert_eq!(null_code.code, None);
    let vllm = parse_error_body(
        r#"{"object":"error","message":"boom","type":"BadRequestError","param":null,"code":400}"#,
    );
    assert_eq!(vllm.message, "boom");
    assert_eq!(vllm.code.as_deref(), Some("400"));
    let text = parse_error_body("<html>Bad Gateway</html>");
    assert_eq!(text.message, "<html>Bad Gateway</html>");
    let plain = parse_error_body(r#"{"error":"model not loaded"}"#);
    assert_eq!(plain.message, "model not loaded");
}

#[test]
fn retry_delays_follow_the_sdk() {
    let secs = |d: Duration| d.as_secs_f64();
    let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0];
    for (retries, want) in expected.iter().enumerate() {
        assert_eq!(secs(retry_delay(retries as u32, None, 0.0)), *want);
    }
    assert_eq!(secs(retry_delay(0, None, 1.0)), 0.375);
    assert_eq!(secs(retry_delay(100, None, 0.0)), 8.0);

    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("2.5"));
    assert_eq!(secs(retry_delay(0, Some(&headers), 0.0)), 2.5);
    headers.insert("retry-after-ms", HeaderValue::from_static("40"));
    assert_eq!(
        retry_delay(3, Some(&headers), 0.0),
        Duration::from_millis(40)
    );
    let mut far = HeaderMap::new();
    far.insert("retry-after", HeaderValue::from_static("600"));
    assert_eq!(
        secs(retry_delay(1, Some(&far), 0.0)),
        1.0,
        "over 120 s falls back to backoff"
    );
    let mut date = HeaderMap::new();
    date.insert(
        "retry-after",
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(secs(retry_delay(2, Some(&date), 0.0)), 2.0);
}

#[test]
fn misconfiguration_is_fatal_and_keys_stay_out_of_debug() {
    let bad_url = EndpointConfig::new("localhost:8000", "m", schema());
    assert!(matches!(
        OpenAiCaptioner::new(bad_url),
        Err(CaptionError::Fatal { .. })
    ));
    let no_model = EndpointConfig::new("http://127.0.0.1:1/v1", " ", schema());
    assert!(matches!(
        OpenAiCaptioner::new(no_model),
        Err(CaptionError::Fatal { .. })
    ));
    let no_schema = EndpointConfig::new("http://127.0.0.1:1/v1", "m", Value::Null);
    assert!(matches!(
        OpenAiCaptioner::new(no_schema),
        Err(CaptionError::Fatal { .. })
    ));
    let cfg = config("http://127.0.0.1:1/v1/");
    assert!(!format!("{cfg:?}").contains("sk-test"));
    let captioner = OpenAiCaptioner::new(cfg).unwrap();
    assert_eq!(
        captioner.url.as_str(),
        "http://127.0.0.1:1/v1/chat/completions"
    );
    let info = captioner.info();
    assert_eq!(info.model, "qwen2.5-vl-7b");
    assert!(info.vision);
}
