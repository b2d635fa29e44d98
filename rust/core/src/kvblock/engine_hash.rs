//! vLLM's own block hashes (`--prefix-caching-hash-algo sha256_cbor`): block i hashes to
//! sha256(cbor([parent, token_ids, extra_keys])), the parent of block 0 being NONE_HASH =
//! sha256(cbor(PYTHONHASHSEED)); extra keys are the LoRA adapter's name on every block and the
//! cache salt on block 0 (None when there are none). KV events carry the last 8 bytes of each
//! hash as a big-endian integer (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, the default).
//! Used to check that an engine hashes as configured, and by tests that compare against it.

use sha2::{Digest, Sha256};

use super::cbor::Writer;

pub type EngineHash = [u8; 32];

/// The hashes an engine with this seed and block size gives a prompt's full blocks.
pub struct EngineHasher {
    none_hash: EngineHash,
    block_size: usize,
}

fn sha256(bytes: &[u8]) -> EngineHash {
    Sha256::digest(bytes).into()
}

/// The integer form of a block hash that KV events carry.
pub fn external(hash: &EngineHash) -> u64 {
    u64::from_be_bytes(hash[24..].try_into().expect("8 bytes"))
}

impl EngineHasher {
    /// `seed`: the engine's PYTHONHASHSEED (without one vLLM draws a random root per process,
    /// and no one else can reproduce its hashes).
    pub fn new(seed: &str, block_size: usize) -> Self {
        let mut w = Writer::default();
        w.text(seed);
        EngineHasher {
            none_hash: sha256(&w.buf),
            block_size: block_size.max(1),
        }
    }

    /// Chained hashes of the full blocks of `tokens`, continuing from `parent` (None: the
    /// prompt's start, where the salt applies).
    pub fn hashes(
        &self,
        parent: Option<&EngineHash>,
        tokens: &[u32],
        lora: Option<&str>,
        salt: Option<&str>,
    ) -> Vec<EngineHash> {
        let mut w = Writer::default();
        let mut prev = *parent.unwrap_or(&self.none_hash);
        let at_start = parent.is_none();
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        for (i, block) in tokens.chunks_exact(self.block_size).enumerate() {
            let salt = salt.filter(|s| at_start && i == 0 && !s.is_empty());
            w.clear();
            w.array(3);
            w.bytes(&prev);
            w.uints(block);
            let extra = usize::from(lora.is_some()) + usize::from(salt.is_some());
            if extra == 0 {
                w.null();
            } else {
                w.array(extra);
                for key in lora.into_iter().chain(salt) {
                    w.text(key);
                }
            }
            prev = sha256(&w.buf);
            out.push(prev);
        }
        out
    }

    /// `hashes` in the integer form events carry.
    pub fn external_hashes(
        &self,
        tokens: &[u32],
        lora: Option<&str>,
        salt: Option<&str>,
    ) -> Vec<u64> {
        self.hashes(None, tokens, lora, salt)
            .iter()
            .map(external)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &EngineHash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn none_hash_is_sha256_of_the_cbor_seed() {
        // cbor("42") = 0x62 '4' '2'; sha256 of those three bytes.
        let h = EngineHasher::new("42", 16);
        assert_eq!(hex(&h.none_hash), hex(&sha256(&[0x62, b'4', b'2'])));
    }

    #[test]
    fn only_full_blocks_hash_and_they_chain() {
        let h = EngineHasher::new("0", 4);
        let a = h.hashes(None, &[1, 2, 3, 4, 5, 6, 7, 8, 9], None, None);
        assert_eq!(a.len(), 2);
        let b = h.hashes(None, &[1, 2, 3, 4, 5, 6, 7, 0], None, None);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_eq!(h.hashes(Some(&a[0]), &[5, 6, 7, 8], None, None)[0], a[1]);
    }

    #[test]
    fn lora_seed_and_salt_change_the_hashes() {
        let h = EngineHasher::new("0", 2);
        let t = [1, 2, 3, 4];
        let base = h.hashes(None, &t, None, None);
        assert_ne!(base, h.hashes(None, &t, Some("a"), None));
        assert_ne!(base, EngineHasher::new("1", 2).hashes(None, &t, None, None));
        let salted = h.hashes(None, &t, None, Some("s"));
        assert_ne!(base[0], salted[0]);
        // The salt is a block-0 key only; an empty salt is none (vLLM tests truthiness).
        assert_eq!(
            h.hashes(Some(&salted[0]), &[3, 4], None, None)[0],
            salted[1]
        );
        assert_eq!(base, h.hashes(None, &t, None, Some("")));
    }

    #[test]
    fn external_form_is_the_last_eight_bytes_big_endian() {
        let mut h = [0u8; 32];
        h[24..].copy_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(external(&h), 0x0102);
    }
}
