//! Extension names and ids (`abstract-extension`): each side advertises its sorted list of
//! names in an `Options` message; an extension message's id indexes the *sender's* list,
//! and the receiver looks the name up there and hands the payload to its own handler of
//! that name (names it does not know are ignored).

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

/// How many unread messages an extension handler may have before new ones are dropped.
const BACKLOG: usize = 256;

/// Local and remote extension names of one channel (or of a whole connection).
#[derive(Debug, Default)]
pub struct Extensions {
    local: Vec<String>,
    remote: Vec<String>,
    handlers: HashMap<String, mpsc::Sender<Bytes>>,
    /// The local names changed since the remote was last told.
    unannounced: bool,
}

impl Extensions {
    /// Registers `name`; its messages arrive on the returned receiver. `None` if already
    /// registered.
    pub fn register(&mut self, name: &str) -> Option<mpsc::Receiver<Bytes>> {
        if self.handlers.contains_key(name) {
            return None;
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        self.handlers.insert(name.to_string(), tx);
        let at = self
            .local
            .binary_search_by(|n| n.as_str().cmp(name))
            .unwrap_or_else(|i| i);
        self.local.insert(at, name.to_string());
        self.unannounced = true;
        Some(rx)
    }

    /// If our names changed since the last call, the list to announce now.
    pub fn take_announcement(&mut self) -> Option<Vec<String>> {
        std::mem::take(&mut self.unannounced).then(|| self.local.clone())
    }

    /// The id to send a message of `name` with.
    pub fn id_of(&self, name: &str) -> Option<u64> {
        self.local.iter().position(|n| n == name).map(|i| i as u64)
    }

    /// The remote announced its names.
    pub fn set_remote(&mut self, names: Vec<String>) {
        self.remote = names;
    }

    /// Delivers a message the remote sent with `id`; returns the extension name if a local
    /// handler took it.
    pub fn deliver(&self, id: u64, payload: Bytes) -> Option<&str> {
        let name = self.remote.get(usize::try_from(id).ok()?)?;
        let handler = self.handlers.get(name)?;
        if handler.try_send(payload).is_err() {
            tracing::debug!(
                extension = name.as_str(),
                "extension handler is not keeping up; message dropped"
            );
            return None;
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_index_the_senders_sorted_names() {
        let mut a = Extensions::default();
        let mut b = Extensions::default();
        let _za = a.register("zeta").unwrap();
        let _aa = a.register("alpha").unwrap();
        assert!(a.register("alpha").is_none());
        let announced = a.take_announcement().unwrap();
        assert_eq!(announced, ["alpha", "zeta"]);
        assert!(a.take_announcement().is_none());
        let mut zb = b.register("zeta").unwrap();
        b.set_remote(announced);
        assert_eq!(
            b.deliver(a.id_of("zeta").unwrap(), Bytes::from_static(b"hi")),
            Some("zeta")
        );
        assert_eq!(&zb.try_recv().unwrap()[..], b"hi");
        // alpha is not registered on b: ignored.
        assert_eq!(b.deliver(a.id_of("alpha").unwrap(), Bytes::new()), None);
        assert_eq!(b.deliver(99, Bytes::new()), None);
    }
}
