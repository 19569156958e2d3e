//! Token counting for caption budgets, with real tokenizers from crates.
//!
//! - [`TokenizerKind::Clip`]: the CLIP BPE (49,408 tokens, the vocabulary file OpenAI ships,
//!   embedded by `instant-clip-tokenizer`), counting the start and end tokens as CLIP's
//!   77-token context does.
//! - [`TokenizerKind::GemmaProxy`]: OpenAI's `o200k_base` BPE (embedded by `tiktoken-rs`) as a
//!   stand-in for Gemma's 256k SentencePiece vocabulary, which no crate ships. Gemma splits every
//!   digit into its own token while `o200k_base` groups up to three, so digit runs are counted
//!   one token per digit, plus one for the `<bos>` token (see `docs/validation.md`).
//!
//! Both vocabularies are parsed once per process, on first use.

use std::sync::OnceLock;

/// Which tokenizer a caption style's budget is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// CLIP's BPE, with start and end tokens (CLIP text encoders take 77).
    Clip,
    /// `o200k_base` adjusted to Gemma's digit splitting, plus `<bos>` (Gemma-class encoders).
    GemmaProxy,
}

impl TokenizerKind {
    /// Every kind, for error messages.
    pub const ALL: [TokenizerKind; 2] = [TokenizerKind::Clip, TokenizerKind::GemmaProxy];

    /// The name used in the rules file (`clip`, `gemma_proxy`).
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Clip => "clip",
            TokenizerKind::GemmaProxy => "gemma_proxy",
        }
    }

    /// What the count means, for reject details and prompts.
    pub fn label(self) -> &'static str {
        match self {
            TokenizerKind::Clip => "CLIP tokens",
            TokenizerKind::GemmaProxy => "Gemma-style tokens",
        }
    }

    /// Parses a rules-file name.
    pub fn parse(name: &str) -> Option<TokenizerKind> {
        TokenizerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Tokens `text` takes in a text encoder of this kind, special tokens included.
    pub fn count(self, text: &str) -> usize {
        match self {
            TokenizerKind::Clip => {
                let mut tokens = Vec::new();
                clip().encode(text, &mut tokens);
                tokens.len() + 2
            }
            TokenizerKind::GemmaProxy => {
                o200k().encode_ordinary(text).len() + extra_digit_tokens(text) + 1
            }
        }
    }
}

fn clip() -> &'static instant_clip_tokenizer::Tokenizer {
    static CLIP: OnceLock<instant_clip_tokenizer::Tokenizer> = OnceLock::new();
    CLIP.get_or_init(instant_clip_tokenizer::Tokenizer::new)
}

fn o200k() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Tokens Gemma spends on digits beyond `o200k_base`: a run of `n` ASCII digits is `n` tokens
/// in Gemma and `ceil(n / 3)` in `o200k_base`.
fn extra_digit_tokens(text: &str) -> usize {
    let mut extra = 0;
    let mut run = 0usize;
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run += 1;
        } else if run > 0 {
            extra += run - run.div_ceil(3);
            run = 0;
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clip_counts_match_the_reference_tokenizer() {
        // "a photo of a cat" is 5 BPE tokens in OpenAI's CLIP tokenizer, 7 with start and end.
        assert_eq!(TokenizerKind::Clip.count("a photo of a cat"), 7);
        assert_eq!(TokenizerKind::Clip.count(""), 2);
        assert!(TokenizerKind::Clip.count("cup-to-disc ratio 0.45") > 5);
    }

    #[test]
    fn gemma_proxy_splits_digits_and_counts_bos() {
        assert_eq!(TokenizerKind::GemmaProxy.count(""), 1);
        let plain = TokenizerKind::GemmaProxy.count("ratio");
        // "12345" is 2 o200k tokens ("123", "45"), 5 Gemma tokens.
        assert_eq!(extra_digit_tokens("12345"), 3);
        assert_eq!(extra_digit_tokens("0.45 and 7"), 1);
        assert!(TokenizerKind::GemmaProxy.count("ratio 12345") >= plain + 5);
    }

    #[test]
    fn names_round_trip() {
        for kind in TokenizerKind::ALL {
            assert_eq!(TokenizerKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(TokenizerKind::parse("bert"), None);
    }

    proptest! {
        #[test]
        fn counting_never_panics(text in "\\PC{0,200}") {
            prop_assert!(TokenizerKind::Clip.count(&text) >= 2);
            prop_assert!(TokenizerKind::GemmaProxy.count(&text) >= 1);
        }
    }
}
