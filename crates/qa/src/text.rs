//! Caption text measures: words, an estimate of text-encoder tokens, n-grams and terms.

/// Words of a caption: maximal runs of letters, digits, `'`, `-` and `.` inside numbers.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-' || c == '.'))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '-' || c == '\''))
        .filter(|w| !w.is_empty())
}

/// Estimated tokens of a CLIP-style BPE text encoder (the 77-token budget) and of T5-style
/// encoders (the 256-token budget): one token per word piece of up to 6 characters, one per
/// punctuation mark, plus the two start/end tokens. Measured against real tokenisers this
/// over-counts ordinary English slightly, which is the safe side for a budget.
pub fn token_estimate(text: &str) -> u32 {
    let mut tokens = 2u32;
    let mut run = 0u32;
    for c in text.chars() {
        if c.is_alphanumeric() {
            run += 1;
        } else {
            tokens += run.div_ceil(6);
            run = 0;
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
    }
    tokens + run.div_ceil(6)
}

/// Words too common to characterise a class.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into",
    "is", "it", "its", "no", "not", "of", "on", "or", "the", "there", "this", "to", "with",
    "without", "which", "within", "was", "were", "both", "than", "that", "these", "any", "all",
    "also", "each", "but", "their", "appear", "appears", "seen", "shows", "show",
];

/// Whether a lower-cased word characterises content (not a stop word, not a bare number).
pub fn is_term(word: &str) -> bool {
    word.len() > 2
        && !STOPWORDS.contains(&word)
        && !word.chars().all(|c| c.is_ascii_digit() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_punctuation_and_keep_numbers() {
        let w: Vec<&str> = words("Cup-to-disc ratio 0.45; the disc, (pink).").collect();
        assert_eq!(w, ["Cup-to-disc", "ratio", "0.45", "the", "disc", "pink"]);
    }

    #[test]
    fn tokens_grow_with_length_and_punctuation() {
        assert_eq!(token_estimate(""), 2);
        assert_eq!(token_estimate("the disc"), 4);
        assert_eq!(token_estimate("haemorrhages."), 2 + 2 + 1);
        assert!(token_estimate(&"word ".repeat(100)) >= 100);
    }

    #[test]
    fn terms_skip_stopwords_and_numbers() {
        assert!(is_term("haemorrhages"));
        assert!(!is_term("the"));
        assert!(!is_term("0.45"));
    }
}
