//! Drive paths: trie keys as JS makes them, link targets as JS stores them, and where a
//! symlink leads.

use hypertrie::normalize_path;

/// The trie key of a drive path (JS `fixName`, then mountable-hypertrie's normalization).
pub fn key_of(path: &str) -> String {
    normalize_path(&format!("/{}", normalize_path(path)))
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
