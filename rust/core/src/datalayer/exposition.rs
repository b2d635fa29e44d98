//! Prometheus text exposition format, read without allocating: one `Sample` per valid line,
//! label values handed out as raw slices (unescaped only when a caller asks for one).

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The text between the braces, already checked to be well formed ("" when absent).
    labels: &'a str,
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// Value of label `key`, unescaped (`\\`, `\"`, `\n`), or None when the sample lacks it.
    pub fn label(&self, key: &str) -> Option<String> {
        let mut rest = self.labels;
        while let Some((k, raw, tail)) = next_label(rest) {
            if k == key {
                return Some(unescape(raw));
            }
            rest = tail;
        }
        None
    }
}

/// Iterates the samples of an exposition text; lines that are neither comments, blank nor
/// valid samples are skipped and counted in `skipped`.
pub struct Samples<'a, F> {
    lines: std::str::Lines<'a>,
    wanted: F,
    pub skipped: usize,
}

#[cfg(test)]
pub fn samples(text: &str) -> Samples<'_, fn(&str) -> bool> {
    samples_of(text, |_| true)
}

/// Only lines whose metric name passes `wanted` get their labels checked and are yielded;
/// the others (most of a real scrape: histogram buckets) only get a cheap shape check.
pub fn samples_of<F: Fn(&str) -> bool>(text: &str, wanted: F) -> Samples<'_, F> {
    Samples {
        lines: text.lines(),
        wanted,
        skipped: 0,
    }
}

impl<'a, F: Fn(&str) -> bool> Iterator for Samples<'a, F> {
    type Item = Sample<'a>;

    fn next(&mut self) -> Option<Sample<'a>> {
        for line in self.lines.by_ref() {
            let line = line.trim_start_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line, &self.wanted) {
                Ok(Some(sample)) => return Some(sample),
                Ok(None) => {}
                Err(()) => self.skipped += 1,
            }
        }
        None
    }
}

/// Ok(None): a well-shaped line of an unwanted metric.
fn parse_line<'a>(line: &'a str, wanted: &impl Fn(&str) -> bool) -> Result<Option<Sample<'a>>, ()> {
    let bytes = line.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
        .unwrap_or(bytes.len());
    if name_end == 0 || bytes[0].is_ascii_digit() {
        return Err(());
    }
    let name = &line[..name_end];
    let want = wanted(name);
    let mut rest = &line[name_end..];
    let mut labels = "";
    if let Some(after) = rest.strip_prefix('{') {
        // Only the value and timestamp follow the block, and neither holds a brace.
        let close = memchr::memrchr(b'}', after.as_bytes()).ok_or(())?;
        if want && label_block_len(after) != Some(close) {
            return Err(());
        }
        labels = &after[..close];
        rest = &after[close + 1..];
    }
    let value = parse_tail(rest).ok_or(())?;
    Ok(want.then_some(Sample {
        name,
        labels,
        value,
    }))
}

/// `value [timestamp]` after the name and labels.
fn parse_tail(rest: &str) -> Option<f64> {
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next()?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(value)
}

/// Length of a well-formed label block up to (not including) its closing brace.
fn label_block_len(text: &str) -> Option<usize> {
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start_matches([' ', ',']);
        if let Some(stripped) = trimmed.strip_prefix('}') {
            return Some(text.len() - stripped.len() - 1);
        }
        let (_, _, tail) = next_label(trimmed)?;
        rest = tail;
    }
}

/// Splits `key="raw value"` off the front of a label list; returns (key, raw, rest).
fn next_label(text: &str) -> Option<(&str, &str, &str)> {
    let text = text.trim_start_matches([' ', ',']);
    let eq = text.find('=')?;
    let key = text[..eq].trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let after = text[eq + 1..].trim_start().strip_prefix('"')?;
    let bytes = after.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((key, &after[..i], &after[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn unescape(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Go-style floats as Prometheus writes them: `+Inf`, `-Inf`, `NaN`, exponents.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> (Vec<Sample<'_>>, usize) {
        let mut it = samples(text);
        let v: Vec<_> = it.by_ref().collect();
        (v, it.skipped)
    }

    #[test]
    fn comments_and_blank_lines_are_not_samples() {
        let (v, skipped) = all("# HELP x help\n# TYPE x gauge\n\n   \nx 1\n");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "x");
        assert_eq!(v[0].value, 1.0);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn labels_with_escaped_quotes_and_commas_are_read() {
        let (v, _) = all(r#"m{a="x\"y,z",b="back\\slash",c="l\nf",} 2.5"#);
        assert_eq!(v[0].label("a").as_deref(), Some("x\"y,z"));
        assert_eq!(v[0].label("b").as_deref(), Some("back\\slash"));
        assert_eq!(v[0].label("c").as_deref(), Some("l\nf"));
        assert_eq!(v[0].label("d"), None);
        assert_eq!(v[0].value, 2.5);
    }

    #[test]
    fn special_values_and_timestamps_parse() {
        let (v, skipped) = all("a +Inf\nb -Inf 1700000000000\nc NaN\nd 1.5e-3 -5\n");
        assert_eq!(skipped, 0);
        assert_eq!(v[0].value, f64::INFINITY);
        assert_eq!(v[1].value, f64::NEG_INFINITY);
        assert!(v[2].value.is_nan());
        assert_eq!(v[3].value, 0.0015);
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let text = "ok 1\nnovalue\nbad{a=\"unterminated} 1\n9starts_with_digit 1\nx 1 notatimestamp\ny{a=b} 1\nz 1 2 3\nok 2\n";
        let (v, skipped) = all(text);
        assert_eq!(v.len(), 2);
        assert_eq!(skipped, 6);
    }
}
