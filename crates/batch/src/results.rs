//! Reading output and error files and joining them on `custom_id`.
//!
//! Both formats are read by one parser:
//! - OpenAI writes answers to the output file and failures to a separate error file; order is
//!   not guaranteed. A failure has `response` with a non-2xx `status_code` and an error body, or
//!   `response: null` and `error: {code, message}`.
//! - vLLM `run-batch` writes one file in input order, ids `vllm-...`; a failure has
//!   `response: {status_code: 400 (or the error's code), body: null}` and `error` either a plain
//!   string or a whole error response (`{"error": {...}}` or the older flat
//!   `{"object": "error", "message", "code": <int>}`). Bodies may carry extra fields.

use crate::BatchError;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

/// What one line says about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// The endpoint answered 2xx; `body` is the chat completion as JSON text.
    Response {
        /// HTTP status of the answer.
        status_code: u16,
        /// The completion body, as JSON text (for the captioner's completion parser).
        body: String,
    },
    /// The request failed.
    Error {
        /// HTTP status, when the line gives one.
        status_code: Option<u16>,
        /// Machine-readable code, when given.
        code: Option<String>,
        /// What happened.
        message: String,
    },
}

/// A line that could not be read as a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The file (as labelled by the caller).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Why it is unreadable.
    pub reason: String,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.reason)
    }
}

/// The join of result files with the ids that were asked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Joined {
    /// One outcome per expected id that came back.
    pub results: HashMap<String, LineOutcome>,
    /// Ids that came back but were not asked (another dataset's file, or a stray line).
    pub unknown: Vec<String>,
    /// Ids that came back more than once (the first answer, or the first line, is kept).
    pub duplicates: Vec<String>,
    /// Ids asked that never came back.
    pub missing: Vec<String>,
    /// Unreadable lines.
    pub problems: Vec<LineProblem>,
}

/// Accumulates result lines from any number of files.
#[derive(Debug)]
pub struct Joiner {
    expected: HashSet<String>,
    joined: Joined,
}

impl Joiner {
    /// A join expecting these ids.
    pub fn new(expected: impl IntoIterator<Item = String>) -> Self {
        Joiner {
            expected: expected.into_iter().collect(),
            joined: Joined::default(),
        }
    }

    /// Reads every line of a file; only failing to read it at all is an error.
    pub fn ingest_path(&mut self, path: &Path) -> Result<(), BatchError> {
        let file = std::fs::File::open(path).map_err(BatchError::io(path))?;
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.ingest_reader(&label, std::io::BufReader::new(file))
            .map_err(BatchError::io(path))
    }

    /// Reads every line of `reader`, labelling problems with `label`.
    pub fn ingest_reader(&mut self, label: &str, mut reader: impl BufRead) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let mut number = 0usize;
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            number += 1;
            match std::str::from_utf8(&buffer) {
                Ok(line) => self.ingest_line(label, number, line),
                Err(e) => self.problem(label, number, format!("not UTF-8 ({e})")),
            }
        }
    }

    /// Joins one line (blank lines are skipped).
    pub fn ingest_line(&mut self, label: &str, number: usize, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let (id, outcome) = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(reason) => return self.problem(label, number, reason),
        };
        if !self.expected.contains(&id) {
            self.joined.unknown.push(id);
            return;
        }
        match self.joined.results.get_mut(&id) {
            None => {
                self.joined.results.insert(id, outcome);
            }
            Some(existing) => {
                // An answer beats a failure whichever came first; otherwise the first line wins.
                if matches!(existing, LineOutcome::Error { .. })
                    && matches!(outcome, LineOutcome::Response { .. })
                {
                    *existing = outcome;
                }
                if !self.joined.duplicates.contains(&id) {
                    self.joined.duplicates.push(id);
                }
            }
        }
    }

    fn problem(&mut self, label: &str, line: usize, reason: String) {
        self.joined.problems.push(LineProblem {
            file: label.to_string(),
            line,
            reason,
        });
    }

    /// The join, with every expected id that never came back listed as missing (sorted).
    pub fn finish(mut self) -> Joined {
        let mut missing: Vec<String> = self
            .expected
            .iter()
            .filter(|id| !self.joined.results.contains_key(*id))
            .cloned()
            .collect();
        missing.sort();
        self.joined.missing = missing;
        self.joined
    }
}

/// Parses one output or error line into its `custom_id` and outcome.
pub fn parse_line(line: &str) -> Result<(String, LineOutcome), String> {
    let value: Value = serde_json::from_str(line.trim()).map_err(|e| format!("not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let id = match object.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::String(_)) => return Err("custom_id is empty".into()),
        Some(other) => return Err(format!("custom_id is not a string: {other}")),
        None => return Err("no custom_id".into()),
    };
    let response = object.get("response").filter(|r| !r.is_null());
    let error = object.get("error").filter(|e| !e.is_null());
    let status = response
        .and_then(|r| r.get("status_code"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let body = response
        .and_then(|r| r.get("body"))
        .filter(|b| !b.is_null());
    if let Some(error) = error {
        let (code, message) = describe_error(error);
        return Ok((
            id,
            LineOutcome::Error {
                status_code: status,
                code,
                message,
            },
        ));
    }
    let Some(response) = response else {
        return Err("neither response nor error".into());
    };
    // vLLM leaves status_code out only by its default of 200.
    let status = match response.get("status_code") {
        None => 200,
        Some(_) => status.ok_or("status_code is not an HTTP status")?,
    };
    match body {
        Some(body) if (200..300).contains(&status) && body.is_object() => Ok((
            id,
            LineOutcome::Response {
                status_code: status,
                body: body.to_string(),
            },
        )),
        Some(body) if !(200..300).contains(&status) => {
            let (code, message) = describe_error(body);
            Ok((
                id,
                LineOutcome::Error {
                    status_code: Some(status),
                    code,
                    message,
                },
            ))
        }
        Some(_) => Err("response body is not a JSON object".into()),
        None => Ok((
            id,
            LineOutcome::Error {
                status_code: Some(status),
                code: None,
                message: format!("HTTP {status} with no body"),
            },
        )),
    }
}

/// Code and message of an error in any of the shapes seen: a string, `{code, message}`,
/// `{"error": {...}}`, or vLLM's flat `{"object": "error", "message", "code": <int>}`.
fn describe_error(error: &Value) -> (Option<String>, String) {
    let inner = match error.get("error") {
        Some(nested) if nested.is_object() => nested,
        Some(Value::String(message)) => return (None, message.clone()),
        _ => error,
    };
    if let Value::String(message) = inner {
        return (None, message.clone());
    }
    let field = |name: &str| match inner.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = field("message").unwrap_or_else(|| inner.to_string());
    (field("code").or_else(|| field("type")), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;

    fn openai_ok(id: &str) -> String {
        format!(
            r#"{{"id":"batch_req_1","custom_id":"{id}","response":{{"status_code":200,"request_id":"req_1","body":{COMPLETION}}},"error":null}}"#
        )
    }

    #[test]
    fn openai_answers_and_both_error_shapes() {
        let (id, outcome) = parse_line(&openai_ok("a")).unwrap();
        assert_eq!(id, "a");
        assert!(
            matches!(outcome, LineOutcome::Response { status_code: 200, ref body } if body.contains("chatcmpl-1"))
        );
        let http_error = r#"{"id":"x","custom_id":"b","response":{"status_code":400,"request_id":"r","body":{"error":{"message":"image too large","type":"invalid_request_error","code":"invalid_image"}}},"error":null}"#;
        assert_eq!(
            parse_line(http_error).unwrap().1,
            LineOutcome::Error {
                status_code: Some(400),
                code: Some("invalid_image".into()),
                message: "image too large".into()
            }
        );
        let batch_error = r#"{"id":"x","custom_id":"c","response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}"#;
        assert!(matches!(
            parse_line(batch_error).unwrap().1,
            LineOutcome::Error { status_code: None, code: Some(ref c), .. } if c == "batch_expired"
        ));
    }

    #[test]
    fn vllm_run_batch_lines() {
        let ok = format!(
            r#"{{"id":"vllm-5b2f","custom_id":"a","response":{{"status_code":200,"request_id":"vllm-batch-77","body":{COMPLETION}}},"error":null}}"#
        );
        assert!(matches!(
            parse_line(&ok).unwrap().1,
            LineOutcome::Response { .. }
        ));
        let string_error = r#"{"id":"vllm-1","custom_id":"b","response":{"status_code":400,"request_id":"vllm-batch-2","body":null},"error":"Request must not be sent in stream mode"}"#;
        assert_eq!(
            parse_line(string_error).unwrap().1,
            LineOutcome::Error {
                status_code: Some(400),
                code: None,
                message: "Request must not be sent in stream mode".into()
            }
        );
        let flat = r#"{"id":"vllm-1","custom_id":"c","response":{"status_code":400,"request_id":"vllm-batch-2","body":null},"error":{"object":"error","message":"maximum context length is 4096 tokens","type":"BadRequestError","param":null,"code":400}}"#;
        assert!(matches!(
            parse_line(flat).unwrap().1,
            LineOutcome::Error { code: Some(ref c), ref message, .. } if c == "400" && message.contains("context length")
        ));
        let nested = r#"{"id":"vllm-1","custom_id":"d","response":{"status_code":400,"request_id":"r","body":null},"error":{"error":{"message":"bad","type":"BadRequestError","code":400}}}"#;
        assert!(
            matches!(parse_line(nested).unwrap().1, LineOutcome::Error { ref message, .. } if message == "bad")
        );
    }

    #[test]
    fn bad_lines_are_problems_not_panics() {
        for line in [
            "{",
            "[]",
            r#"{"response":null}"#,
            r#"{"custom_id":7,"response":null,"error":null}"#,
            r#"{"custom_id":"a","response":null,"error":null}"#,
            r#"{"custom_id":"a","response":{"status_code":200,"body":"text"},"error":null}"#,
            r#"{"custom_id":"a","response":{"status_code":99999,"body":{}},"error":null}"#,
        ] {
            assert!(parse_line(line).is_err(), "{line}");
        }
    }

    #[test]
    fn join_reports_unknown_duplicate_missing_and_problems() {
        let mut joiner = Joiner::new(["a", "b", "c"].map(String::from));
        let error_a =
            r#"{"custom_id":"a","response":null,"error":{"code":"server_error","message":"boom"}}"#;
        let text = format!(
            "{error_a}\n{}\n{}\nnot json\n\n{}\n",
            openai_ok("a"),
            openai_ok("zzz"),
            openai_ok("b")
        );
        joiner
            .ingest_reader("out.jsonl", std::io::Cursor::new(text))
            .unwrap();
        joiner
            .ingest_reader("err.jsonl", std::io::Cursor::new(vec![0xff, 0xfe, b'\n']))
            .unwrap();
        let joined = joiner.finish();
        assert!(matches!(joined.results["a"], LineOutcome::Response { .. }));
        assert!(matches!(joined.results["b"], LineOutcome::Response { .. }));
        assert_eq!(joined.unknown, vec!["zzz".to_string()]);
        assert_eq!(joined.duplicates, vec!["a".to_string()]);
        assert_eq!(joined.missing, vec!["c".to_string()]);
        assert_eq!(joined.problems.len(), 2);
        assert_eq!(joined.problems[0].line, 4);
        assert_eq!(joined.problems[1].file, "err.jsonl");
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_a_problem(line in "\\PC{0,200}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn every_expected_id_is_either_joined_or_missing(
            ids in proptest::collection::hash_set("[a-f0-9]{4}", 1..20),
            answered in proptest::collection::vec(any::<bool>(), 20),
        ) {
            let ids: Vec<String> = ids.into_iter().collect();
            let mut joiner = Joiner::new(ids.clone());
            for (i, id) in ids.iter().enumerate() {
                if answered[i] {
                    joiner.ingest_line("f", i + 1, &openai_ok(id));
                }
            }
            let joined = joiner.finish();
            prop_assert_eq!(joined.results.len() + joined.missing.len(), ids.len());
            for (i, id) in ids.iter().enumerate() {
                prop_assert_eq!(joined.results.contains_key(id), answered[i]);
            }
        }
    }
}
