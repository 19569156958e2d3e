//! The response cache: a content-addressed folder of answers, so a re-run never pays twice.
//!
//! The key is BLAKE3 over what determines the answer: model, both messages, a hash of the image
//! bytes (when the image is sent), the schema and its strictness, temperature, seed and any extra
//! body fields. Not `max_tokens`, timeouts, retries or concurrency: they change whether an answer
//! arrives, not what it says. Only complete answers (finish_reason `stop`) are stored. Entries are
//! written to a temporary file and renamed, so a crash never leaves half an entry. The API key is
//! no part of the key or the entry.

use crate::{CaptionReply, CaptionRequest};
use retina_records::Usage;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A folder of cached answers, one JSON file per key (`ab/abcdef....json`).
#[derive(Debug, Clone)]
pub struct ResponseCache {
    dir: PathBuf,
}

/// What a request is asked with, besides the request itself.
pub(crate) struct KeyParts<'a> {
    pub model: &'a str,
    pub vision: bool,
    pub schema: &'a Value,
    pub strict: bool,
    pub response_format: crate::ResponseFormat,
    pub temperature: f32,
    pub seed: Option<u64>,
    pub extra_body: &'a serde_json::Map<String, Value>,
    /// How the image is sent: another transport shows the model another picture (the source
    /// photograph instead of the prepared one).
    pub image_transport: &'a str,
}

/// `value` as JSON text with every object's keys sorted, whatever order the map keeps: serde_json
/// keeps insertion order when any crate in the build enables its `preserve_order` feature, which
/// would make the key depend on the build and on the order of keys in a configuration file.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    retina_validate::canonical_json(value, &mut out);
    out
}

impl ResponseCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResponseCache { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of one request, 64 hex characters.
    pub(crate) fn key(parts: &KeyParts<'_>, request: &CaptionRequest) -> String {
        let image = match (&request.image, parts.vision) {
            (Some(image), true) => Value::String(blake3::hash(image).to_hex().to_string()),
            _ => Value::Null,
        };
        let mut material = json!({
            "v": 1,
            "model": parts.model,
            "system": request.prompt.system,
            "user": request.prompt.user,
            "image": image,
            "image_mime": if image.is_null() { "" } else { request.image_mime },
            "schema": parts.schema,
            "strict": parts.strict,
            // Text form: 0.2f32 is not exactly 0.2, but it is always the same 0.2.
            "temperature": parts.temperature.to_string(),
            "seed": parts.seed,
            "extra_body": parts.extra_body,
        });
        // Another format changes the messages sent, so the answer; json_schema adds nothing, so
        // caches written before this setting existed stay valid.
        if parts.response_format != crate::ResponseFormat::JsonSchema
            && let Some(map) = material.as_object_mut()
        {
            map.insert(
                "response_format".to_string(),
                Value::String(parts.response_format.as_str().to_string()),
            );
        }
        if parts.vision
            && parts.image_transport != "data_url"
            && let Some(map) = material.as_object_mut()
        {
            map.insert(
                "image_transport".to_string(),
                Value::String(parts.image_transport.to_string()),
            );
        }
        blake3::hash(canonical(&material).as_bytes())
            .to_hex()
            .to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// The cached answer, if any; an unreadable entry counts as a miss.
    pub(crate) fn get(&self, key: &str) -> Option<CaptionReply> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let entry: Value = serde_json::from_str(&text).ok()?;
        let tokens = |name: &str| {
            entry["usage"][name]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
        };
        Some(CaptionReply {
            raw: entry["raw"].as_str()?.to_string(),
            usage: Usage {
                prompt_tokens: tokens("prompt_tokens")?,
                completion_tokens: tokens("completion_tokens")?,
            },
            latency_ms: 0,
            finish_reason: entry["finish_reason"].as_str()?.to_string(),
            cached_prompt_tokens: 0,
            // Nothing is paid for a cached answer; the usage stays for the row's provenance.
            from_cache: true,
        })
    }

    /// Stores an answer; a failure is logged, never fatal (the answer is still used).
    pub(crate) fn put(&self, key: &str, reply: &CaptionReply) {
        let path = self.path(key);
        let entry = json!({
            "raw": reply.raw,
            "usage": {"prompt_tokens": reply.usage.prompt_tokens,
                      "completion_tokens": reply.usage.completion_tokens},
            "finish_reason": reply.finish_reason,
        });
        let write = || -> std::io::Result<()> {
            let parent = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(parent)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, entry.to_string())?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), %err, "cannot store an answer in the response cache");
        }
    }
}
