//! The pieces the body walkers share: field names as keys, borrowed strings, and the sink that
//! collects prompt text and remembers where in the body a type error happened.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::ParseError;

/// Every object key any walker cares about; the rest is `Other` and skipped unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Model,
    Stream,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    CacheSalt,
    Messages,
    Prompt,
    Input,
    Instructions,
    System,
    Role,
    Content,
    Type,
    Text,
    Other,
}

impl Key {
    pub fn name(self) -> &'static str {
        match self {
            Key::Model => "model",
            Key::Stream => "stream",
            Key::MaxTokens => "max_tokens",
            Key::MaxCompletionTokens => "max_completion_tokens",
            Key::MaxOutputTokens => "max_output_tokens",
            Key::CacheSalt => "cache_salt",
            Key::Messages => "messages",
            Key::Prompt => "prompt",
            Key::Input => "input",
            Key::Instructions => "instructions",
            Key::System => "system",
            Key::Role => "role",
            Key::Content => "content",
            Key::Type => "type",
            Key::Text => "text",
            Key::Other => "",
        }
    }

    fn from_name(name: &str) -> Key {
        match name {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "max_tokens" => Key::MaxTokens,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            "max_output_tokens" => Key::MaxOutputTokens,
            "cache_salt" => Key::CacheSalt,
            "messages" => Key::Messages,
            "prompt" => Key::Prompt,
            "input" => Key::Input,
            "instructions" => Key::Instructions,
            "system" => Key::System,
            "role" => Key::Role,
            "content" => Key::Content,
            "type" => Key::Type,
            "text" => Key::Text,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from_name(v))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A JSON string, borrowed from the body unless it had escapes.
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// Which text buffer a walker appends to: the prompt proper, or the system text / instructions
/// that go before it whatever their place in the body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Prompt,
    Preamble,
}

/// State shared by the walkers of one parse.
#[derive(Default)]
pub(crate) struct Sink {
    prompt: String,
    preamble: String,
    /// An error a walker decided on itself (duplicate, empty array…), reported instead of serde's.
    pub err: Option<ParseError>,
    /// (field, expected) of the value being read: a serde type error there becomes WrongType.
    /// Each walker sets it just before asking serde for its value.
    pub at: Option<(&'static str, &'static str)>,
}

impl Sink {
    pub fn buf(&mut self, target: Target) -> &mut String {
        match target {
            Target::Prompt => &mut self.prompt,
            Target::Preamble => &mut self.preamble,
        }
    }

    /// Record `err` and abort the deserialization; `parse::run` reports `err`.
    pub fn fail<E: de::Error>(&mut self, err: ParseError) -> E {
        self.err = Some(err);
        E::custom("refused")
    }

    /// Refuse a key met twice in one object, so no later value silently wins; `name` is the
    /// field's path in the error.
    pub fn first<E: de::Error>(
        &mut self,
        seen: &mut u32,
        key: Key,
        name: &'static str,
    ) -> Result<(), E> {
        let bit = 1u32 << (key as u32);
        if *seen & bit != 0 {
            return Err(self.fail(ParseError::DuplicateField(name)));
        }
        *seen |= bit;
        Ok(())
    }
}
