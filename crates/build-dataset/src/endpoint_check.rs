//! A preflight of the configured endpoint, before any item is touched.
//!
//! Some mistakes make every request fail the same way: a text-only server asked for images
//! (llama.cpp answers 500 "image input is not supported"), a server that refuses the caption
//! schema (400), a wrong model name or key. Item by item they would mark a whole dataset failed
//! or, worse, rejected for good; found here, they stop the run at once with one clear message.
//!
//! Two checks: llama.cpp's `GET /props` (`modalities.vision`) when vision is on, and one request
//! in exactly the shape items are sent (schema, image part when vision is on, extra body) with
//! `max_tokens` 1. Transient trouble (429, other 5xx) only warns: the per-item retries handle it.

use crate::config::CaptionerSection;
use anyhow::{Result, bail};
use retina_captioner::{error_body_message as error_message, error_chain};
use serde_json::{Value, json};
use std::time::Duration;

/// How a preflight error about a server that does not answer at all begins.
const UNREACHABLE: &str = "cannot reach the endpoint";

/// True when `err` from [`preflight`] says the server could not be reached (as opposed to a
/// server that answered and refused).
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.to_string().starts_with(UNREACHABLE)
}

/// Checks the endpoint in `section` against `schema`; `Err` explains what to change.
pub fn preflight(section: &CaptionerSection, schema: &Value, api_key: Option<&str>) -> Result<()> {
    let section = section.clone();
    let schema = schema.clone();
    let api_key = api_key.map(str::to_string);
    // A thread of its own: callers may already be inside a runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(check(&section, &schema, api_key.as_deref()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the endpoint preflight panicked"))?
}

/// `http://host:port/v1` -> `http://host:port` (where llama.cpp serves `/props`).
fn server_root(base: &str) -> &str {
    let base = base.trim().trim_end_matches('/');
    base.strip_suffix("/v1").unwrap_or(base)
}

/// A tiny grey PNG, so the preflight sends an image part like the items do.
fn probe_image() -> String {
    use base64::Engine;
    let mut bytes = Vec::new();
    let image = image::GrayImage::from_pixel(8, 8, image::Luma([128u8]));
    let encoded = image::DynamicImage::ImageLuma8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .is_ok();
    if !encoded {
        bytes.clear();
    }
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    )
}

async fn check(section: &CaptionerSection, schema: &Value, api_key: Option<&str>) -> Result<()> {
    let endpoint = section.endpoint.trim().trim_end_matches('/');
    let timeout = Duration::from_secs(section.timeout_secs.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .build()?;

    if section.vision {
        let url = format!("{}/props", server_root(endpoint));
        // Only llama.cpp answers this; anything else (404, not JSON) says nothing.
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
            && let Ok(props) = response.json::<Value>().await
            && props["modalities"]["vision"] == Value::Bool(false)
        {
            let served = props["model_alias"].as_str().unwrap_or(&section.model);
            bail!(
                "the endpoint {endpoint} serves {served:?} without vision (GET {url} says modalities.vision = false), \
                 but captioner.vision is true. Set `vision = false` under [captioner] to caption from the facts \
                 alone, or serve a vision-language model (llama.cpp: start llama-server with the model's --mmproj file)"
            );
        }
    }

    let user = if section.vision {
        json!([
            {"type": "text", "text": "Preflight: answer with the smallest valid JSON."},
            {"type": "image_url", "image_url": {"url": probe_image()}}
        ])
    } else {
        json!("Preflight: answer with the smallest valid JSON.")
    };
    let format: retina_captioner::ResponseFormat = section
        .response_format
        .parse()
        .map_err(|e: String| anyhow::anyhow!("captioner.response_format: {e}"))?;
    let system = "You describe colour fundus photographs as JSON.";
    let (system, response_format) = match format {
        retina_captioner::ResponseFormat::JsonSchema => (
            system.to_string(),
            Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "fundus_caption", "schema": schema, "strict": true}
            })),
        ),
        retina_captioner::ResponseFormat::JsonObject => (
            retina_captioner::system_with_schema(system, schema),
            Some(json!({"type": "json_object"})),
        ),
        retina_captioner::ResponseFormat::None => {
            (retina_captioner::system_with_schema(system, schema), None)
        }
    };
    let mut body = json!({
        "model": section.model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "max_tokens": 1,
        "temperature": section.temperature,
        "seed": section.seed,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(response_format) = response_format {
            map.insert("response_format".to_string(), response_format);
        }
        for (key, value) in &section.extra_body {
            map.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let url = format!("{endpoint}/chat/completions");
    let mut request = client.post(&url).json(&body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => bail!(
            "{UNREACHABLE} {url}: {}. Is the server running, and is --endpoint the base URL up to /v1?",
            error_chain(&err)
        ),
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let message = error_message(&text);
    let said = format!("HTTP {status}: {message}");
    match status {
        401 | 403 => bail!(
            "the endpoint {url} refused the credentials ({said}); set the key in the variable named by captioner.api_key_env ({})",
            section.api_key_env
        ),
        404 => bail!(
            "the endpoint {url} or the model {:?} was not found ({said}); check --endpoint (up to /v1) and --model",
            section.model
        ),
        400 | 413 | 422 => bail!(
            "the endpoint refused a request of the form every item is sent in, so nothing was captioned ({said}). \
             Usual causes: the server does not support this JSON schema in strict mode (see README, Troubleshooting), \
             {}{}or a captioner.extra_body field it does not know",
            if format == retina_captioner::ResponseFormat::JsonSchema {
                "the server takes no response_format json_schema (set `response_format = \"json_object\"` under [captioner]), "
            } else {
                ""
            },
            if section.vision {
                "the model has no vision (set `vision = false` under [captioner]), "
            } else {
                ""
            }
        ),
        500..=599 if section.vision && message.to_ascii_lowercase().contains("image") => bail!(
            "the endpoint cannot take images ({said}), but captioner.vision is true. Set `vision = false` under \
             [captioner], or serve a vision-language model (llama.cpp: --mmproj)"
        ),
        _ => {
            tracing::warn!(%url, "endpoint preflight got {said}; starting anyway (items are retried)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Serves `responses` (path prefix, status, body) to successive connections on loopback.
    fn serve(responses: Vec<(&'static str, u16, &'static str)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut buffer = vec![0u8; 65536];
                let mut read = 0;
                // Read the head and the body named by content-length.
                loop {
                    let n = stream.read(&mut buffer[read..]).unwrap_or(0);
                    read += n;
                    let text = String::from_utf8_lossy(&buffer[..read]).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if read >= end + 4 + length || n == 0 {
                            break;
                        }
                    } else if n == 0 {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buffer[..read]).to_string();
                let (status, body) = responses
                    .iter()
                    .find(|(path, _, _)| head.contains(path))
                    .map_or((404, "{}"), |(_, s, b)| (*s, *b));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        base
    }

    fn section(endpoint: String, vision: bool) -> CaptionerSection {
        CaptionerSection {
            endpoint,
            model: "m".into(),
            vision,
            timeout_secs: 10,
            ..CaptionerSection::default()
        }
    }

    #[test]
    fn roots_drop_v1() {
        assert_eq!(server_root("http://h:1/v1/"), "http://h:1");
        assert_eq!(server_root("http://h:1/api"), "http://h:1/api");
    }

    #[test]
    fn a_refused_schema_stops_the_run_with_the_servers_message() {
        let base = serve(vec![(
            "/chat/completions",
            400,
            r#"{"error":{"code":400,"message":"JSON schema error at #: unrecognized type nonsense","type":"invalid_request_error"}}"#,
        )]);
        let err = preflight(&section(base, false), &json!({"type": "object"}), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTP 400") && err.contains("unrecognized type nonsense"),
            "{err}"
        );
        assert!(err.contains("nothing was captioned"), "{err}");
    }

    #[test]
    fn props_without_vision_stops_a_vision_run() {
        let base = serve(vec![
            (
                "/props",
                200,
                r#"{"modalities":{"vision":false},"model_alias":"tiny"}"#,
            ),
            ("/chat/completions", 200, r#"{"choices":[]}"#),
        ]);
        let err = preflight(&section(base, true), &json!({}), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("without vision") && err.contains("vision = false"),
            "{err}"
        );
    }

    #[test]
    fn success_and_transient_trouble_let_the_run_start() {
        let ok = serve(vec![("/chat/completions", 200, r#"{"choices":[]}"#)]);
        assert!(preflight(&section(ok, true), &json!({}), None).is_ok());
        let busy = serve(vec![("/chat/completions", 503, r#"{"error":"loading"}"#)]);
        assert!(preflight(&section(busy, false), &json!({}), None).is_ok());
    }

    #[test]
    fn unreachable_endpoint_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let err = preflight(&section(base.clone(), false), &json!({}), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot reach") && err.contains(&base), "{err}");
    }
}
