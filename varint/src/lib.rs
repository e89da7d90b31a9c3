//! Unsigned LEB128 varints, as the JS hyperstack writes them (the `varint` package and
//! protocol buffers): seven bits a byte, least significant group first, the high bit set
//! on every byte but the last. The one varint encoder and decoder of the workspace: frame
//! headers, handshake lengths, bitfield run lengths, corestore name files and trie
//! buffers all use it.

use std::ops::Deref;

/// The most bytes a 64-bit value takes.
pub const MAX_LEN: usize = 10;

/// Why bytes do not hold a varint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends before the varint's last byte: more bytes may complete it.
    #[error("the varint runs past the end of the input")]
    Incomplete,
    /// No last byte within the first `max` bytes.
    #[error("the varint is longer than {max} bytes")]
    TooLong {
        /// The most bytes allowed.
        max: usize,
    },
    /// Ten bytes whose value does not fit in 64 bits.
    #[error("the varint's value does not fit in 64 bits")]
    Overflow,
}

/// An encoded varint: dereferences to its bytes.
#[derive(Clone, Copy)]
pub struct Encoded {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl AsRef<[u8]> for Encoded {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The bytes of `value`; append them with `extend_from_slice(&encode(v))`.
pub fn encode(mut value: u64) -> Encoded {
    let mut bytes = [0u8; MAX_LEN];
    let mut len = 0;
    while value >= 0x80 {
        bytes[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    bytes[len] = value as u8;
    Encoded {
        bytes,
        len: len as u8 + 1,
    }
}

/// How many bytes `value` takes.
pub fn encoded_len(value: u64) -> usize {
    // One byte per started group of seven bits, and one for zero.
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Decodes the varint at the front of `buf`: its value and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), Error> {
    decode_within(buf, MAX_LEN)
}

/// As [`decode`], refusing varints longer than `max` bytes (protocols that bound their
/// length fields, as JS does): [`Error::TooLong`] once `max` bytes carry no last byte,
/// [`Error::Incomplete`] while fewer than that are there.
pub fn decode_within(buf: &[u8], max: usize) -> Result<(u64, usize), Error> {
    let max = max.min(MAX_LEN);
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(max).enumerate() {
        let group = u64::from(b & 0x7f);
        if i == MAX_LEN - 1 && group > 1 {
            return Err(Error::Overflow);
        }
        value |= group << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= max {
        Err(Error::TooLong { max })
    } else {
        Err(Error::Incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        assert_eq!(&*encode(0), &[0]);
        assert_eq!(&*encode(127), &[127]);
        assert_eq!(&*encode(128), &[0x80, 1]);
        assert_eq!(&*encode(300), &[0xac, 0x02]);
        assert_eq!(encode(u64::MAX).len(), MAX_LEN);
        assert_eq!(decode(&[0xac, 0x02, 9]), Ok((300, 2)));
        assert_eq!(decode(&[0xff; 9]), Err(Error::Incomplete));
        assert_eq!(decode(&[0xff; 12]), Err(Error::Overflow));
        let mut max = vec![0xff; 9];
        max.push(1);
        assert_eq!(decode(&max), Ok((u64::MAX, 10)));
        assert_eq!(decode(&[]), Err(Error::Incomplete));
    }

    #[test]
    fn bounded_lengths() {
        assert_eq!(decode_within(&[0x80, 0x80], 3), Err(Error::Incomplete));
        assert_eq!(
            decode_within(&[0x80, 0x80, 0x80], 3),
            Err(Error::TooLong { max: 3 })
        );
        assert_eq!(decode_within(&[0x80, 0x80, 0x01], 3), Ok((1 << 14, 3)));
    }

    proptest! {
        #[test]
        fn round_trip(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let encoded = encode(value);
            prop_assert_eq!(encoded.len(), encoded_len(value));
            let mut buf = encoded.to_vec();
            buf.extend_from_slice(&tail);
            prop_assert_eq!(decode(&buf), Ok((value, encoded.len())));
            // Every proper prefix asks for more.
            for cut in 0..encoded.len() {
                prop_assert_eq!(decode(&buf[..cut]), Err(Error::Incomplete));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..12) {
            let _ = decode_within(&bytes, max);
        }
    }
}
