//! The master key and everything derived from it (spec `corestore.md` §1–§2), and the
//! `name` file's encoding (§4).

use std::fmt;

use hypercore::KeyPair;

use crate::error::Error;

/// The derive-key namespace of named cores.
pub const CORESTORE_NAMESPACE: &str = "corestore";

/// The 32-byte secret every named core's key pair is derived from. Whoever holds it can
/// write to every named core of the store.
///
/// `Debug` never prints it; the bytes are overwritten when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Wraps 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// Parses exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<MasterKey, Error> {
        <[u8; 32]>::try_from(bytes)
            .map(MasterKey)
            .map_err(|_| Error::MasterKeyLength { len: bytes.len() })
    }

    /// 32 random bytes from the operating system.
    pub fn generate() -> MasterKey {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the compiler from dropping the dead store above.
        std::hint::black_box(&mut self.0);
    }
}

/// `derive-key@1`: `BLAKE2b-256(key = master, message = len(ns) + "\n" + ns || name)`,
/// where `len(ns)` is the ASCII decimal length of the namespace.
///
/// The namespace is framed exactly as Node's `Buffer.from(ns, 'ascii')` does it: one
/// byte per UTF-16 code unit (its low 8 bits), so the result matches JS for any string
/// (namespaces in use are plain ASCII: `corestore`, `hyperdrive-daemon`).
pub fn derive_seed(master: &MasterKey, namespace: &str, name: &[u8]) -> [u8; 32] {
    let ns: Vec<u8> = namespace.encode_utf16().map(|u| u as u8).collect();
    let mut state = blake2b_simd::Params::new()
        .hash_length(32)
        .key(master.as_bytes())
        .to_state();
    state.update(ns.len().to_string().as_bytes());
    state.update(b"\n");
    state.update(&ns);
    state.update(name);
    let mut out = [0u8; 32];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

/// The key pair of the core named `name`: the Ed25519 seed key pair of
/// `derive_seed(master, "corestore", name)` (what `store.get({ name })` opens in JS).
pub fn derive_key_pair(master: &MasterKey, name: &[u8]) -> KeyPair {
    KeyPair::from_seed(&derive_seed(master, CORESTORE_NAMESPACE, name))
}

/// The `name` file's bytes: `varint(len) || name` (unsigned LEB128 length).
pub fn encode_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 10);
    out.extend_from_slice(&varint::encode(name.len() as u64));
    out.extend_from_slice(name);
    out
}

/// Reads a `name` file the way `derived-key-storage@2` does: `None` (no name) unless the
/// file holds at least 2 bytes, a valid varint length, and exactly that many bytes after it.
pub(crate) fn decode_name(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 2 {
        return None;
    }
    let (len, offset) = varint::decode_within(bytes, 9).ok()?;
    if (offset as u64).checked_add(len)? != bytes.len() as u64 {
        return None;
    }
    Some(bytes[offset..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_round_trip() {
        for len in [1usize, 5, 127, 128, 300, 20_000] {
            let name = vec![7u8; len];
            assert_eq!(decode_name(&encode_name(&name)).as_deref(), Some(&name[..]));
        }
        assert_eq!(encode_name(b"hello"), b"\x05hello");
        assert_eq!(encode_name(&[1; 128])[..2], [0x80, 0x01]);
    }

    #[test]
    fn malformed_names_are_no_names() {
        assert_eq!(decode_name(b""), None);
        // One byte: JS's size check (an empty name is never read back).
        assert_eq!(decode_name(b"\x00"), None);
        assert_eq!(decode_name(b"\x05hell"), None);
        assert_eq!(decode_name(b"\x05hello!"), None);
        assert_eq!(decode_name(&[0x80; 12]), None);
        assert_eq!(decode_name(b"\x01x").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn master_key_debug_is_redacted() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(MasterKey::from_slice(&[1; 31]).is_err());
        assert_ne!(MasterKey::generate(), MasterKey::generate());
    }

    #[test]
    fn namespace_framing_matches_node_ascii() {
        // Node's 'ascii' encoding takes the low byte of each UTF-16 code unit and
        // Buffer.byteLength(ns, 'ascii') counts code units: "é" (U+00E9) frames as "1\n\xe9".
        let master = MasterKey::from_bytes([3; 32]);
        let expected = blake2b_simd::Params::new()
            .hash_length(32)
            .key(&[3; 32])
            .hash(b"1\n\xe9name");
        assert_eq!(
            derive_seed(&master, "\u{e9}", b"name"),
            expected.as_bytes()[..]
        );
    }
}
