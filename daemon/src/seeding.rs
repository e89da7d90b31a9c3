//! Which cores and drives the swarm announces and looks up: the domain operations behind
//! `seed`, `unseed`, `swarm join` and `swarm leave`, and the defaults that creating and
//! following apply (what we serve is announced and looked up; what we follow is looked
//! up). Every change is persisted before it takes effect, so a restart joins the same.

use hypercore::PublicKey;

use crate::daemon::Daemon;
use crate::error::Result;
use crate::state::Seeding;
use crate::swarm::{TopicStatus, Walks};

impl Daemon {
    /// Announces and/or looks up the core or drive `key` (a drive by its key, which is
    /// its metadata core's) as `seeding` says; both off leaves the swarm. NOT_FOUND
    /// unless the core is stored here.
    pub async fn seed(&self, key: PublicKey, seeding: Seeding) -> Result<()> {
        drop(self.core(&key).await?);
        self.set_seeding(key, seeding).await
    }

    /// How `key` is joined in the swarm and what its walks found (off and nothing when
    /// it is not joined).
    pub fn topic(&self, key: &PublicKey) -> TopicStatus {
        self.swarm().topic(key).unwrap_or(TopicStatus {
            key: *key,
            seeding: Seeding::OFF,
            walks: Walks::default(),
            local_peers: Vec::new(),
        })
    }

    /// Persists how `key` is joined, then joins (or leaves) it.
    pub(crate) async fn set_seeding(&self, key: PublicKey, seeding: Seeding) -> Result<()> {
        let hex = key.to_hex();
        self.update_state(move |s| s.set_seeding(hex, seeding))
            .await?;
        self.swarm().join(key, seeding);
        Ok(())
    }

    /// How to join `key` when created or followed: as asked, else as it is joined
    /// already, else announced if we can write it (we serve it) and looked up if not.
    pub(crate) fn seeding_or_default(
        &self,
        key: &PublicKey,
        asked: Option<Seeding>,
        writable: bool,
    ) -> Seeding {
        asked
            .or_else(|| self.swarm().seeding(key))
            .unwrap_or(if writable {
                Seeding::SEED
            } else {
                Seeding::LOOKUP
            })
    }
}
