//! Tokenization remembered piece by piece. A tokenizer splits its input at special tokens
//! first and encodes each piece between them on its own, so a rendered chat is the
//! concatenation of its pieces' ids and the special tokens' ids. Shared system prompts and the
//! history of a conversation come back request after request: their pieces are encoded once
//! and looked up after that, so only the new message costs a real encode (llm-d's indexer keeps
//! a prefix store for the same reason).

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

/// Pieces shorter than this are encoded each time (cheaper than remembering them).
const MIN_CACHED_BYTES: usize = 64;

/// Pieces remembered per generation; two generations are kept (at most twice this many).
const GENERATION: usize = 4096;

pub struct PieceCache {
    specials: AhoCorasick,
    /// Each special token's id, in the order `specials` matches them.
    ids: Vec<u32>,
    cache: Mutex<Generations>,
}

/// A bounded, roughly least-recently-used map: a lookup that hits the old generation moves the
/// entry to the current one; when the current one is full it becomes the old one.
#[derive(Default)]
struct Generations {
    current: HashMap<u64, Arc<[u32]>>,
    old: HashMap<u64, Arc<[u32]>>,
}

impl Generations {
    fn get(&mut self, key: u64) -> Option<Arc<[u32]>> {
        if let Some(ids) = self.current.get(&key) {
            return Some(ids.clone());
        }
        let ids = self.old.remove(&key)?;
        self.insert(key, ids.clone());
        Some(ids)
    }

    fn insert(&mut self, key: u64, ids: Arc<[u32]>) {
        if self.current.len() >= GENERATION {
            self.old = std::mem::take(&mut self.current);
        }
        self.current.insert(key, ids);
    }
}

impl PieceCache {
    /// None when the tokenizer's special tokens do not split input cleanly (one strips the
    /// whitespace around it, matches single words only, or is matched after normalization):
    /// then only a whole encode gives the model server's ids.
    pub fn new(tokenizer: &tokenizers::Tokenizer) -> Option<Self> {
        let mut specials = Vec::new();
        let mut ids = Vec::new();
        for (id, token) in tokenizer.get_added_tokens_decoder() {
            if !token.special {
                continue;
            }
            if token.lstrip || token.rstrip || token.single_word || token.normalized {
                return None;
            }
            specials.push(token.content);
            ids.push(id);
        }
        let specials = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&specials)
            .ok()?;
        Some(PieceCache {
            specials,
            ids,
            cache: Mutex::new(Generations::default()),
        })
    }

    /// The ids of `text` (no special tokens added around it): each special token's id, and
    /// each piece between them from `encode`, remembered when long enough.
    pub fn encode<E>(
        &self,
        text: &str,
        mut encode: impl FnMut(&str) -> Result<Vec<u32>, E>,
    ) -> Result<Vec<u32>, E> {
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut at = 0;
        for m in self.specials.find_iter(text) {
            self.piece(&text[at..m.start()], &mut out, &mut encode)?;
            out.push(self.ids[m.pattern().as_usize()]);
            at = m.end();
        }
        self.piece(&text[at..], &mut out, &mut encode)?;
        Ok(out)
    }

    fn piece<E>(
        &self,
        piece: &str,
        out: &mut Vec<u32>,
        encode: &mut impl FnMut(&str) -> Result<Vec<u32>, E>,
    ) -> Result<(), E> {
        if piece.is_empty() {
            return Ok(());
        }
        if piece.len() < MIN_CACHED_BYTES {
            out.extend(encode(piece)?);
            return Ok(());
        }
        let key = xxh3_64(piece.as_bytes());
        if let Some(ids) = self.cache.lock().get(key) {
            out.extend_from_slice(&ids);
            return Ok(());
        }
        let ids: Arc<[u32]> = encode(piece)?.into();
        out.extend_from_slice(&ids);
        self.cache.lock().insert(key, ids);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_keep_recent_entries_and_bound_the_rest() {
        let mut g = Generations::default();
        for k in 0..(GENERATION as u64 * 2 + 1) {
            g.insert(k, Arc::from(vec![k as u32]));
        }
        assert!(g.current.len() + g.old.len() <= 2 * GENERATION);
        assert!(g.get(0).is_none());
        let last = GENERATION as u64 * 2;
        assert_eq!(g.get(last).as_deref(), Some(&[last as u32][..]));
        // A hit in the old generation moves to the current one.
        let older = GENERATION as u64 + 1;
        assert!(g.old.contains_key(&older));
        assert!(g.get(older).is_some());
        assert!(g.current.contains_key(&older));
    }
}
