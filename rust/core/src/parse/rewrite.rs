//! Model-name rewriting: in a request body (splice the top-level `"model"` value, keep every
//! other byte) and back in response chunks (JSON or SSE), so clients see the name they sent.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::fields::{Key, Sink};
use super::{json_text, run, ParseError};

/// Return `body` with its top-level `"model"` value replaced by `model` (JSON-escaped).
/// The body is not re-serialized: key order, spacing and number spelling stay as sent.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Vec<u8>, ParseError> {
    let text = json_text(body)?;
    let mut sink = Sink::default();
    let raw = run(text, &mut sink, |de, sink| {
        de.deserialize_map(ModelSpan { sink })
    })?;
    let raw = raw.ok_or(ParseError::MissingField("model"))?.get();
    if !raw.starts_with('"') {
        return Err(ParseError::WrongType {
            field: "model",
            expected: "a string",
        });
    }
    // The raw value borrows from `text`, so its address gives its byte span in the body.
    let start = raw.as_ptr() as usize - text.as_ptr() as usize;
    Ok(splice_model(body, start..start + raw.len(), model))
}

/// `body` with the bytes of `span` (a JSON string value, quotes included, as
/// `ParsedRequest::model_span` gives it) replaced by `model` as a JSON string: the rewrite of a
/// body parsed already, with no second parse.
pub fn splice_model(body: &[u8], span: Range<usize>, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() - span.len() + model.len() + 2);
    out.extend_from_slice(&body[..span.start]);
    write_json_string(&mut out, model);
    out.extend_from_slice(&body[span.end..]);
    out
}

/// The raw top-level `model` value, refusing a body that names it twice.
struct ModelSpan<'s> {
    sink: &'s mut Sink,
}

impl<'de> Visitor<'de> for ModelSpan<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut seen, mut model) = (0u32, None);
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Model {
                self.sink.first(&mut seen, key, "model")?;
                model = Some(map.next_value::<&RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(model)
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Built once: building a memmem searcher costs more than scanning a typical chunk.
static MODEL_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"model\""));

/// In a response chunk, replace every `"model":"<old>"` (any JSON spacing around the colon)
/// by `"model":"<new>"`; the chunk is returned as is when nothing matches.
pub fn replace_model_in_chunk(chunk: &[u8], old: &str, new: &str) -> Vec<u8> {
    replace_model_in_chunk_cow(chunk, old, new).into_owned()
}

/// As `replace_model_in_chunk`, borrowing the input when nothing is replaced, so a caller
/// holding the chunk (e.g. a Python bytes object) can hand it back without a copy.
pub fn replace_model_in_chunk_cow<'a>(chunk: &'a [u8], old: &str, new: &str) -> Cow<'a, [u8]> {
    if old == new {
        return Cow::Borrowed(chunk);
    }
    let old_json = JsonString::new(old);
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    // Inside a JSON string a quote is escaped (`\"model\"`), so a `"model"` match is a key or a
    // whole string value; only a key is followed by a colon.
    for key_at in MODEL_KEY.find_iter(chunk) {
        let Some(value_at) = value_after_colon(chunk, key_at + b"\"model\"".len()) else {
            continue;
        };
        let Some(value_len) = old_json.matched_at(&chunk[value_at..]) else {
            continue;
        };
        if value_at < copied {
            continue;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(chunk.len() + new.len()));
        out.extend_from_slice(&chunk[copied..value_at]);
        write_json_string(out, new);
        copied = value_at + value_len;
    }
    match out {
        None => Cow::Borrowed(chunk),
        Some(mut out) => {
            out.extend_from_slice(&chunk[copied..]);
            Cow::Owned(out)
        }
    }
}

/// A name as it appears between the quotes of a JSON string; borrowed when it needs no escape,
/// which is every model name in practice.
struct JsonString<'a>(Cow<'a, [u8]>);

impl<'a> JsonString<'a> {
    fn new(s: &'a str) -> Self {
        if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return JsonString(Cow::Borrowed(s.as_bytes()));
        }
        let mut quoted = Vec::with_capacity(s.len() + 8);
        write_json_string(&mut quoted, s);
        JsonString(Cow::Owned(quoted[1..quoted.len() - 1].to_vec()))
    }

    /// The length of the quoted string that `at` starts with, if it is this one.
    fn matched_at(&self, at: &[u8]) -> Option<usize> {
        let inner = &self.0;
        let end = inner.len() + 1;
        let is_match = at.first() == Some(&b'"')
            && at.get(1..end) == Some(&inner[..])
            && at.get(end) == Some(&b'"');
        is_match.then_some(end + 1)
    }
}

/// The index of the first byte after `: ` (JSON whitespace either side), if `at` starts one.
fn value_after_colon(chunk: &[u8], at: usize) -> Option<usize> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let colon = at + chunk.get(at..)?.iter().take_while(|b| is_space(b)).count();
    if chunk.get(colon) != Some(&b':') {
        return None;
    }
    let value = colon + 1;
    Some(value + chunk[value..].iter().take_while(|b| is_space(b)).count())
}
