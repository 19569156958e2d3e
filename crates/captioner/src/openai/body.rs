//! The request body, serialised from a template made once per client.
//!
//! Most of a request body never changes between items: the model, the sampling settings, the
//! `response_format` with the whole caption schema (4 KB), the extra body fields and, for
//! json_object/none, the schema appended to the system message. Building a `serde_json::Value`
//! per request clones and re-serialises all of it; at thousands of requests per second that was a
//! large share of the client's CPU. [`BodyTemplate`] serialises [`chat_request_body`] once with
//! placeholders for what varies (the system text, the user content, `max_tokens`) and then writes
//! each request by copying the fixed bytes and escaping only the varying text.
//!
//! The bytes are exactly `serde_json::to_vec(&chat_request_body(..))`, whatever key order
//! serde_json is built with (the tests check it, so batch input files and online requests stay
//! the same body byte for byte). A configuration whose own text contains a placeholder (it would
//! have to contain NUL characters) gets no template and takes the `Value` path.

use super::{EndpointConfig, chat_request_body};
use crate::CaptionRequest;
use base64::Engine;
use serde_json::Value;

const SYSTEM: &str = "\u{0}retina-system\u{0}";
const USER: &str = "\u{0}retina-user\u{0}";
const MAX_TOKENS: &str = "\u{0}retina-max-tokens\u{0}";
const TEXT: &str = "\u{0}retina-text\u{0}";
const IMAGE: &str = "\u{0}retina-image\u{0}";

/// What goes into a gap of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// The request's system text, escaped, inside a JSON string the template already opens.
    System,
    /// The user content: a whole JSON value (a string, or the text-and-image array).
    User,
    /// `max_tokens`, a number.
    MaxTokens,
}

/// The fixed bytes of a request body and the gaps between them.
#[derive(Debug, Clone)]
pub(crate) struct BodyTemplate {
    /// `pieces[i]` comes before `gaps[i]`; the last piece ends the body.
    pieces: Vec<Vec<u8>>,
    gaps: Vec<Gap>,
    /// The text-and-image user array around its two gaps (text, then image URL), for vision.
    image_parts: Option<[Vec<u8>; 3]>,
    vision: bool,
    /// Where image URLs come from (the bytes, or the record's path).
    transport: super::ImageTransport,
}

/// The JSON form of `text` without its quotes, as serde_json escapes it.
fn escaped(text: &str) -> Vec<u8> {
    let quoted = serde_json::to_vec(text).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_vec()
}

/// Splits `bytes` at each marker (which must each occur exactly once); the pieces in order and
/// which marker ends each.
fn split_at_markers<T: Copy>(
    bytes: &[u8],
    markers: &[(Vec<u8>, T)],
) -> Option<(Vec<Vec<u8>>, Vec<T>)> {
    let mut found = Vec::new();
    for (marker, tag) in markers {
        let mut positions = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, window)| window == marker)
            .map(|(i, _)| i);
        let first = positions.next()?;
        if positions.next().is_some() {
            return None;
        }
        found.push((first, marker.len(), *tag));
    }
    found.sort_by_key(|(at, _, _)| *at);
    let mut pieces = Vec::new();
    let mut tags = Vec::new();
    let mut from = 0;
    for (at, len, tag) in found {
        if at < from {
            return None;
        }
        pieces.push(bytes[from..at].to_vec());
        tags.push(tag);
        from = at + len;
    }
    pieces.push(bytes[from..].to_vec());
    Some((pieces, tags))
}

impl BodyTemplate {
    /// The template of `config`'s bodies; `None` when the configuration's own text contains a
    /// placeholder (then bodies are built as `Value`s).
    pub(crate) fn new(config: &EndpointConfig) -> Option<BodyTemplate> {
        let probe = template_request(SYSTEM, USER);
        let mut value = chat_request_body(config, &probe, 1);
        value
            .as_object_mut()?
            .insert("max_tokens".to_string(), Value::String(MAX_TOKENS.into()));
        let bytes = serde_json::to_vec(&value).ok()?;
        let markers = [
            (escaped(SYSTEM), Gap::System),
            (serde_json::to_vec(USER).ok()?, Gap::User),
            (serde_json::to_vec(MAX_TOKENS).ok()?, Gap::MaxTokens),
        ];
        let (pieces, gaps) = split_at_markers(&bytes, &markers)?;
        let image_parts = if config.vision {
            let mut probe = template_request(SYSTEM, TEXT);
            probe.image = Some(std::sync::Arc::new(Vec::new()));
            probe.image_mime = "image/x";
            let user = chat_request_body(config, &probe, 1)
                .get("messages")?
                .get(1)?
                .get("content")?
                .clone();
            // Placeholders for the escaped text and the image URL (which has no escapes: the
            // MIME type is written by `write`, base64 needs none).
            let user = replace_image_url(user, IMAGE)?;
            let bytes = serde_json::to_vec(&user).ok()?;
            let markers = [
                (escaped(TEXT), 0usize),
                (serde_json::to_vec(IMAGE).ok()?, 1usize),
            ];
            let (pieces, order) = split_at_markers(&bytes, &markers)?;
            if order != [0, 1] {
                return None;
            }
            let [a, b, c]: [Vec<u8>; 3] = pieces.try_into().ok()?;
            Some([a, b, c])
        } else {
            None
        };
        Some(BodyTemplate {
            pieces,
            gaps,
            image_parts,
            vision: config.vision,
            transport: config.image_transport.clone(),
        })
    }

    /// The body of `request` with this `max_tokens`, as bytes.
    pub(crate) fn write(&self, request: &CaptionRequest, max_tokens: u32) -> Vec<u8> {
        let image = request.image.as_ref().filter(|_| self.vision);
        let image_len = image.map_or(0, |i| i.len() * 4 / 3 + 64);
        let fixed: usize = self.pieces.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(
            fixed + request.prompt.system.len() + request.prompt.user.len() + image_len + 64,
        );
        for (piece, gap) in self.pieces.iter().zip(&self.gaps) {
            out.extend_from_slice(piece);
            match gap {
                Gap::System => push_escaped(&mut out, &request.prompt.system),
                Gap::MaxTokens => {
                    out.extend_from_slice(max_tokens.to_string().as_bytes());
                }
                Gap::User => match (image, &self.image_parts) {
                    (Some(image), Some([before_text, before_url, after])) => {
                        out.extend_from_slice(before_text);
                        push_escaped(&mut out, &request.prompt.user);
                        out.extend_from_slice(before_url);
                        out.push(b'"');
                        if let Some(url) = self.transport.url_for(&request.record) {
                            push_escaped(&mut out, &url);
                        } else {
                            push_escaped(&mut out, &format!("data:{};base64,", request.image_mime));
                            let start = out.len();
                            out.resize(start + base64_len(image.len()), 0);
                            let written = base64::engine::general_purpose::STANDARD
                                .encode_slice(image.as_slice(), &mut out[start..])
                                .unwrap_or(0);
                            out.truncate(start + written);
                        }
                        out.push(b'"');
                        out.extend_from_slice(after);
                    }
                    _ => {
                        let _ = serde_json::to_writer(&mut out, &request.prompt.user);
                    }
                },
            }
        }
        if let Some(last) = self.pieces.last() {
            out.extend_from_slice(last);
        }
        out
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends `text` JSON-escaped, without quotes.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    let _ = serde_json::to_writer(&mut *out, text);
    // Drop the quotes serde_json wrote around it.
    out.pop();
    out.remove(start);
}

/// The user content with its image URL replaced by `marker`.
fn replace_image_url(mut user: Value, marker: &str) -> Option<Value> {
    let url = user
        .as_array_mut()?
        .iter_mut()
        .find_map(|part| part.get_mut("image_url"))?
        .get_mut("url")?;
    *url = Value::String(marker.to_string());
    Some(user)
}

fn template_request(system: &str, user: &str) -> CaptionRequest {
    use retina_prompt::RenderedPrompt;
    use retina_records::{ImageFacts, Record};
    CaptionRequest {
        record: std::sync::Arc::new(Record::new("t", "t", std::path::PathBuf::new())),
        facts: std::sync::Arc::new(ImageFacts::fixture(1, 1)),
        prompt: RenderedPrompt {
            system: system.to_string(),
            user: user.to_string(),
        },
        image: None,
        image_mime: "image/jpeg",
        repair: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResponseFormat;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    fn schema() -> Value {
        retina_validate::CaptionSchema::embedded().value().clone()
    }

    fn configs() -> Vec<EndpointConfig> {
        let mut out = Vec::new();
        for format in [
            ResponseFormat::JsonSchema,
            ResponseFormat::JsonObject,
            ResponseFormat::None,
        ] {
            for vision in [true, false] {
                let mut config = EndpointConfig::new("http://x/v1", "m\"odel", schema());
                config.response_format = format;
                config.vision = vision;
                out.push(config.clone());
                config.seed = Some(7);
                config.temperature = 0.7;
                config
                    .extra_body
                    .insert("repeat_penalty".into(), json!(1.1));
                config
                    .extra_body
                    .insert("max_tokens".into(), json!("never replaces ours"));
                out.push(config.clone());
                if vision {
                    for transport in [
                        super::super::ImageTransport::LocalPath,
                        super::super::ImageTransport::UrlPrefix("https://cdn.example/ds".into()),
                    ] {
                        config.image_transport = transport;
                        out.push(config.clone());
                    }
                }
            }
        }
        out
    }

    fn request(system: &str, user: &str, image: Option<Vec<u8>>) -> CaptionRequest {
        let mut request = template_request(system, user);
        request.image = image.map(Arc::new);
        // A path with characters a URL must encode, and a quote that JSON must escape.
        request.record = Arc::new(retina_records::Record::new(
            "t",
            "left eye/IM#1 \"a\".jpg",
            std::path::PathBuf::from("/data/left eye/IM#1 \"a\".jpg"),
        ));
        request
    }

    fn check(config: &EndpointConfig, request: &CaptionRequest, max_tokens: u32) {
        let template = BodyTemplate::new(config).expect("a template");
        let fast = template.write(request, max_tokens);
        let slow = serde_json::to_vec(&chat_request_body(config, request, max_tokens)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
    }

    #[test]
    fn template_bodies_equal_the_value_bodies_byte_for_byte() {
        for config in configs() {
            for image in [None, Some(vec![0u8, 1, 2, 250, 251, 252, 7])] {
                check(
                    &config,
                    &request(
                        "You describe \"fundus\"\n\tphotos.",
                        "Facts: é ✓ \\ </>",
                        image,
                    ),
                    1200,
                );
            }
            check(&config, &request("", "", Some(Vec::new())), u32::MAX);
        }
    }

    #[test]
    fn a_configuration_containing_a_placeholder_gets_no_template() {
        let mut config = EndpointConfig::new("http://x/v1", "m", schema());
        config.extra_body.insert("x".into(), json!(SYSTEM));
        assert!(BodyTemplate::new(&config).is_none());
        config.extra_body.clear();
        config.model = USER.to_string();
        assert!(BodyTemplate::new(&config).is_none());
    }

    proptest! {
        #[test]
        fn any_text_and_image_give_the_value_body(
            system in "\\PC{0,40}|[\u{0}-\u{1f}\"\\\\]{0,10}",
            user in "\\PC{0,80}",
            image in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            max_tokens in any::<u32>(),
            which in 0usize..12,
        ) {
            let configs = configs();
            let config = &configs[which % configs.len()];
            let request = request(&system, &user, image);
            let template = BodyTemplate::new(config).expect("a template");
            let fast = template.write(&request, max_tokens);
            let slow = serde_json::to_vec(&chat_request_body(config, &request, max_tokens)).unwrap();
            prop_assert_eq!(fast, slow);
        }
    }
}
