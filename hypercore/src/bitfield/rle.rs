//! Run-length encoding of a raw bitfield, as `bitfield-rle@2.2.1` does it (used in `Have`
//! messages). See `spec/wire.md` section 7.

/// Error from decoding a malformed RLE bitfield.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RleError {
    /// A varint ran past the end or past 64 bits.
    #[error("invalid RLE bitfield: bad varint at byte {0}")]
    BadVarint(usize),
    /// A literal chunk claims more bytes than remain.
    #[error("invalid RLE bitfield: literal of {len} bytes at byte {at} runs past the end")]
    Truncated {
        /// Offset of the chunk.
        at: usize,
        /// Claimed literal length.
        len: u64,
    },
    /// The decoded bitfield would exceed the caller's limit.
    #[error("invalid RLE bitfield: decodes to more than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

/// Encodes a raw bitfield (trailing zero bytes are dropped). Byte-identical to the JS
/// encoder: a run is only emitted where it is strictly shorter than a literal.
pub fn encode(bitfield: &[u8]) -> Vec<u8> {
    let mut input_len = bitfield.len();
    while input_len > 0 && bitfield[input_len - 1] == 0 {
        input_len -= 1;
    }
    let input = &bitfield[..input_len];
    let mut out = Vec::new();
    let mut input_offset = 0usize;
    let mut len = 0usize;
    let mut bits = 0u8;

    for (i, &b) in input.iter().enumerate() {
        if b == bits {
            len += 1;
            continue;
        }
        if len > 0 {
            update(&mut out, input, &mut input_offset, i, len, bits);
        }
        if b == 0 || b == 255 {
            bits = b;
            len = 1;
        } else {
            len = 0;
        }
    }
    if len > 0 {
        update(&mut out, input, &mut input_offset, input_len, len, bits);
    }
    if input_offset < input_len {
        head(&mut out, input, input_offset, input_len);
    }
    out
}

fn head(out: &mut Vec<u8>, input: &[u8], from: usize, to: usize) {
    out.extend_from_slice(&varint::encode(2 * (to - from) as u64));
    out.extend_from_slice(&input[from..to]);
}

fn update(
    out: &mut Vec<u8>,
    input: &[u8],
    input_offset: &mut usize,
    i: usize,
    len: usize,
    bits: u8,
) {
    let head_len = i - len - *input_offset;
    let head_cost = if head_len > 0 {
        varint::encoded_len(2 * head_len as u64) + head_len
    } else {
        0
    };
    let enc = 4 * len as u64 + if bits != 0 { 2 } else { 0 } + 1;
    let enc_cost = head_cost + varint::encoded_len(enc);
    let base_cost = varint::encoded_len(2 * (i - *input_offset) as u64) + i - *input_offset;
    if enc_cost >= base_cost {
        return;
    }
    if head_len > 0 {
        head(out, input, *input_offset, i - len);
    }
    out.extend_from_slice(&varint::encode(enc));
    *input_offset = i;
}

/// Decodes an RLE bitfield into raw bytes, refusing anything that would exceed `max_len`
/// bytes (a peer controls this input). The result is not padded.
pub fn decode(buf: &[u8], max_len: usize) -> Result<Vec<u8>, RleError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let (next, n) = varint::decode(&buf[pos..]).map_err(|_| RleError::BadVarint(at))?;
        pos += n;
        let len = if next & 1 == 1 { next >> 2 } else { next >> 1 };
        if out.len() as u64 + len > max_len as u64 {
            return Err(RleError::TooLarge { max: max_len });
        }
        let len = len as usize;
        if next & 1 == 1 {
            let fill = if next & 2 != 0 { 255 } else { 0 };
            out.resize(out.len() + len, fill);
        } else {
            let chunk = buf.get(pos..pos + len).ok_or(RleError::Truncated {
                at,
                len: len as u64,
            })?;
            out.extend_from_slice(chunk);
            pos += len;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..300)) {
            let enc = encode(&raw);
            let dec = decode(&enc, 1 << 20).unwrap();
            let mut trimmed = raw.clone();
            while trimmed.last() == Some(&0) { trimmed.pop(); }
            prop_assert_eq!(&dec[..trimmed.len()], &trimmed[..]);
            prop_assert!(dec[trimmed.len()..].iter().all(|&b| b == 0));
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&buf, 4096);
        }
    }

    #[test]
    fn refuses_memory_bombs() {
        // A single run chunk claiming 2^60 bytes of 0xff.
        let bomb = varint::encode((1u64 << 62) | 3).to_vec();
        assert_eq!(
            decode(&bomb, 1 << 20),
            Err(RleError::TooLarge { max: 1 << 20 })
        );
    }
}
