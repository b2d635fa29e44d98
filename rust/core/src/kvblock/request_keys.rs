//! The EPP's own block keys, as llm-d's indexer computes them (`hashAlgorithm: cbor-fnv`):
//! key_i = FNV-64a(cbor([key_{i-1}, token_ids, extras])), the chain rooted at
//! FNV-64a(cbor([FNV-64a(hashSeed), null, model])), extras null or a list of `{"Hash": s}` maps
//! (multimodal identifiers, the cache salt on block 0). Both the lookup path (prompt tokens)
//! and the event path (an event's `token_ids`) derive keys this way, so they meet whatever hash
//! the engine itself uses; the engine's hashes only name blocks for removal and chaining.

use super::cbor::Writer;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv64a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

pub struct RequestKeys {
    seed: u64,
    block_size: usize,
}

impl RequestKeys {
    pub fn new(hash_seed: &str, block_size: usize) -> Self {
        RequestKeys {
            seed: fnv64a(hash_seed.as_bytes()),
            block_size: block_size.max(1),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The chain's root for a model (a LoRA adapter's name for its requests).
    pub fn root(&self, model: &str) -> u64 {
        let mut w = Writer::default();
        w.array(3);
        w.uint(self.seed);
        w.null();
        w.text(model);
        fnv64a(&w.buf)
    }

    /// Keys of the full blocks of `tokens`, chained from `parent` (None: the model's root).
    /// `extras(i)` lists block i's extra strings (empty: none).
    pub fn keys<'e>(
        &self,
        parent: Option<u64>,
        tokens: &[u32],
        model: &str,
        extras: impl Fn(usize) -> &'e [String],
    ) -> Vec<u64> {
        let mut prev = parent.unwrap_or_else(|| self.root(model));
        let mut w = Writer::default();
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        for (i, block) in tokens.chunks_exact(self.block_size).enumerate() {
            w.clear();
            w.array(3);
            w.uint(prev);
            w.uints(block);
            let extra = extras(i);
            if extra.is_empty() {
                w.null();
            } else {
                w.array(extra.len());
                for s in extra {
                    w.map(1);
                    w.text("Hash");
                    w.text(s);
                }
            }
            prev = fnv64a(&w.buf);
            out.push(prev);
        }
        out
    }

    /// Keys of a prompt: the salt, when there is one, is block 0's only extra.
    pub fn prompt_keys(&self, tokens: &[u32], model: &str, salt: Option<&str>) -> Vec<u64> {
        let salt: Vec<String> = salt
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect();
        self.keys(
            None,
            tokens,
            model,
            |i| if i == 0 { &salt[..] } else { &[] },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv64a_matches_the_reference_values() {
        // From the FNV reference test suite.
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_chain_per_model_and_continue_from_a_parent() {
        let k = RequestKeys::new("", 2);
        let a = k.prompt_keys(&[1, 2, 3, 4, 5], "m", None);
        assert_eq!(a.len(), 2);
        assert_eq!(k.keys(Some(a[0]), &[3, 4], "ignored", |_| &[]), a[1..]);
        assert_ne!(a, k.prompt_keys(&[1, 2, 3, 4], "lora-a", None));
        assert_ne!(
            a,
            RequestKeys::new("7", 2).prompt_keys(&[1, 2, 3, 4], "m", None)
        );
        let salted = k.prompt_keys(&[1, 2, 3, 4], "m", Some("s"));
        assert_ne!(salted[0], a[0]);
        assert_eq!(k.keys(Some(salted[0]), &[3, 4], "m", |_| &[])[0], salted[1]);
    }
}
