//! Drive paths: trie keys as JS makes them, link targets as JS stores them, and where a
//! symlink leads.

use hypertrie::normalize_path;

/// The trie key of a drive path (JS `fixName`, then mountable-hypertrie's normalization).
pub fn key_of(path: &str) -> String {
    let key = normalize_path(path);
    if !key.starts_with('/') && !key.ends_with('/') && hypertrie::is_normal_path(&key) {
        // What normalizing `/{key}` again gives.
        return key;
    }
    normalize_path(&format!("/{key}"))
}

/// A path unixified as JS stores link targets: separators collapsed, no leading `/` lost.
pub(crate) fn unixify(path: &str) -> String {
    let key = normalize_path(path);
    if path.starts_with(['/', '\\']) {
        format!("/{key}")
    } else {
        key
    }
}

/// Where the symlink at `link` (absolute) pointing to `target` leads, as an absolute path.
pub(crate) fn resolve_link(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        link.rsplit_once('/')
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default()
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Longest path a write accepts (Linux `PATH_MAX`).
const MAX_PATH: usize = 4096;
/// Longest name a write accepts (Linux `NAME_MAX`).
const MAX_NAME: usize = 255;

/// The trie key of `path`, refusing what no filesystem could hold or would read back as
/// written: NUL bytes, `.` and `..` names (JS keeps them, and readers resolve them to
/// other paths), names over 255 bytes, paths over 4096. What every write checks, and
/// what a caller can check before any other operation (the root is fine).
pub fn check_path(path: &str) -> Result<String, crate::Error> {
    let key = key_of(path);
    let reason = if path.len() > MAX_PATH {
        "longer than 4096 bytes"
    } else if path.contains('\0') {
        "contains a NUL byte"
    } else if key.split('/').any(|c| c == "." || c == "..") {
        "has a . or .. component"
    } else if key.split('/').any(|c| c.len() > MAX_NAME) {
        "has a name longer than 255 bytes"
    } else {
        return Ok(key);
    };
    Err(crate::Error::InvalidPath {
        path: path.to_string(),
        reason,
    })
}

/// The trie key `path` is written at: [`check_path`], and not the root.
pub(crate) fn write_key(path: &str) -> Result<String, crate::Error> {
    let key = check_path(path)?;
    if key.is_empty() {
        return Err(crate::Error::InvalidPath {
            path: path.to_string(),
            reason: "is the root directory",
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn keys_are_paths_normalized_twice(path in "[aC:/\\\\.é]{0,8}") {
            proptest::prop_assert_eq!(
                key_of(&path),
                normalize_path(&format!("/{}", normalize_path(&path)))
            );
        }
    }

    #[test]
    fn writes_refuse_paths_that_would_not_read_back() {
        assert_eq!(write_key("/a/b.txt").ok().as_deref(), Some("a/b.txt"));
        assert_eq!(write_key("\\x\\\\y/").ok().as_deref(), Some("x/y"));
        let long_name = format!("/{}", "n".repeat(256));
        let long_path = "/d".repeat(2049);
        for bad in ["/", "", "/a/../b", "./.", "/a\0b", &long_name, &long_path] {
            assert!(write_key(bad).is_err(), "{bad:?}");
        }
        // Any operation may name the root.
        assert_eq!(check_path("/").ok().as_deref(), Some(""));
        assert!(check_path("/a/../b").is_err());
    }
}
