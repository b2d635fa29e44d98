//! vLLM's KV-cache events as they arrive over ZMQ: a msgpack `KVEventBatch` (`[ts, [event...],
//! dp_rank?]`), each event a tagged array (`["BlockStored", hashes, parent, token_ids,
//! block_size, lora_id?, medium?]`, `["BlockRemoved", hashes, medium?]`, `["AllBlocksCleared"]`).
//! A small msgpack reader of its own: only what these batches use, errors naming the field.

/// One decoded event; token ids are not kept (the EPP recomputes hashes from the prompt).
#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    Stored {
        hashes: Vec<u64>,
        parent: Option<u64>,
        block_size: u32,
    },
    Removed {
        hashes: Vec<u64>,
    },
    AllCleared,
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
    Map,
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

    fn skip_map(&mut self, n: usize) -> Result<Value<'a>, KvEventsError> {
        for _ in 0..2 * n {
            self.value()?;
        }
        Ok(Value::Map)
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
            0x80..=0x8f => return self.skip_map(usize::from(tag & 0x0f)),
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
                return self.skip_map(n);
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

/// A block hash as vLLM sends it: an int (older vLLM, possibly negative) or bytes (newer
/// vLLM's `ExternalBlockHash`), folded to the u64 the index keys by (bytes: the first 8,
/// big-endian — such hashes only match hashes computed the same way). None: not a hash.
fn hash_of(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Int(i) if *i >= i128::from(i64::MIN) && *i <= i128::from(u64::MAX) => {
            Some(if *i < 0 { *i as i64 as u64 } else { *i as u64 })
        }
        Value::Bin(b) if !b.is_empty() => Some(
            b.iter()
                .take(8)
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        ),
        _ => None,
    }
}

fn not_a_hash(v: &Value<'_>, at: impl std::fmt::Display) -> KvEventsError {
    KvEventsError(format!(
        "{at}: expected a block hash (int or bytes), got {}",
        kind(v)
    ))
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
        Value::Map => "map",
    }
}

fn hashes(v: Option<&Value<'_>>, at: &str) -> Result<Vec<u64>, KvEventsError> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, h)| hash_of(h).ok_or_else(|| not_a_hash(h, format_args!("{at}[{i}]"))))
            .collect(),
        Some(other) => Err(KvEventsError(format!(
            "{at}: expected an array, got {}",
            kind(other)
        ))),
        None => Err(KvEventsError(format!("{at}: missing"))),
    }
}

fn event(v: &Value<'_>, i: usize) -> Result<KvEvent, KvEventsError> {
    let at = format!("events[{i}]");
    let Value::Array(fields) = v else {
        return Err(KvEventsError(format!(
            "{at}: expected a tagged array, got {}",
            kind(v)
        )));
    };
    let tag = match fields.first() {
        Some(Value::Str(t)) => *t,
        _ => {
            return Err(KvEventsError(format!(
                "{at}: first element must be the event tag"
            )))
        }
    };
    match tag {
        "BlockStored" => {
            let hashes = hashes(fields.get(1), &format!("{at}.BlockStored.block_hashes"))?;
            let parent = match fields.get(2) {
                None | Some(Value::Nil) => None,
                Some(p) => Some(hash_of(p).ok_or_else(|| {
                    not_a_hash(p, format_args!("{at}.BlockStored.parent_block_hash"))
                })?),
            };
            let block_size = match fields.get(4) {
                Some(Value::Int(n)) if *n >= 1 && *n <= i128::from(u32::MAX) => *n as u32,
                _ => {
                    return Err(KvEventsError(format!(
                        "{at}.BlockStored.block_size: expected an integer >= 1"
                    )))
                }
            };
            Ok(KvEvent::Stored {
                hashes,
                parent,
                block_size,
            })
        }
        "BlockRemoved" => Ok(KvEvent::Removed {
            hashes: hashes(fields.get(1), &format!("{at}.BlockRemoved.block_hashes"))?,
        }),
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
    let Value::Array(fields) = root else {
        return Err(KvEventsError(format!(
            "batch: expected an array, got {}",
            kind(&root)
        )));
    };
    let ts = match fields.first() {
        Some(Value::Float(t)) => *t,
        Some(Value::Int(t)) => *t as f64,
        _ => return Err(KvEventsError("batch.ts: expected a number".into())),
    };
    let Some(Value::Array(events)) = fields.get(1) else {
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
