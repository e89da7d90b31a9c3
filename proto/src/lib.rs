//! The gRPC API of hyperd, generated from the `.proto` files next to this crate
//! (`hyperd/v1/*.proto`, package `hyperd.v1`): one service per domain — `Daemon`,
//! `Cores`, `Peers` — with tonic clients and servers.

/// Package `hyperd.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("hyperd.v1");
}

/// The API package served, as reported by `Daemon.Status`.
pub const API_VERSION: &str = "hyperd.v1";

/// Parses a core key as the API takes it: 64 hex characters (either case), optionally
/// after `hyper://` (either case) and before one trailing `/`, surrounding whitespace
/// ignored. `None` if it is not one.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    let trimmed = text.trim();
    let hex = match trimmed.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("hyper://") => &trimmed[8..],
        _ => trimmed,
    };
    let hex = hex.strip_suffix('/').unwrap_or(hex);
    let mut key = [0u8; 32];
    (hex.len() == 64 && hex::decode_to_slice(hex, &mut key).is_ok()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    const HEX: &str = "0d79a0899bf83ba6c3f906a41e46c1911ba10e578d719c1b2779db80d0b3b9bc";

    #[test]
    fn keys_in_every_accepted_spelling() {
        let key = parse_key(HEX).expect("bare hex");
        for text in [
            format!("hyper://{HEX}"),
            format!("hyper://{HEX}/"),
            format!("HYPER://{}", HEX.to_uppercase()),
            format!("  {HEX}\n"),
        ] {
            assert_eq!(parse_key(&text), Some(key), "{text:?}");
        }
        for bad in [
            "",
            "xyz",
            "hyper://abc",
            &HEX[1..],
            &format!("{HEX}0"),
            &format!("hyper://{HEX}//"),
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }
}
