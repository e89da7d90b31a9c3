//! The gRPC API of hyperd, generated from the `.proto` files next to this crate
//! (`hyperd/v1/*.proto`, package `hyperd.v1`): one service per domain — `Daemon`,
//! `Cores`, `Peers`, `Drives` — with tonic clients and servers, and the parsing of the keys
//! and drive URLs the API takes.

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

/// A drive, a version and a path as one URL, `hyper://KEY[+VERSION][/path]` (the scheme
/// may be left out): what `Location.url` and `hyperctl drive` take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveUrl {
    /// The drive's key.
    pub key: [u8; 32],
    /// A version to check out; `None`: the latest.
    pub version: Option<u64>,
    /// The path in the drive, as given after the key (`/` when none): not percent-decoded.
    pub path: String,
}

/// Text that is not a [`DriveUrl`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a drive URL (hyper://KEY[+VERSION]/path): {reason}")]
pub struct BadDriveUrl {
    /// The text (its first 100 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl DriveUrl {
    /// Parses `text` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<DriveUrl, BadDriveUrl> {
        let bad = |reason| BadDriveUrl {
            input: text.chars().take(100).collect(),
            reason,
        };
        let trimmed = text.trim();
        let rest = match trimmed.get(..8) {
            Some(scheme) if scheme.eq_ignore_ascii_case("hyper://") => &trimmed[8..],
            _ if trimmed.contains("://") => return Err(bad("the scheme is not hyper://")),
            _ => trimmed,
        };
        let hex = rest
            .get(..64)
            .ok_or(bad("the key is not 64 hex characters"))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex, &mut key).map_err(|_| bad("the key is not 64 hex characters"))?;
        let rest = &rest[64..];
        let (version, rest) = match rest.strip_prefix('+') {
            Some(after) => {
                let digits = after.find('/').map_or(after, |end| &after[..end]);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the version after '+' is not a number"));
                }
                let version = digits
                    .parse()
                    .map_err(|_| bad("the version is too large"))?;
                (Some(version), &after[digits.len()..])
            }
            None => (None, rest),
        };
        let path = match rest {
            "" => "/".to_string(),
            path if path.starts_with('/') => path.to_string(),
            _ => return Err(bad("the key is not 64 hex characters")),
        };
        Ok(DriveUrl { key, version, path })
    }
}

impl std::fmt::Display for DriveUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hyper://{}", hex::encode(self.key))?;
        if let Some(version) = self.version {
            write!(f, "+{version}")?;
        }
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_key, DriveUrl};

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

    #[test]
    fn drive_urls_with_versions_and_paths() {
        let key = parse_key(HEX).unwrap();
        let url = |version, path: &str| DriveUrl {
            key,
            version,
            path: path.to_string(),
        };
        for (text, expected) in [
            (format!("hyper://{HEX}"), url(None, "/")),
            (format!("hyper://{HEX}/"), url(None, "/")),
            (
                format!("HYPER://{HEX}+12/docs/a b.txt"),
                url(Some(12), "/docs/a b.txt"),
            ),
            (format!("{HEX}+0"), url(Some(0), "/")),
            (format!(" {HEX}/d/ \n"), url(None, "/d/")),
            (format!("hyper://{HEX}/%20"), url(None, "/%20")),
        ] {
            assert_eq!(DriveUrl::parse(&text), Ok(expected.clone()), "{text:?}");
            // Printed and parsed again, it is the same.
            assert_eq!(DriveUrl::parse(&expected.to_string()), Ok(expected));
        }
        for (bad, reason) in [
            ("".to_string(), "64 hex"),
            (format!("http://{HEX}"), "scheme"),
            (format!("hyper://{}", &HEX[1..]), "64 hex"),
            (format!("hyper://{HEX}0/x"), "64 hex"),
            (format!("hyper://{HEX}+/x"), "not a number"),
            (format!("hyper://{HEX}+-1"), "not a number"),
            (format!("hyper://{HEX}+1x/y"), "not a number"),
            (
                format!("hyper://{HEX}+99999999999999999999999"),
                "too large",
            ),
        ] {
            let err = DriveUrl::parse(&bad).unwrap_err();
            assert!(err.to_string().contains(reason), "{bad:?}: {err}");
        }
    }
}
