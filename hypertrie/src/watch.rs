//! Watching a prefix (spec trie.md §6.8): after every append, local or replicated, the
//! newest node under the prefix is looked up; a newer one than last seen is a change.

use futures::Stream;

use crate::{Error, GetOptions, Hypertrie, Node};

impl Hypertrie {
    /// A stream of the changes under `prefix` from now on: each item is the newest node
    /// under it after a change (a put or a delete's rewrite). It follows the latest
    /// version, also from a checkout, and keeps asking peers for a longer feed while it is
    /// polled (JS's `update` loop for sparse feeds). It ends after an error (the feed was
    /// closed, a block did not decode). As in JS, a delete that removes the last key under
    /// the prefix is not seen.
    pub fn watch(&self, prefix: &str, hidden: bool) -> impl Stream<Item = Result<Node, Error>> {
        let latest = Hypertrie {
            version: None,
            ..self.clone()
        };
        let options = GetOptions {
            hidden,
            prefix: true,
            closest: false,
        };
        let state = (latest, prefix.to_string(), None::<u64>, false);
        futures::stream::unfold(state, move |(trie, prefix, mut last, failed)| async move {
            if failed {
                return None;
            }
            loop {
                // The length before looking: an append while we look ends the wait below.
                let looked_at = trie.feed.len();
                match trie.get(&prefix, options).await {
                    Ok(node) => {
                        let seq = node.as_ref().map_or(0, |n| n.seq);
                        match (last, node) {
                            // The first look only says where we start from.
                            (None, _) => last = Some(seq),
                            (Some(seen), Some(node)) if seq > seen => {
                                last = Some(seq);
                                return Some((Ok(node), (trie, prefix, last, false)));
                            }
                            _ => {}
                        }
                    }
                    Err(e) => return Some((Err(e), (trie, prefix, last, true))),
                }
                if let Err(source) = trie.feed.update(Some(looked_at + 1), None).await {
                    let error = trie.feed_error(source);
                    return Some((Err(error), (trie, prefix, last, true)));
                }
            }
        })
    }
}
