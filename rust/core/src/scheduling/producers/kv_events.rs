//! vLLM's KV-cache events as they arrive over ZMQ: a msgpack `KVEventBatch` in either of the
//! two forms vLLM versions send — msgspec `array_like` (`[ts, [event...], dp_rank?]`, each
//! event a tagged array `["BlockStored", block_hashes, parent_block_hash, token_ids,
//! block_size, lora_id, medium, lora_name, extra_keys?]`) or named fields (`{"ts", "events",
//! "data_parallel_rank"}`, each event a map tagged by `"type"`). `BlockRemoved` and
//! `AllBlocksCleared` likewise. A small msgpack reader of its own, errors naming the field.
//! Newer vLLM adds, under its hybrid KV-cache allocator, each event's KV-cache group
//! (`group_idx`) and, on `BlockStored`, the group's kind (`kv_cache_spec_kind`).

/// Where an engine holds a block: its medium (device tier) and, under vLLM's hybrid
/// allocator, its KV-cache group. One block hash can be held in several places at once (a
/// full-attention group and a sliding-window group, GPU and a CPU offload), and a
/// `BlockRemoved` takes it from one place only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    /// Lowercased, as upstream's indexer reads it; None for the GPU (absent or "gpu").
    pub medium: Option<String>,
    pub group: Option<u32>,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    pub hashes: Vec<u64>,
    pub parent: Option<u64>,
    /// The tokens of the stored blocks (empty from publishers that leave them out).
    pub token_ids: Vec<u32>,
    pub block_size: u32,
    pub lora_name: Option<String>,
    /// Per block, the string extra keys the engine hashed (LoRA name, cache salt, multimodal
    /// identifiers); empty when the event has none.
    pub extra_keys: Vec<Vec<String>>,
    pub place: Place,
    /// The group's kind (`full_attention`, `sliding_window`, `mamba`...), when the event says.
    pub spec_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    Stored(Stored),
    Removed { hashes: Vec<u64>, place: Place },
    AllCleared,
}

impl KvEvent {
    /// A `BlockRemoved` of `hashes` from the GPU, with no group.
    pub fn removed(hashes: Vec<u64>) -> KvEvent {
        KvEvent::Removed {
            hashes,
            place: Place::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KvEventBatch {
    pub ts: f64,
    pub events: Vec<KvEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kv events: {0}")]
pub struct KvEventsError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 16;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KvEventsError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| {
            KvEventsError(format!("truncated msgpack at byte {} (need {n})", self.at))
        })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, KvEventsError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn int(&mut self, n: usize) -> Result<i64, KvEventsError> {
        let raw = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((raw << shift) as i64) >> shift)
    }

    fn len(&mut self, n: usize) -> Result<usize, KvEventsError> {
        Ok(self.uint(n)? as usize)
    }

    fn array(&mut self, n: usize) -> Result<Value<'a>, KvEventsError> {
        if self.depth >= MAX_DEPTH {
            return Err(KvEventsError("msgpack nested too deeply".into()));
        }
        // Every element takes at least one byte, so a claimed length past the end is bogus.
        if n > self.buf.len() - self.at {
            return Err(KvEventsError(format!(
                "array of {n} at byte {} overruns the payload",
                self.at
            )));
        }
        self.depth += 1;
        let items = (0..n).map(|_| self.value()).collect::<Result<Vec<_>, _>>();
        self.depth -= 1;
        Ok(Value::Array(items?))
    }

    fn map(&mut self, n: usize) -> Result<Value<'a>, KvEventsError> {
        if self.depth >= MAX_DEPTH {
            return Err(KvEventsError("msgpack nested too deeply".into()));
        }
        if n > (self.buf.len() - self.at) / 2 {
            return Err(KvEventsError(format!(
                "map of {n} at byte {} overruns the payload",
                self.at
            )));
        }
        self.depth += 1;
        let pairs = (0..n)
            .map(|_| Ok((self.value()?, self.value()?)))
            .collect::<Result<Vec<_>, KvEventsError>>();
        self.depth -= 1;
        Ok(Value::Map(pairs?))
    }

    fn str(&mut self, n: usize) -> Result<Value<'a>, KvEventsError> {
        let at = self.at;
        std::str::from_utf8(self.take(n)?)
            .map(Value::Str)
            .map_err(|_| KvEventsError(format!("string at byte {at} is not UTF-8")))
    }

    fn value(&mut self) -> Result<Value<'a>, KvEventsError> {
        let tag = self.take(1)?[0];
        Ok(match tag {
            0x00..=0x7f => Value::Int(i128::from(tag)),
            0xe0..=0xff => Value::Int(i128::from(tag as i8)),
            0x80..=0x8f => return self.map(usize::from(tag & 0x0f)),
            0x90..=0x9f => return self.array(usize::from(tag & 0x0f)),
            0xa0..=0xbf => return self.str(usize::from(tag & 0x1f)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (tag - 0xc4))?;
                Value::Bin(self.take(n)?)
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (tag - 0xcc))?)),
            0xd0..=0xd3 => Value::Int(i128::from(self.int(1 << (tag - 0xd0))?)),
            0xd9..=0xdb => {
                let n = self.len(1 << (tag - 0xd9))?;
                return self.str(n);
            }
            0xdc | 0xdd => {
                let n = self.len(if tag == 0xdc { 2 } else { 4 })?;
                return self.array(n);
            }
            0xde | 0xdf => {
                let n = self.len(if tag == 0xde { 2 } else { 4 })?;
                return self.map(n);
            }
            other => {
                return Err(KvEventsError(format!(
                    "unsupported msgpack type 0x{other:02x} at byte {}",
                    self.at - 1
                )))
            }
        })
    }
}

/// A block hash as vLLM sends it: an int (possibly negative from older vLLM) or bytes (with
/// `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`), folded to the u64 vLLM's int form would carry —
/// the last 8 bytes, big-endian. None: not a hash.
fn hash_of(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Int(i) if *i >= i128::from(i64::MIN) && *i <= i128::from(u64::MAX) => {
            Some(if *i < 0 { *i as i64 as u64 } else { *i as u64 })
        }
        Value::Bin(b) if !b.is_empty() => Some(
            b[b.len().saturating_sub(8)..]
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        ),
        _ => None,
    }
}

fn kind(v: &Value<'_>) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "string",
        Value::Bin(_) => "bytes",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
    }
}

fn wrong(at: impl std::fmt::Display, expected: &str, got: &Value<'_>) -> KvEventsError {
    KvEventsError(format!("{at}: expected {expected}, got {}", kind(got)))
}

/// An event's or batch's fields, by position (array form) or by name (map form).
enum Fields<'v, 'a> {
    Positional(&'static [&'static str], &'v [Value<'a>]),
    Named(&'v [(Value<'a>, Value<'a>)]),
}

impl<'v, 'a> Fields<'v, 'a> {
    fn get(&self, name: &str) -> Option<&'v Value<'a>> {
        match self {
            Fields::Positional(names, values) => names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values.get(i)),
            Fields::Named(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if *s == name))
                .map(|(_, v)| v),
        }
    }
}

const STORED: &[&str] = &[
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
    "kv_cache_spec_kind",
    "kv_cache_spec_sliding_window",
];
const REMOVED: &[&str] = &["block_hashes", "medium", "group_idx"];
const BATCH: &[&str] = &["ts", "events", "data_parallel_rank"];

fn hashes(v: Option<&Value<'_>>, at: &str) -> Result<Vec<u64>, KvEventsError> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, h)| {
                hash_of(h).ok_or_else(|| {
                    wrong(format_args!("{at}[{i}]"), "a block hash (int or bytes)", h)
                })
            })
            .collect(),
        Some(other) => Err(wrong(at, "an array", other)),
        None => Err(KvEventsError(format!("{at}: missing"))),
    }
}

fn token_ids(v: Option<&Value<'_>>, at: &str) -> Result<Vec<u32>, KvEventsError> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::Int(n) if *n >= 0 && *n <= i128::from(u32::MAX) => Ok(*n as u32),
                other => Err(wrong(format_args!("{at}[{i}]"), "a token id", other)),
            })
            .collect(),
        Some(other) => Err(wrong(at, "an array", other)),
    }
}

fn opt_str(v: Option<&Value<'_>>, at: &str) -> Result<Option<String>, KvEventsError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Str(s)) => Ok(Some((*s).to_owned())),
        Some(other) => Err(wrong(at, "a string or nil", other)),
    }
}

/// The event's medium and group.
fn place(f: &Fields<'_, '_>, at: &str) -> Result<Place, KvEventsError> {
    let medium = opt_str(f.get("medium"), &format!("{at}.medium"))?
        .map(|m| m.to_ascii_lowercase())
        .filter(|m| !m.is_empty() && m != "gpu");
    let group = match f.get("group_idx") {
        None | Some(Value::Nil) => None,
        Some(Value::Int(n)) if *n >= 0 && *n <= i128::from(u32::MAX) => Some(*n as u32),
        Some(other) => {
            return Err(wrong(
                format_args!("{at}.group_idx"),
                "a group index >= 0",
                other,
            ))
        }
    };
    Ok(Place { medium, group })
}

/// Per block, the string keys (a bare string, or the first of a `[identifier, offset]` pair);
/// keys of other types do not enter the EPP's block keys and are left out.
fn extra_keys(v: Option<&Value<'_>>, at: &str) -> Result<Vec<Vec<String>>, KvEventsError> {
    let items = match v {
        None | Some(Value::Nil) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong(at, "an array", other)),
    };
    Ok(items
        .iter()
        .map(|block| match block {
            Value::Array(keys) => keys
                .iter()
                .filter_map(|k| match k {
                    Value::Str(s) => Some((*s).to_owned()),
                    Value::Array(pair) => match pair.first() {
                        Some(Value::Str(s)) => Some((*s).to_owned()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect())
}

fn stored(f: &Fields<'_, '_>, at: &str) -> Result<KvEvent, KvEventsError> {
    let block_hashes = hashes(f.get("block_hashes"), &format!("{at}.block_hashes"))?;
    // No parent is nil, or 0 as upstream's indexer reads it (llm-d-inference-sim's array form
    // sends 0 for a chain from the prompt's start).
    let parent = match f.get("parent_block_hash") {
        None | Some(Value::Nil) => None,
        Some(p) => Some(hash_of(p).ok_or_else(|| {
            wrong(
                format_args!("{at}.parent_block_hash"),
                "a block hash (int or bytes)",
                p,
            )
        })?)
        .filter(|&h| h != 0),
    };
    let block_size = match f.get("block_size") {
        Some(Value::Int(n)) if *n >= 1 && *n <= i128::from(u32::MAX) => *n as u32,
        _ => {
            return Err(KvEventsError(format!(
                "{at}.block_size: expected an integer >= 1"
            )))
        }
    };
    Ok(KvEvent::Stored(Stored {
        hashes: block_hashes,
        parent,
        token_ids: token_ids(f.get("token_ids"), &format!("{at}.token_ids"))?,
        block_size,
        lora_name: opt_str(f.get("lora_name"), &format!("{at}.lora_name"))?,
        extra_keys: extra_keys(f.get("extra_keys"), &format!("{at}.extra_keys"))?,
        place: place(f, at)?,
        spec_kind: opt_str(
            f.get("kv_cache_spec_kind"),
            &format!("{at}.kv_cache_spec_kind"),
        )?,
    }))
}

/// The event's tag: first element of the array form, `type` of the map form.
fn tag<'v>(v: &'v Value<'_>, at: &str) -> Result<&'v str, KvEventsError> {
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::Str(t)) => Ok(t),
            _ => Err(KvEventsError(format!(
                "{at}: first element must be the event tag"
            ))),
        },
        Value::Map(pairs) => match Fields::Named(pairs).get("type") {
            Some(Value::Str(t)) => Ok(t),
            _ => Err(KvEventsError(format!(
                "{at}: a map event needs a string 'type'"
            ))),
        },
        other => Err(wrong(at, "a tagged array or a map", other)),
    }
}

fn fields<'v, 'a>(v: &'v Value<'a>, names: &'static [&'static str]) -> Fields<'v, 'a> {
    match v {
        Value::Array(items) => Fields::Positional(names, items.get(1..).unwrap_or_default()),
        Value::Map(pairs) => Fields::Named(pairs),
        _ => Fields::Named(&[]),
    }
}

fn event(v: &Value<'_>, i: usize) -> Result<KvEvent, KvEventsError> {
    let at = format!("events[{i}]");
    match tag(v, &at)? {
        "BlockStored" => stored(&fields(v, STORED), &format!("{at}.BlockStored")),
        "BlockRemoved" => {
            let f = fields(v, REMOVED);
            let at = format!("{at}.BlockRemoved");
            Ok(KvEvent::Removed {
                hashes: hashes(f.get("block_hashes"), &format!("{at}.block_hashes"))?,
                place: place(&f, &at)?,
            })
        }
        "AllBlocksCleared" => Ok(KvEvent::AllCleared),
        other => Err(KvEventsError(format!("{at}: unknown event type '{other}'"))),
    }
}

/// Decode one `KVEventBatch` payload (the last frame of a ZMQ message).
pub fn decode_batch(payload: &[u8]) -> Result<KvEventBatch, KvEventsError> {
    let mut r = Reader {
        buf: payload,
        at: 0,
        depth: 0,
    };
    let root = r.value()?;
    if r.at != payload.len() {
        return Err(KvEventsError(format!(
            "{} trailing bytes after the batch",
            payload.len() - r.at
        )));
    }
    let fields = match &root {
        Value::Array(items) => Fields::Positional(BATCH, items),
        Value::Map(pairs) => Fields::Named(pairs),
        other => return Err(wrong("batch", "an array or a map", other)),
    };
    let ts = match fields.get("ts") {
        Some(Value::Float(t)) => *t,
        Some(Value::Int(t)) => *t as f64,
        _ => return Err(KvEventsError("batch.ts: expected a number".into())),
    };
    let Some(Value::Array(events)) = fields.get("events") else {
        return Err(KvEventsError("batch.events: expected an array".into()));
    };
    let events = events
        .iter()
        .enumerate()
        .map(|(i, e)| event(e, i))
        .collect::<Result<_, _>>()?;
    Ok(KvEventBatch { ts, events })
}

#[cfg(test)]
#[path = "kv_events_tests.rs"]
pub(crate) mod tests;
