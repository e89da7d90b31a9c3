//! Core keys as users type them: 64 hex characters, or `hyper://<64 hex>` (a trailing
//! `/` is ignored). Parsed here, before anything is sent, so a typo is reported without
//! a daemon.

use std::fmt;

/// A core's public key: 32 bytes, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// Parses `hyper://<key>` or a bare key; hex may be upper or lower case.
    pub fn parse(text: &str) -> anyhow::Result<Key> {
        hyperd_proto::parse_key(text).map(Key).ok_or_else(|| {
            anyhow::anyhow!("invalid key '{text}': expected 64 hex characters or hyper://<key>")
        })
    }

    /// The 64 lowercase hex characters the API expects.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `hyper://<key>`.
    pub fn url(&self) -> String {
        format!("hyper://{}", self.hex())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_bare_hex_and_hyper_urls() {
        let bare = Key::parse(HEX).unwrap();
        assert_eq!(bare.hex(), HEX);
        assert_eq!(Key::parse(&format!("hyper://{HEX}")).unwrap(), bare);
        assert_eq!(Key::parse(&format!("hyper://{HEX}/")).unwrap(), bare);
        assert_eq!(
            Key::parse(&format!("HYPER://{}", HEX.to_uppercase())).unwrap(),
            bare
        );
        assert_eq!(Key::parse(&format!("  {HEX}\n")).unwrap(), bare);
        assert_eq!(bare.url(), format!("hyper://{HEX}"));
    }

    #[test]
    fn rejects_everything_else_with_one_message() {
        for bad in [
            "",
            "hyper://",
            &HEX[..63],
            &format!("{HEX}0"),
            &format!("{}g", &HEX[..63]),
            &format!("dat://{HEX}"),
            &format!("hyper://{HEX}//"),
            "hyper://é",
            "ééééé",
        ] {
            let err = Key::parse(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid key '{bad}': expected 64 hex characters or hyper://<key>")
            );
        }
    }
}
