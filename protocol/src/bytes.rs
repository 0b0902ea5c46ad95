//! `Bytes`, a byte buffer that travels as one MessagePack `bin` value instead of an array of
//! numbers.
//!
//! serde sees `Vec<u8>` as a sequence, so rmp-serde would spend up to two bytes per byte of task
//! output and decode it element by element. `serialize_bytes` writes a length and the raw bytes.
//! The crate stays serde + rmp-serde only, so this replaces the `serde_bytes` crate.

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

/// Raw bytes (task output) encoded compactly; the inner vector is public.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The owned bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(value: Vec<u8>) -> Self {
        Self(value)
    }
}

impl From<&[u8]> for Bytes {
    fn from(value: &[u8]) -> Self {
        Self(value.to_vec())
    }
}

impl fmt::Debug for Bytes {
    // Output is mostly text; escaped it reads far better in logs than a list of numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Accepts `bin` (what we write) and, for peers that encoded a plain `Vec<u8>`, an array of
/// small integers.
struct BytesVisitor;

/// Upper bound on what a claimed sequence length may preallocate: a hostile length prefix
/// must not reserve memory the input does not back.
const MAX_PREALLOC: usize = 4096;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let hint = seq.size_hint().unwrap_or(0).min(MAX_PREALLOC);
        let mut out = Vec::with_capacity(hint);
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_one_bin_value() {
        let encoded = rmp_serde::to_vec_named(&Bytes(vec![1, 2, 3])).unwrap();
        // bin8 marker, length 3, the bytes.
        assert_eq!(encoded, [0xc4, 3, 1, 2, 3]);
        let decoded: Bytes = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, Bytes(vec![1, 2, 3]));
    }

    #[test]
    fn an_array_of_integers_also_decodes() {
        let encoded = rmp_serde::to_vec_named(&vec![200u8, 0, 7]).unwrap();
        let decoded: Bytes = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, Bytes(vec![200, 0, 7]));
    }

    #[test]
    fn a_huge_claimed_array_fails_without_reserving_it() {
        // array32 claiming u32::MAX elements, followed by nothing.
        let encoded = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(rmp_serde::from_slice::<Bytes>(&encoded).is_err());
    }

    #[test]
    fn debug_is_escaped_text() {
        assert_eq!(
            format!("{:?}", Bytes(b"ok\n\xff".to_vec())),
            r#"b"ok\n\xff""#
        );
    }
}
