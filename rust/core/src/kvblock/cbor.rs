//! The few CBOR items block hashing encodes, in the canonical form (RFC 8949 §4.2: shortest
//! argument, definite lengths) that Python's `cbor2.dumps(canonical=True)` and Go's
//! `fxamacker/cbor` canonical mode both produce — so the bytes, and therefore the hashes, agree.

const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const NULL: u8 = 0xf6;

/// Appends CBOR items to a reusable buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            self.buf.push(m | n as u8);
        } else if n <= 0xff {
            self.buf.extend_from_slice(&[m | 24, n as u8]);
        } else if n <= 0xffff {
            self.buf.push(m | 25);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            self.buf.push(m | 26);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            self.buf.push(m | 27);
            self.buf.extend_from_slice(&n.to_be_bytes());
        }
    }

    pub fn uint(&mut self, n: u64) {
        self.head(UINT, n);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.head(BYTES, b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn text(&mut self, s: &str) {
        self.head(TEXT, s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// The header of an array of `len` items; the caller writes the items.
    pub fn array(&mut self, len: usize) {
        self.head(ARRAY, len as u64);
    }

    /// The header of a map of `len` pairs; the caller writes keys in canonical order.
    pub fn map(&mut self, len: usize) {
        self.head(MAP, len as u64);
    }

    pub fn null(&mut self) {
        self.buf.push(NULL);
    }

    pub fn uints(&mut self, items: &[u32]) {
        self.array(items.len());
        for &t in items {
            self.uint(u64::from(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        f(&mut w);
        w.buf
    }

    #[test]
    fn integers_take_the_shortest_form() {
        // RFC 8949 appendix A examples.
        assert_eq!(enc(|w| w.uint(0)), [0x00]);
        assert_eq!(enc(|w| w.uint(23)), [0x17]);
        assert_eq!(enc(|w| w.uint(24)), [0x18, 0x18]);
        assert_eq!(enc(|w| w.uint(1000)), [0x19, 0x03, 0xe8]);
        assert_eq!(enc(|w| w.uint(1_000_000)), [0x1a, 0x00, 0x0f, 0x42, 0x40]);
        assert_eq!(
            enc(|w| w.uint(1_000_000_000_000)),
            [0x1b, 0x00, 0x00, 0x00, 0xe8, 0xd4, 0xa5, 0x10, 0x00]
        );
    }

    #[test]
    fn strings_arrays_and_null() {
        assert_eq!(enc(|w| w.text("IETF")), [0x64, 0x49, 0x45, 0x54, 0x46]);
        assert_eq!(enc(|w| w.bytes(&[1, 2, 3, 4])), [0x44, 1, 2, 3, 4]);
        assert_eq!(enc(|w| w.uints(&[1, 2, 3])), [0x83, 1, 2, 3]);
        assert_eq!(enc(|w| w.null()), [0xf6]);
        assert_eq!(enc(|w| w.map(1)), [0xa1]);
    }
}
