//! Word-level text matching: tokenising, phrase patterns and simple negation (NegEx-like).
//!
//! Matching works on lower-cased words, not substrings, so `may` does not match `dismay` and
//! `cotton wool` matches `cotton-wool`. A pattern word ending in `*` matches any word that starts
//! with it (`haemorrhag*` matches `haemorrhages`).

use std::fmt;

/// One word of a text and the clause it belongs to (clauses end at `.`, `;`, `:`, `!`, `?` and
/// line breaks), so that negation and phrases never reach across a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub word: String,
    pub clause: u32,
}

/// Splits text into lower-case words. Letters and digits form words; an apostrophe inside a word
/// and a decimal point between digits (`0.8`) stay in it; everything else separates words.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut clause = 0u32;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        let joins = match c {
            '.' => {
                word.chars().last().is_some_and(|l| l.is_ascii_digit())
                    && next.is_some_and(|n| n.is_ascii_digit())
            }
            '\'' | '\u{2019}' => !word.is_empty() && next.is_some_and(char::is_alphabetic),
            _ => false,
        };
        if joins {
            word.push(if c == '.' { '.' } else { '\'' });
            continue;
        }
        if !word.is_empty() {
            tokens.push(Token {
                word: std::mem::take(&mut word),
                clause,
            });
        }
        if matches!(c, '.' | ';' | ':' | '!' | '?' | '\n' | '\r') {
            clause = clause.saturating_add(1);
        }
    }
    if !word.is_empty() {
        tokens.push(Token { word, clause });
    }
    tokens
}

/// One word of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PatternWord {
    text: String,
    prefix: bool,
}

/// A phrase pattern: consecutive words, each exact or a prefix (`word*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Phrase {
    source: String,
    words: Vec<PatternWord>,
}

impl Phrase {
    /// Parses a pattern such as `cotton wool`, `haemorrhag*` or `cup-to-disc`.
    /// Returns a message (not a panic) when a piece is not a single word.
    pub fn parse(pattern: &str) -> Result<Phrase, String> {
        let mut words = Vec::new();
        for piece in pattern.split(|c: char| c.is_whitespace() || c == '-') {
            if piece.is_empty() {
                continue;
            }
            let prefix = piece.ends_with('*');
            let bare = piece.trim_end_matches('*');
            let mut toks = tokenize(bare).into_iter();
            match (toks.next(), toks.next()) {
                (Some(tok), None) if tok.word.chars().count() == bare.chars().count() => {
                    words.push(PatternWord {
                        text: tok.word,
                        prefix,
                    });
                }
                _ => {
                    return Err(format!(
                        "pattern {pattern:?}: {piece:?} is not a word (letters, digits, optional trailing *)"
                    ));
                }
            }
        }
        if words.is_empty() {
            return Err(format!("pattern {pattern:?} has no words"));
        }
        Ok(Phrase {
            source: pattern.to_string(),
            words,
        })
    }

    /// The pattern as written in the rules file.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the phrase matches the tokens starting at `start`, inside one clause.
    fn matches_at(&self, tokens: &[Token], start: usize) -> bool {
        let Some(clause) = tokens.get(start).map(|t| t.clause) else {
            return false;
        };
        self.words.iter().enumerate().all(|(j, pw)| {
            tokens.get(start + j).is_some_and(|tok| {
                tok.clause == clause
                    && if pw.prefix {
                        tok.word.starts_with(&pw.text)
                    } else {
                        tok.word == pw.text
                    }
            })
        })
    }

    /// Start positions of every match of the phrase in `tokens`.
    pub fn find_all<'a>(&'a self, tokens: &'a [Token]) -> impl Iterator<Item = usize> + 'a {
        (0..tokens.len()).filter(move |&i| self.matches_at(tokens, i))
    }

    /// Whether the phrase matches anywhere (no negation check).
    #[cfg(test)]
    pub fn occurs_in(&self, tokens: &[Token]) -> bool {
        self.find_all(tokens).next().is_some()
    }
}

impl fmt::Display for Phrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Negation cues and their scope.
#[derive(Debug, Clone)]
pub(crate) struct Negation {
    /// Cues that negate a term a few words after them ("no", "absence of").
    pub before: Vec<Phrase>,
    /// Cues that negate a term a few words before them ("absent", "not seen").
    pub after: Vec<Phrase>,
    /// Words that end a negation's scope ("but", "seen", "with").
    pub terminators: Vec<Phrase>,
    /// Largest number of words allowed between a cue and the term it negates.
    pub window: usize,
}

impl Negation {
    /// Whether the term spanning `start..start + len` is negated.
    pub fn is_negated(&self, tokens: &[Token], start: usize, len: usize) -> bool {
        let Some(clause) = tokens.get(start).map(|t| t.clause) else {
            return false;
        };
        // Backwards: a cue ending at k negates unless a terminator ends first (closer to the term).
        for k in (0..start).rev() {
            let gap = start - 1 - k;
            if gap > self.window || tokens.get(k).is_none_or(|t| t.clause != clause) {
                break;
            }
            if ends_at(&self.before, tokens, k) {
                return true;
            }
            if ends_at(&self.terminators, tokens, k) {
                break;
            }
        }
        // Forwards: a cue starting at k negates unless a terminator starts first.
        let end = start + len;
        for k in end..tokens.len() {
            let gap = k - end;
            if gap > self.window || tokens.get(k).is_none_or(|t| t.clause != clause) {
                break;
            }
            if self.after.iter().any(|cue| cue.matches_at(tokens, k)) {
                return true;
            }
            if self.terminators.iter().any(|t| t.matches_at(tokens, k)) {
                break;
            }
        }
        false
    }

    /// First match of `phrase` that is not negated (and not covered by an `except` phrase).
    pub fn find_affirmed(
        &self,
        phrase: &Phrase,
        except: &[Phrase],
        tokens: &[Token],
    ) -> Option<usize> {
        phrase.find_all(tokens).find(|&i| {
            !self.is_negated(tokens, i, phrase.len()) && !covered(except, tokens, i, phrase.len())
        })
    }
}

/// Whether one of `phrases` ends exactly at token `k`.
fn ends_at(phrases: &[Phrase], tokens: &[Token], k: usize) -> bool {
    phrases.iter().any(|p| {
        (k + 1)
            .checked_sub(p.len())
            .is_some_and(|s| p.matches_at(tokens, s))
    })
}

/// Whether one of `phrases` matches a span that contains the term at `start..start + len`.
fn covered(phrases: &[Phrase], tokens: &[Token], start: usize, len: usize) -> bool {
    phrases.iter().any(|p| {
        let lo = (start + len).saturating_sub(p.len());
        (lo..=start).any(|s| s + p.len() >= start + len && p.matches_at(tokens, s))
    })
}

/// The words around token `at`, for readable reject details.
pub(crate) fn context(tokens: &[Token], at: usize, len: usize) -> String {
    let lo = at.saturating_sub(3);
    let hi = (at + len + 3).min(tokens.len());
    tokens
        .get(lo..hi)
        .unwrap_or_default()
        .iter()
        .map(|t| t.word.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phrases(list: &[&str]) -> Vec<Phrase> {
        list.iter().map(|p| Phrase::parse(p).unwrap()).collect()
    }

    fn negation() -> Negation {
        Negation {
            before: phrases(&["no", "without", "absence of", "free of", "not"]),
            after: phrases(&["absent", "not seen"]),
            terminators: phrases(&["but", "seen", "with"]),
            window: 8,
        }
    }

    #[test]
    fn tokenizer_splits_words_and_clauses() {
        let toks = tokenize("Cup-to-disc ratio 0.8. No Haemorrhages; can't");
        let words: Vec<_> = toks.iter().map(|t| t.word.as_str()).collect();
        assert_eq!(
            words,
            [
                "cup",
                "to",
                "disc",
                "ratio",
                "0.8",
                "no",
                "haemorrhages",
                "can't"
            ]
        );
        let clauses: Vec<_> = toks.iter().map(|t| t.clause).collect();
        assert_eq!(clauses, [0, 0, 0, 0, 0, 1, 1, 2]);
    }

    #[test]
    fn phrases_match_words_not_substrings() {
        let may = Phrase::parse("may").unwrap();
        assert!(!may.occurs_in(&tokenize("dismay and mayhem")));
        assert!(may.occurs_in(&tokenize("this May be")));
        let stem = Phrase::parse("haemorrhag*").unwrap();
        assert!(stem.occurs_in(&tokenize("Haemorrhages are seen")));
        let cw = Phrase::parse("cotton wool").unwrap();
        assert!(cw.occurs_in(&tokenize("a cotton-wool spot")));
        assert!(
            !cw.occurs_in(&tokenize("cotton. wool")),
            "phrases stay in one clause"
        );
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Phrase::parse("").is_err());
        assert!(Phrase::parse("a.b").is_err());
        assert!(Phrase::parse("**").is_err());
        assert!(Phrase::parse("ok*").is_ok());
    }

    #[test]
    fn negation_table() {
        let neg = negation();
        let term = Phrase::parse("haemorrhag*").unwrap();
        let cases = [
            ("There are no haemorrhages.", false),
            ("Without any haemorrhage.", false),
            ("In the absence of haemorrhages.", false),
            ("The retina is free of haemorrhages.", false),
            ("Haemorrhages are absent.", false),
            ("Haemorrhages are not seen.", false),
            (
                "There are no microaneurysms, exudates, cotton-wool spots or haemorrhages.",
                false,
            ),
            ("Several haemorrhages are present.", true),
            ("No drusen. Haemorrhages are scattered.", true),
            ("No drusen but several haemorrhages.", true),
            ("No drusen are seen, several haemorrhages.", true),
            ("No drusen with scattered haemorrhages.", true),
            ("Haemorrhages are seen and exudates are absent.", true),
            (
                "no one two three four five six seven eight nine haemorrhages",
                true,
            ),
        ];
        for (text, affirmed) in cases {
            let toks = tokenize(text);
            assert_eq!(
                neg.find_affirmed(&term, &[], &toks).is_some(),
                affirmed,
                "{text}"
            );
        }
    }

    #[test]
    fn except_phrases_excuse_a_match() {
        let neg = negation();
        let term = Phrase::parse("haemorrhag*").unwrap();
        let except = phrases(&["disc haemorrhag*"]);
        let toks = tokenize("A small disc haemorrhage at the rim.");
        assert_eq!(neg.find_affirmed(&term, &except, &toks), None);
        let toks = tokenize("A disc haemorrhage and a retinal haemorrhage.");
        assert!(neg.find_affirmed(&term, &except, &toks).is_some());
    }

    proptest! {
        #[test]
        fn tokenizer_and_matching_never_panic(text in "\\PC{0,200}") {
            let toks = tokenize(&text);
            prop_assert!(toks.iter().all(|t| !t.word.is_empty()));
            let neg = negation();
            let term = Phrase::parse("a*").unwrap();
            let _ = neg.find_affirmed(&term, &phrases(&["b a*"]), &toks);
            let _ = context(&toks, toks.len(), 3);
        }
    }
}
