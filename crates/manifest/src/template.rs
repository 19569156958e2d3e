//! `{placeholder}` templates: image path templates (rendered from a row) and file-name patterns
//! (matched against a file stem to capture labels).

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    /// A placeholder; `width` fixes its length in characters (patterns only).
    Placeholder {
        name: String,
        width: Option<usize>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for next in chars.by_ref() {
                        match next {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => return Err(format!("nested `{{` in template `{text}`")),
                            other => inner.push(other),
                        }
                    }
                    if !closed {
                        return Err(format!("unclosed `{{` in template `{text}`"));
                    }
                    let (name, width) = split_width(&inner);
                    if name.trim().is_empty() {
                        return Err(format!("empty placeholder `{{}}` in template `{text}`"));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Placeholder {
                        name: name.trim().to_string(),
                        width,
                    });
                }
                '}' => return Err(format!("unmatched `}}` in template `{text}`")),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// Names of the placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Placeholder { name, .. } => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// True when some placeholder has a fixed width (only meaningful in patterns).
    pub fn has_widths(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Placeholder { width: Some(_), .. }))
    }

    /// Renders the template; `value` gives each placeholder's text (or an error reason).
    pub fn render(
        &self,
        mut value: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder { name, .. } => out.push_str(&value(name)?),
            }
        }
        Ok(out)
    }

    /// Matches `text` against the template as a pattern, returning the captures in order.
    ///
    /// Placeholders without a width take the shortest non-empty text that lets the rest match,
    /// so `{id}_{class}` splits `12_3_A` as `12` / `3_A`.
    pub fn captures(&self, text: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        match_from(&self.segments, text, &mut out).then_some(out)
    }
}

fn split_width(inner: &str) -> (&str, Option<usize>) {
    if let Some((name, digits)) = inner.rsplit_once(':')
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && let Ok(width) = digits.parse::<usize>()
        && width > 0
    {
        return (name, Some(width));
    }
    (inner, None)
}

fn match_from(segments: &[Segment], text: &str, out: &mut Vec<(String, String)>) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return text.is_empty();
    };
    match first {
        Segment::Literal(literal) => match text.strip_prefix(literal.as_str()) {
            Some(remaining) => match_from(rest, remaining, out),
            None => false,
        },
        Segment::Placeholder { name, width } => {
            // Candidate split points, shortest capture first.
            let ends: Vec<usize> = text
                .char_indices()
                .map(|(index, ch)| index + ch.len_utf8())
                .collect();
            let candidates: Vec<usize> = match width {
                Some(width) => ends
                    .get(width.saturating_sub(1))
                    .copied()
                    .into_iter()
                    .collect(),
                None => ends,
            };
            for end in candidates {
                let (Some(captured), Some(remaining)) = (text.get(..end), text.get(end..)) else {
                    continue;
                };
                out.push((name.clone(), captured.to_string()));
                if match_from(rest, remaining, out) {
                    return true;
                }
                out.pop();
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_literals_and_placeholders() {
        let template = Template::parse("train/{image}.jpeg").unwrap();
        assert_eq!(
            template.segments,
            vec![
                Segment::Literal("train/".into()),
                Segment::Placeholder {
                    name: "image".into(),
                    width: None
                },
                Segment::Literal(".jpeg".into()),
            ]
        );
        assert_eq!(
            Template::parse("a{{b}}").unwrap().segments,
            vec![Segment::Literal("a{b}".into())]
        );
    }

    #[test]
    fn rejects_broken_templates() {
        for bad in ["a{b", "a}b", "{}", "{a{b}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_from_values() {
        let template = Template::parse("{dir}/{Image name}.jpg").unwrap();
        let rendered = template.render(|name| Ok(name.replace(' ', "_")));
        assert_eq!(rendered.unwrap(), "dir/Image_name.jpg");
        assert!(template.render(|_| Err("empty".into())).is_err());
    }

    #[test]
    fn captures_with_widths_and_shortest_match() {
        let pattern = Template::parse("{class:1}{id}").unwrap();
        assert_eq!(
            pattern.captures("g0001"),
            Some(vec![
                ("class".into(), "g".into()),
                ("id".into(), "0001".into())
            ])
        );
        let pattern = Template::parse("{id}_{disease}").unwrap();
        assert_eq!(
            pattern.captures("12_3_A"),
            Some(vec![
                ("id".into(), "12".into()),
                ("disease".into(), "3_A".into())
            ])
        );
        assert_eq!(pattern.captures("noseparator"), None);
    }

    proptest! {
        #[test]
        fn pattern_recovers_rendered_parts(id in "[0-9]{1,6}", suffix in "[A-Z]") {
            let pattern = Template::parse("{id}_{suffix}").unwrap();
            let text = format!("{id}_{suffix}");
            let captures = pattern.captures(&text).unwrap();
            prop_assert_eq!(captures, vec![("id".to_string(), id), ("suffix".to_string(), suffix)]);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = Template::parse(&text);
        }
    }
}
