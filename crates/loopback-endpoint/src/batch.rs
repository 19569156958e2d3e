//! The Files and Batches API in memory, for batch-mode tests.
//!
//! - `POST /v1/files` (multipart, `purpose=batch`), `GET /v1/files/{id}/content`;
//! - `POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches` (newest first);
//! - `POST /batch/script` sets the script (`{"delay_ms": 200, "fail_every": 3}`), `GET
//!   /batch/stats` returns counters (uploads, batches created, polls, downloads).
//!
//! A batch is `in_progress` until `delay_ms` after its creation; the first poll after that
//! completes it: every request line gets the endpoint's normal answer in the output file, except
//! every `fail_every`-th line (1-based) and unreadable lines, which go to the error file. Output
//! lines are written in reverse input order, because the real API does not keep the order.

use super::{Reply, Shared, error_body, json_reply};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The in-memory files and batches of one endpoint.
#[derive(Default)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, String>,
    next_file: u64,
    batches: Vec<Batch>,
    delay: Duration,
    fail_every: u64,
    uploads: u64,
    created: u64,
    polls: u64,
    downloads: u64,
}

impl Inner {
    fn new_file_id(&mut self) -> String {
        self.next_file += 1;
        format!("file-{}", self.next_file)
    }
}

struct Batch {
    id: String,
    input_file_id: String,
    created: Instant,
    status: &'static str,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    total: u64,
    completed: u64,
    failed: u64,
    metadata: Value,
}

impl Batch {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "errors": null,
        })
    }
}

/// True for the paths this module serves.
pub(crate) fn handles(path: &str) -> bool {
    path.starts_with("/v1/files") || path.starts_with("/v1/batches") || path.starts_with("/batch/")
}

/// Serves one request of this module.
pub(crate) fn handle(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Reply {
    let store = &shared.batch;
    let mut inner = store.inner.lock().unwrap_or_else(|e| e.into_inner());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["v1", "files"]) => upload(&mut inner, body),
        ("GET", ["v1", "files", id, "content"]) => match inner.files.get(*id) {
            Some(text) => {
                let text = text.clone();
                inner.downloads += 1;
                Reply::Full {
                    status: 200,
                    headers: Vec::new(),
                    body: text,
                }
            }
            None => not_found(&format!("no file {id}")),
        },
        ("POST", ["v1", "batches"]) => create(&mut inner, body),
        ("GET", ["v1", "batches"]) => {
            let data: Vec<Value> = inner.batches.iter().rev().map(Batch::to_json).collect();
            json_reply(
                200,
                json!({"object": "list", "data": data, "has_more": false,
                       "first_id": inner.batches.last().map(|b| b.id.clone()),
                       "last_id": inner.batches.first().map(|b| b.id.clone())}),
            )
        }
        ("GET", ["v1", "batches", id]) => {
            inner.polls += 1;
            let id = id.to_string();
            advance(&mut inner, &id, &shared.spec.answer);
            match inner.batches.iter().find(|b| b.id == id) {
                Some(batch) => json_reply(200, batch.to_json()),
                None => not_found(&format!("no batch {id}")),
            }
        }
        ("POST", ["batch", "script"]) => {
            let Ok(script) = serde_json::from_slice::<Value>(body) else {
                return json_reply(
                    400,
                    error_body("script is not JSON", "invalid_request_error", None),
                );
            };
            inner.delay = Duration::from_millis(script["delay_ms"].as_u64().unwrap_or(0));
            inner.fail_every = script["fail_every"].as_u64().unwrap_or(0);
            json_reply(200, json!({"ok": true}))
        }
        ("GET", ["batch", "stats"]) => json_reply(
            200,
            json!({"uploads": inner.uploads, "batches_created": inner.created,
                   "polls": inner.polls, "downloads": inner.downloads}),
        ),
        _ => not_found(&format!("no route {method} {path}")),
    }
}

fn not_found(message: &str) -> Reply {
    json_reply(404, error_body(message, "invalid_request_error", None))
}

fn bad_request(message: &str) -> Reply {
    json_reply(400, error_body(message, "invalid_request_error", None))
}

/// Parses a multipart/form-data body without its headers: the boundary is its first line.
fn multipart_fields(body: &[u8]) -> Option<HashMap<String, Vec<u8>>> {
    let first_line_end = body.windows(2).position(|w| w == b"\r\n")?;
    let boundary = &body[..first_line_end];
    if !boundary.starts_with(b"--") {
        return None;
    }
    let mut fields = HashMap::new();
    let mut delimiter = b"\r\n".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut rest = &body[first_line_end + 2..];
    loop {
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let content = &rest[head_end + 4..];
        let end = content
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_slice())?;
        let name = head
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("name="))
            .map(|n| {
                n.split(['\r', '\n'])
                    .next()
                    .unwrap_or(n)
                    .trim_matches('"')
                    .to_string()
            })?;
        fields.insert(name, content[..end].to_vec());
        rest = &content[end + delimiter.len()..];
        if rest.starts_with(b"--") {
            return Some(fields);
        }
        rest = rest.strip_prefix(b"\r\n")?;
    }
}

fn upload(inner: &mut Inner, body: &[u8]) -> Reply {
    let Some(fields) = multipart_fields(body) else {
        return bad_request("expected a multipart/form-data body with fields file and purpose");
    };
    if fields.get("purpose").map(Vec::as_slice) != Some(b"batch".as_slice()) {
        return bad_request("purpose must be batch");
    }
    let Some(file) = fields.get("file") else {
        return bad_request("no file field");
    };
    let Ok(text) = String::from_utf8(file.clone()) else {
        return bad_request("the file is not UTF-8 JSONL");
    };
    inner.uploads += 1;
    let id = inner.new_file_id();
    let bytes = text.len();
    inner.files.insert(id.clone(), text);
    json_reply(
        200,
        json!({"id": id, "object": "file", "bytes": bytes, "created_at": 0,
               "filename": "input.jsonl", "purpose": "batch"}),
    )
}

fn create(inner: &mut Inner, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bad_request("body is not JSON");
    };
    let Some(input) = request["input_file_id"].as_str() else {
        return bad_request("input_file_id is required");
    };
    if request["endpoint"] != "/v1/chat/completions" || request["completion_window"] != "24h" {
        return bad_request("endpoint must be /v1/chat/completions and completion_window 24h");
    }
    let Some(text) = inner.files.get(input) else {
        return not_found(&format!("no file {input}"));
    };
    let total = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    inner.created += 1;
    let batch = Batch {
        id: format!("batch_{}", inner.batches.len() + 1),
        input_file_id: input.to_string(),
        created: Instant::now(),
        status: "in_progress",
        output_file_id: None,
        error_file_id: None,
        total,
        completed: 0,
        failed: 0,
        metadata: request["metadata"].clone(),
    };
    let reply = batch.to_json();
    inner.batches.push(batch);
    json_reply(200, reply)
}

/// Completes a batch whose delay has passed: writes its output and error files.
fn advance(inner: &mut Inner, id: &str, answer: &str) {
    let delay = inner.delay;
    let fail_every = inner.fail_every;
    let Some(index) = inner.batches.iter().position(|b| b.id == id) else {
        return;
    };
    if inner.batches[index].status != "in_progress"
        || inner.batches[index].created.elapsed() < delay
    {
        return;
    }
    let input = inner
        .files
        .get(&inner.batches[index].input_file_id)
        .cloned()
        .unwrap_or_default();
    let mut output = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in input.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let number = number as u64 + 1;
        let request: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let custom_id = request["custom_id"].as_str().unwrap_or("").to_string();
        if custom_id.is_empty() || request["body"]["messages"].as_array().is_none() {
            errors.push(json!({"id": format!("batch_req_{number}"), "custom_id": custom_id, "response": null,
                "error": {"code": "invalid_request", "message": format!("line {number} is not a chat completion request")}}));
            continue;
        }
        if fail_every > 0 && number.is_multiple_of(fail_every) {
            errors.push(json!({"id": format!("batch_req_{number}"), "custom_id": custom_id,
                "response": {"status_code": 500, "request_id": format!("req_{number}"),
                             "body": error_body("The server had an error while processing your request.", "server_error", None)},
                "error": null}));
            continue;
        }
        let model = request["body"]["model"].as_str().unwrap_or("loopback-vlm");
        let prompt_tokens = (line.len() / 4) as u64;
        let completion_tokens = (answer.len() / 4) as u64;
        output.push(json!({"id": format!("batch_req_{number}"), "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": format!("req_{number}"), "body": {
                "id": format!("chatcmpl-batch-{number}"), "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": null}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}},
            "error": null}));
    }
    // The real API does not keep input order; neither does this one.
    output.reverse();
    let to_text = |lines: &[Value]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let (completed, failed) = (output.len() as u64, errors.len() as u64);
    let output_id = (!output.is_empty()).then(|| inner.new_file_id());
    let error_id = (!errors.is_empty()).then(|| inner.new_file_id());
    if let Some(id) = &output_id {
        inner.files.insert(id.clone(), to_text(&output));
    }
    if let Some(id) = &error_id {
        inner.files.insert(id.clone(), to_text(&errors));
    }
    let batch = &mut inner.batches[index];
    batch.status = "completed";
    batch.output_file_id = output_id;
    batch.error_file_id = error_id;
    batch.completed = completed;
    batch.failed = failed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_split_into_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n{\"b\":2}\n\r\n--XyZ--\r\n";
        let fields = multipart_fields(body).unwrap();
        assert_eq!(fields["purpose"], b"batch");
        assert_eq!(fields["file"], b"{\"a\":1}\n{\"b\":2}\n");
        assert!(multipart_fields(b"not multipart").is_none());
        assert!(multipart_fields(b"--XyZ\r\nno end").is_none());
    }
}
