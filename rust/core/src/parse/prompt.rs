//! Walkers that append a request's prompt to flat text as serde meets it: chat / Anthropic
//! messages, Responses input items, content parts, completion prompts and token-id lists.
//! Each message starts with a role marker so the same words from different roles hash apart.

use std::fmt::Write as _;

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::fields::{Key, Sink, Str, Target};
use super::ParseError;

/// Field paths used in errors for a content value and its parts.
pub(crate) struct ContentNames {
    content: &'static str,
    part: &'static str,
    part_type: &'static str,
    part_text: &'static str,
}

/// Field paths used in errors for a list of messages.
pub(crate) struct MessageNames {
    list: &'static str,
    list_expected: &'static str,
    item: &'static str,
    role: &'static str,
    content: ContentNames,
}

/// Field paths used in errors for a completion prompt or an embeddings input.
pub(crate) struct ListNames {
    list: &'static str,
    item: &'static str,
    token: &'static str,
}

const CHAT: MessageNames = MessageNames {
    list: "messages",
    list_expected: "a non-empty array",
    item: "messages[]",
    role: "messages[].role",
    content: ContentNames {
        content: "messages[].content",
        part: "messages[].content[]",
        part_type: "messages[].content[].type",
        part_text: "messages[].content[].text",
    },
};

const RESPONSES: MessageNames = MessageNames {
    list: "input",
    list_expected: "a string or an array of input items",
    item: "input[]",
    role: "input[].role",
    content: ContentNames {
        content: "input[].content",
        part: "input[].content[]",
        part_type: "input[].content[].type",
        part_text: "input[].content[].text",
    },
};

const SYSTEM: ContentNames = ContentNames {
    content: "system",
    part: "system[]",
    part_type: "system[].type",
    part_text: "system[].text",
};

const INSTRUCTIONS: ContentNames = ContentNames {
    content: "instructions",
    part: "instructions[]",
    part_type: "instructions[].type",
    part_text: "instructions[].text",
};

pub(crate) const PROMPT: ListNames = ListNames {
    list: "prompt",
    item: "prompt[]",
    token: "prompt[][]",
};
pub(crate) const INPUT: ListNames = ListNames {
    list: "input",
    item: "input[]",
    token: "input[][]",
};

const MESSAGE_START: char = '\u{1e}';
const ROLE_END: char = '\u{1f}';

fn push_role(buf: &mut String, role: &str) {
    buf.push(MESSAGE_START);
    buf.push_str(role);
    buf.push(ROLE_END);
}

/// Write the role marker of the message whose text starts at byte `at` of `buf`
/// (the role key may come after the content in the object).
fn mark_role(buf: &mut String, at: usize, role: &str) {
    if at == buf.len() {
        push_role(buf, role);
    } else {
        // Only this message's text moves, and the buffer is pre-sized: no allocation.
        buf.insert(at, ROLE_END);
        buf.insert_str(at, role);
        buf.insert(at, MESSAGE_START);
    }
}

/// A list of messages (chat, Anthropic) or of Responses input items; a Responses input may
/// also be a plain string, read as one user message.
pub(crate) struct Messages<'s> {
    sink: &'s mut Sink,
    names: &'static MessageNames,
    role_required: bool,
    text_allowed: bool,
}

impl<'s> Messages<'s> {
    pub fn chat(sink: &'s mut Sink) -> Self {
        Messages {
            sink,
            names: &CHAT,
            role_required: true,
            text_allowed: false,
        }
    }

    pub fn responses(sink: &'s mut Sink) -> Self {
        Messages {
            sink,
            names: &RESPONSES,
            role_required: false,
            text_allowed: true,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((self.names.list, self.names.list_expected));
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.names.list_expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if !self.text_allowed {
            return Err(E::invalid_type(Unexpected::Str(v), &self));
        }
        let buf = self.sink.buf(Target::Prompt);
        push_role(buf, "user");
        buf.push_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let names = self.names;
        let mut count = 0usize;
        while seq
            .next_element_seed(Message {
                sink: &mut *self.sink,
                names,
                role_required: self.role_required,
            })?
            .is_some()
        {
            count += 1;
        }
        if count == 0 {
            let expected = names.list_expected;
            return Err(self.sink.fail(ParseError::WrongType {
                field: names.list,
                expected,
            }));
        }
        Ok(())
    }
}

/// One message object: its role marker, then its content.
struct Message<'s> {
    sink: &'s mut Sink,
    names: &'static MessageNames,
    role_required: bool,
}

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((self.names.item, "an object"));
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (sink, names) = (self.sink, self.names);
        let start = sink.buf(Target::Prompt).len();
        let (mut seen, mut has_role) = (0u32, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Role => {
                    sink.first(&mut seen, key, names.role)?;
                    sink.at = Some((names.role, "a string"));
                    let role: Str = map.next_value()?;
                    mark_role(sink.buf(Target::Prompt), start, &role.0);
                    has_role = true;
                }
                Key::Content => {
                    sink.first(&mut seen, key, names.content.content)?;
                    map.next_value_seed(Content {
                        sink: &mut *sink,
                        target: Target::Prompt,
                        names: &names.content,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if self.role_required && !has_role {
            return Err(sink.fail(ParseError::MissingField(names.role)));
        }
        Ok(())
    }
}

/// A content value: a string, null, or an array of parts whose text parts are kept
/// (`text`, Responses' `input_text` / `output_text`); images and tool blocks are skipped.
pub(crate) struct Content<'s> {
    sink: &'s mut Sink,
    target: Target,
    names: &'static ContentNames,
}

impl<'s> Content<'s> {
    /// Anthropic's top-level `system`: kept ahead of the messages wherever it sits in the body.
    pub fn system(sink: &'s mut Sink) -> Self {
        push_role(sink.buf(Target::Preamble), "system");
        Content {
            sink,
            target: Target::Preamble,
            names: &SYSTEM,
        }
    }

    /// Responses' `instructions`: a system message ahead of the input.
    pub fn instructions(sink: &'s mut Sink) -> Self {
        push_role(sink.buf(Target::Preamble), "system");
        Content {
            sink,
            target: Target::Preamble,
            names: &INSTRUCTIONS,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Content<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((self.names.content, "a string or an array of content parts"));
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Content<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.buf(self.target).push_str(v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (target, names) = (self.target, self.names);
        while seq
            .next_element_seed(Part {
                sink: &mut *self.sink,
                target,
                names,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One content part object: `{"type": "text", "text": "..."}` or a non-text part to skip.
struct Part<'s> {
    sink: &'s mut Sink,
    target: Target,
    names: &'static ContentNames,
}

impl<'de> DeserializeSeed<'de> for Part<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((self.names.part, "an object"));
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Part<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a content part object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (sink, names) = (self.sink, self.names);
        let (mut seen, mut kind, mut text) = (0u32, None::<Str>, None::<Str>);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => {
                    sink.first(&mut seen, key, names.part_type)?;
                    sink.at = Some((names.part_type, "a string"));
                    kind = Some(map.next_value()?);
                }
                Key::Text => {
                    sink.first(&mut seen, key, names.part_text)?;
                    sink.at = Some((names.part_text, "a string"));
                    text = Some(map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let (Some(kind), Some(text)) = (kind, text) {
            if kind.0.ends_with("text") {
                sink.buf(self.target).push_str(&text.0);
            }
        }
        Ok(())
    }
}

/// A completion `prompt` or embeddings `input`: a string, or an array of strings, token ids,
/// or arrays of token ids. Token ids become decimal text so token prompts hash too.
pub(crate) struct TextList<'s> {
    sink: &'s mut Sink,
    names: &'static ListNames,
}

impl<'s> TextList<'s> {
    pub fn new(sink: &'s mut Sink, names: &'static ListNames) -> Self {
        TextList { sink, names }
    }
}

impl<'de> DeserializeSeed<'de> for TextList<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((
            self.names.list,
            "a string or an array of strings or token ids",
        ));
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextList<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or an array of strings or token ids")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.buf(Target::Prompt).push_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let names = self.names;
        while seq
            .next_element_seed(TextItem {
                sink: &mut *self.sink,
                names,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One element of a prompt list: a string, a token id, or an array of token ids.
struct TextItem<'s> {
    sink: &'s mut Sink,
    names: &'static ListNames,
}

impl<'de> DeserializeSeed<'de> for TextItem<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.at = Some((
            self.names.item,
            "a string, a token id or an array of token ids",
        ));
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextItem<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, a token id or an array of token ids")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let buf = self.sink.buf(Target::Prompt);
        buf.push(MESSAGE_START);
        buf.push_str(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        push_token(self.sink.buf(Target::Prompt), v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.sink;
        sink.buf(Target::Prompt).push(MESSAGE_START);
        loop {
            sink.at = Some((self.names.token, "a token id"));
            match seq.next_element::<u64>()? {
                Some(token) => push_token(sink.buf(Target::Prompt), token),
                None => return Ok(()),
            }
        }
    }
}

fn push_token(buf: &mut String, token: u64) {
    // Writing to a String cannot fail.
    let _ = write!(buf, "{token} ");
}
