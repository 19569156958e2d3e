//! The Files and Batches API client.

use crate::{BatchError, CHAT_COMPLETIONS_URL};
use retina_captioner::{error_body_message as error_message, error_chain};
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// What `GET /v1/batches/{id}` says about a batch (fields this crate uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchInfo {
    /// Batch id.
    pub id: String,
    /// `validating`, `failed`, `in_progress`, `finalizing`, `completed`, `expired`,
    /// `cancelling` or `cancelled`.
    pub status: String,
    /// The uploaded input file.
    #[serde(default)]
    pub input_file_id: Option<String>,
    /// Answers, once there are any.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// Failed requests, once there are any.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Progress counts.
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    /// Why the batch failed as a whole (validation errors), if it did.
    #[serde(default)]
    pub errors: Option<Value>,
}

/// Requests of a batch by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct RequestCounts {
    /// All requests.
    #[serde(default)]
    pub total: u64,
    /// Answered.
    #[serde(default)]
    pub completed: u64,
    /// Failed.
    #[serde(default)]
    pub failed: u64,
}

/// A client for one OpenAI-compatible base URL (ending in `/v1`).
#[derive(Clone)]
pub struct BatchClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl fmt::Debug for BatchClient {
    // Hand-written so the key never reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BatchClient {
    /// A client for `base_url` (e.g. `https://host/v1`), with a per-request `timeout` (uploads
    /// and downloads of 200 MB files need minutes).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, BatchError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BatchError::Http {
                what: "endpoint".into(),
                message: format!("base URL {base:?} must start with http:// or https://"),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| BatchError::Http {
                what: "client".into(),
                message: e.to_string(),
            })?;
        Ok(BatchClient {
            http,
            base,
            api_key,
        })
    }

    fn authorise(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn exchange(
        &self,
        what: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BatchError> {
        let response = self
            .authorise(builder)
            .send()
            .await
            .map_err(|e| BatchError::Http {
                what: what.to_string(),
                message: error_chain(&e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(BatchError::Status {
            what: what.to_string(),
            status: status.as_u16(),
            message: error_message(&text),
        })
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, BatchError> {
        let response = self.exchange(what, builder).await?;
        let text = response.text().await.map_err(|e| BatchError::Http {
            what: what.to_string(),
            message: error_chain(&e),
        })?;
        serde_json::from_str(&text).map_err(|e| BatchError::Answer {
            what: what.to_string(),
            reason: format!("{e}: {}", text.chars().take(200).collect::<String>()),
        })
    }

    /// `POST /v1/files` (multipart, `purpose=batch`): uploads an input file, returns its id.
    pub async fn upload(&self, path: &Path) -> Result<String, BatchError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch.jsonl".into());
        let what = format!("POST /v1/files ({name})");
        let bytes = tokio_free_read(path)?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("application/jsonl")
            .map_err(|e| BatchError::Http {
                what: what.clone(),
                message: e.to_string(),
            })?;
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        #[derive(Deserialize)]
        struct Uploaded {
            id: String,
        }
        let uploaded: Uploaded = self
            .json(
                &what,
                self.http
                    .post(format!("{}/files", self.base))
                    .multipart(form),
            )
            .await?;
        Ok(uploaded.id)
    }

    /// `POST /v1/batches` for an uploaded file, with a 24 h completion window.
    pub async fn create_batch(
        &self,
        input_file_id: &str,
        metadata: &Value,
    ) -> Result<BatchInfo, BatchError> {
        let body = json!({
            "input_file_id": input_file_id,
            "endpoint": CHAT_COMPLETIONS_URL,
            "completion_window": "24h",
            "metadata": metadata,
        });
        self.json(
            &format!("POST /v1/batches ({input_file_id})"),
            self.http.post(format!("{}/batches", self.base)).json(&body),
        )
        .await
    }

    /// `GET /v1/batches/{id}`.
    pub async fn batch(&self, id: &str) -> Result<BatchInfo, BatchError> {
        self.json(
            &format!("GET /v1/batches/{id}"),
            self.http.get(format!("{}/batches/{id}", self.base)),
        )
        .await
    }

    /// Looks through the most recent batches (`GET /v1/batches`, up to `pages` pages of 100)
    /// for one made from `input_file_id`: after a crash between creating a batch and saving its
    /// id, this finds it instead of paying for a second one.
    pub async fn find_batch_for_file(
        &self,
        input_file_id: &str,
        pages: usize,
    ) -> Result<Option<BatchInfo>, BatchError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            data: Vec<BatchInfo>,
            #[serde(default)]
            has_more: bool,
            #[serde(default)]
            last_id: Option<String>,
        }
        let mut after: Option<String> = None;
        for _ in 0..pages.max(1) {
            let mut url = format!("{}/batches?limit=100", self.base);
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page: Page = self.json("GET /v1/batches", self.http.get(url)).await?;
            if let Some(found) = page
                .data
                .iter()
                .find(|b| b.input_file_id.as_deref() == Some(input_file_id))
            {
                return Ok(Some(found.clone()));
            }
            let last = page
                .last_id
                .or_else(|| page.data.last().map(|b| b.id.clone()));
            match (page.has_more, last) {
                (true, Some(last)) => after = Some(last),
                _ => break,
            }
        }
        Ok(None)
    }

    /// `GET /v1/files/{id}/content` into `dest` (written to a temporary name, then renamed).
    /// Returns the bytes written.
    pub async fn download(&self, file_id: &str, dest: &Path) -> Result<u64, BatchError> {
        use std::io::Write;
        let what = format!("GET /v1/files/{file_id}/content");
        let mut response = self
            .exchange(
                &what,
                self.http
                    .get(format!("{}/files/{file_id}/content", self.base)),
            )
            .await?;
        let temporary = dest.with_extension("part");
        let mut file = std::fs::File::create(&temporary).map_err(BatchError::io(&temporary))?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| BatchError::Http {
            what: what.clone(),
            message: error_chain(&e),
        })? {
            file.write_all(&chunk).map_err(BatchError::io(&temporary))?;
            written += chunk.len() as u64;
        }
        file.sync_all().map_err(BatchError::io(&temporary))?;
        std::fs::rename(&temporary, dest).map_err(BatchError::io(dest))?;
        Ok(written)
    }
}

fn tokio_free_read(path: &Path) -> Result<Vec<u8>, BatchError> {
    std::fs::read(path).map_err(BatchError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_either_body_shape() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad file","type":"invalid_request_error"}}"#),
            "bad file"
        );
        assert_eq!(
            error_message(r#"{"object":"error","message":"flat","code":400}"#),
            "flat"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }

    #[test]
    fn a_base_url_without_scheme_is_refused() {
        assert!(BatchClient::new("localhost:8000/v1", None, Duration::from_secs(1)).is_err());
        let client = BatchClient::new(
            "http://x/v1/",
            Some("sk-secret".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("sk-secret"));
    }
}
