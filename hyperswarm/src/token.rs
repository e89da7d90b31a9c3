//! Roundtrip tokens: a node gives each requester a token bound to its IP, and accepts an
//! update only with a token it gave. JS mints `BLAKE2b-256(secret ‖ ASCII dotted quad)`
//! with two secrets (current and previous) rotated every 5 minutes.

use std::net::Ipv4Addr;

/// Bytes of a token and of a secret.
pub const TOKEN_LEN: usize = 32;

/// The token `secret` mints for requests from `host`.
pub fn token(secret: &[u8; TOKEN_LEN], host: Ipv4Addr) -> [u8; TOKEN_LEN] {
    let mut state = blake2b_simd::Params::new()
        .hash_length(TOKEN_LEN)
        .to_state();
    state.update(secret);
    state.update(host.to_string().as_bytes());
    let mut out = [0; TOKEN_LEN];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}
