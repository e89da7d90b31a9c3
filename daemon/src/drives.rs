//! What the daemon does with drives. So far: where an operation works, a
//! [`DriveLocation`], as every front end gives it (a `hyper://` URL, fields, or both).

use hypercore::PublicKey;
use hyperd_proto::DriveUrl;

use crate::error::{shorten, DaemonError, Result};

/// A drive, a version of it (a read-only checkout) and a path in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveLocation {
    /// The drive's key (its metadata core's).
    pub key: PublicKey,
    /// A version to check out; `None`: the latest.
    pub version: Option<u64>,
    /// An absolute path in the drive.
    pub path: String,
}

impl DriveLocation {
    /// The location a front end was given: a URL `hyper://KEY[+VERSION][/path]`, the key,
    /// version and path as fields, or both when they agree (an empty field takes the
    /// URL's). A path without its leading `/` gets one; an empty one is the root.
    pub fn from_parts(
        url: &str,
        key: &str,
        version: Option<u64>,
        path: &str,
    ) -> Result<DriveLocation> {
        let from_url = match url.trim() {
            "" => None,
            text => Some(DriveUrl::parse(text).map_err(|e| DaemonError::invalid(e.to_string()))?),
        };
        let key = match key.trim() {
            "" => None,
            text => Some(PublicKey(hyperd_proto::parse_key(text).ok_or_else(
                || {
                    DaemonError::invalid(format!(
                        "drive key {:?} is not 64 hex characters",
                        shorten(text)
                    ))
                },
            )?)),
        };
        let path = (!path.is_empty()).then(|| absolute(path));
        let Some(url) = from_url else {
            let key = key.ok_or_else(|| {
                DaemonError::invalid("no drive given: a hyper:// URL or a key is needed")
            })?;
            return Ok(DriveLocation {
                key,
                version,
                path: path.unwrap_or_else(|| "/".to_string()),
            });
        };
        let disagree = |what: &str, field: String, in_url: String| {
            DaemonError::invalid(format!(
                "the {what} {field} disagrees with the URL's {in_url} ({})",
                shorten(url.to_string().as_str())
            ))
        };
        let url_key = PublicKey(url.key);
        if let Some(key) = key.filter(|k| *k != url_key) {
            return Err(disagree("key", key.to_string(), url_key.to_string()));
        }
        let version = match (version, url.version) {
            (Some(field), Some(in_url)) if field != in_url => {
                return Err(disagree("version", field.to_string(), in_url.to_string()))
            }
            (field, in_url) => field.or(in_url),
        };
        let path = match path {
            Some(field) if url.path != "/" && field != url.path => {
                return Err(disagree(
                    "path",
                    format!("{:?}", shorten(&field)),
                    format!("{:?}", shorten(&url.path)),
                ))
            }
            Some(field) => field,
            None => url.path,
        };
        Ok(DriveLocation {
            key: url_key,
            version,
            path,
        })
    }
}

impl std::fmt::Display for DriveLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = DriveUrl {
            key: self.key.0,
            version: self.version,
            path: self.path.clone(),
        };
        write!(f, "{url}")
    }
}

/// `path` with a leading `/`.
fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const HEX: &str = "0d79a0899bf83ba6c3f906a41e46c1911ba10e578d719c1b2779db80d0b3b9bc";
    const OTHER: &str = "1d79a0899bf83ba6c3f906a41e46c1911ba10e578d719c1b2779db80d0b3b9bc";

    fn at(version: Option<u64>, path: &str) -> DriveLocation {
        DriveLocation {
            key: PublicKey(hyperd_proto::parse_key(HEX).unwrap()),
            version,
            path: path.to_string(),
        }
    }

    #[test]
    fn a_location_comes_from_a_url_from_fields_or_from_both_when_they_agree() {
        let url = format!("hyper://{HEX}+3/docs/a.txt");
        for (url, key, version, path, expected) in [
            (url.as_str(), "", None, "", at(Some(3), "/docs/a.txt")),
            (
                url.as_str(),
                HEX,
                Some(3),
                "/docs/a.txt",
                at(Some(3), "/docs/a.txt"),
            ),
            ("", HEX, None, "", at(None, "/")),
            ("", HEX, Some(7), "docs", at(Some(7), "/docs")),
            // A URL without a path takes the field's; one without a version the field's.
            (
                &format!("hyper://{HEX}"),
                "",
                Some(2),
                "/x",
                at(Some(2), "/x"),
            ),
        ] {
            let got = DriveLocation::from_parts(url, key, version, path).unwrap();
            assert_eq!(got, expected, "{url:?} {key:?} {version:?} {path:?}");
            // Shown as a URL, it reads back the same.
            let again = DriveLocation::from_parts(&got.to_string(), "", None, "").unwrap();
            assert_eq!(again, got);
        }
    }

    #[test]
    fn bad_or_disagreeing_parts_are_invalid_arguments_naming_them() {
        let url = format!("hyper://{HEX}+3/docs");
        for (url, key, version, path, names) in [
            ("", "", None, "/x", "no drive given"),
            ("hyper://nope", "", None, "", "nope"),
            ("", "abc", None, "", "\"abc\""),
            (url.as_str(), OTHER, None, "", OTHER),
            (url.as_str(), "", Some(4), "", "version 4"),
            (url.as_str(), "", None, "/other", "\"/other\""),
        ] {
            let err = DriveLocation::from_parts(url, key, version, path).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
            assert!(err.message.contains(names), "{err}");
        }
    }
}
