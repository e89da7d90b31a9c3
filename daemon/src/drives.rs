//! What the daemon does with drives: create, follow, describe, list and remove them,
//! and where an operation works, a [`DriveLocation`], as every front end gives it (a
//! `hyper://` URL, fields, or both). Every operation fails with a [`DaemonError`] of the
//! kind that fits; the front ends only convert.

use corestore::Core;
use hypercore::{DiscoveryKey, PublicKey};
use hyperd_proto::DriveUrl;
use hyperdrive::{Drive, DriveOptions, Totals};

use crate::cores::MAX_NAME;
use crate::daemon::Daemon;
use crate::error::{shorten, DaemonError, Result};
use crate::state::{DriveEntry, Seeding};

/// What the corestore names a drive's metadata core created with a name: apart from the
/// names of cores, so that `core create --name x` and `drive create --name x` are two
/// things.
const NAME_PREFIX: &str = "hyperd-drive/";

/// A drive as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveInfo {
    /// Its key (its metadata core's).
    pub key: PublicKey,
    /// What peers see on the wire.
    pub discovery_key: DiscoveryKey,
    /// Its content core's key, once known (a followed drive learns it from its first
    /// metadata block).
    pub content_key: Option<PublicKey>,
    /// The latest version this daemon knows: for a followed drive, what its peers
    /// announced.
    pub version: u64,
    /// This daemon can write to it.
    pub writable: bool,
    /// The name it was created with, if any.
    pub name: Option<String>,
    /// Its regular files and their bytes at `version` (mounted drives not counted),
    /// counted from the metadata stored here: `None` while blocks of it are missing
    /// (counting would fetch them).
    pub totals: Option<Totals>,
    /// Metadata blocks stored here, and all there are.
    pub metadata_blocks_stored: u64,
    /// All metadata blocks.
    pub metadata_blocks: u64,
    /// Content blocks stored here.
    pub content_blocks_stored: u64,
    /// All content blocks (as far as known).
    pub content_blocks: u64,
    /// Peers replicating its metadata now.
    pub peers: u32,
    /// Mirrored: every block, live.
    pub all: bool,
}

impl Daemon {
    /// Creates a writable drive; with a name, its key is derived from the master key and
    /// the name, so creating the same name again returns the same drive. It joins the
    /// swarm as `seeding` says, by default announced and looked up.
    pub async fn create_drive(&self, name: &str, seeding: Option<Seeding>) -> Result<DriveInfo> {
        if name.len() > MAX_NAME {
            return Err(DaemonError::invalid(format!(
                "name is {} bytes; names must be at most {MAX_NAME}",
                name.len()
            )));
        }
        let core_name = if name.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            format!("{NAME_PREFIX}{name}").into_bytes()
        };
        let core = self
            .store()
            .get_named(&core_name)
            .await
            .map_err(DaemonError::store)?;
        let drive = Drive::open(self.store(), core, DriveOptions::default())
            .await
            .map_err(DaemonError::drive)?;
        let seeding = self.seeding_or_default(&drive.key(), seeding, true);
        let all = self.hold_drive(drive.clone(), false, seeding).await?;
        tracing::info!("created drive {}", drive.key());
        Ok(self.describe(&drive, all).await)
    }

    /// Follows a drive by key: it stays open and replicates with peers, sparsely (what is
    /// read or downloaded) or with `all` every block, live; across restarts, until
    /// removed. It joins the swarm as `seeding` says, by default looked up (announced
    /// too if we can write it).
    pub async fn follow_drive(
        &self,
        key: PublicKey,
        all: bool,
        seeding: Option<Seeding>,
    ) -> Result<DriveInfo> {
        let drive = self.drives().open(key).await.map_err(DaemonError::drive)?;
        let seeding = self.seeding_or_default(&key, seeding, drive.writable());
        self.hold_drive(drive.clone(), all, seeding).await?;
        self.follows().forget_removed(&key);
        tracing::info!(
            "following drive {key}{}",
            if all { ", all of it" } else { "" }
        );
        Ok(self.describe(&drive, all).await)
    }

    /// Persists how `drive` is held and joined, then holds and joins it. Returns `all`.
    async fn hold_drive(&self, drive: Drive, all: bool, seeding: Seeding) -> Result<bool> {
        let key = drive.key();
        let hex = key.to_hex();
        self.update_state(move |s| {
            s.drives.insert(hex.clone(), DriveEntry { all });
            s.set_seeding(hex, seeding);
        })
        .await?;
        self.drives().hold(drive, all);
        self.swarm().join(key, seeding);
        Ok(all)
    }

    /// The drive `key`, if this daemon created or follows it.
    pub fn drive(&self, key: &PublicKey) -> Result<Drive> {
        self.drives().get(key).ok_or_else(|| {
            DaemonError::not_found(format!(
                "no drive {key} in this daemon: create it, or follow it to replicate it"
            ))
        })
    }

    /// A drive's details.
    pub async fn drive_info(&self, key: &PublicKey) -> Result<DriveInfo> {
        let drive = self.drive(key)?;
        Ok(self.describe(&drive, self.drives().mirrored(key)).await)
    }

    /// Every drive this daemon created or follows, sorted by key.
    pub async fn list_drives(&self) -> Result<Vec<DriveInfo>> {
        let keys: Vec<String> = self.state().get().drives.into_keys().collect();
        let mut out = Vec::with_capacity(keys.len());
        for hex in keys {
            let Ok(key) = hex.parse::<PublicKey>() else {
                continue;
            };
            if let Ok(info) = self.drive_info(&key).await {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Stops holding the drive `at` names and deletes its metadata and content cores
    /// (drives mounted in it are other drives and stay). A location with a path or a
    /// version names something in the drive, most likely meant for `rm`: refused, so
    /// that a file's URL never removes its whole drive.
    pub async fn remove_drive(&self, at: &DriveLocation) -> Result<()> {
        let key = &at.key;
        if at.path != "/" || at.version.is_some() {
            return Err(DaemonError::invalid(format!(
                "{at} names a path or a version in drive {key}; to remove the whole \
                 drive, name only the drive (hyper://{key}); to remove a file, use rm"
            )));
        }
        let drive = self.drive(key)?;
        let content = drive.content_key();
        self.drives().release(key);
        self.swarm().leave(key);
        let hex = key.to_hex();
        self.update_state(move |s| {
            s.drives.remove(&hex);
            s.swarm.remove(&hex);
        })
        .await?;
        drop(drive);
        for core in std::iter::once(*key).chain(content) {
            self.follows().stop(&core);
            self.follows().mark_removed(core);
            self.store()
                .remove(&core)
                .await
                .map_err(DaemonError::store)?;
        }
        tracing::info!("removed drive {key}");
        Ok(())
    }

    /// What the API reports of `drive`.
    async fn describe(&self, drive: &Drive, all: bool) -> DriveInfo {
        let totals = self.count_files(drive).await;
        let metadata = drive.metadata_core();
        let (content_blocks_stored, content_blocks) = drive
            .content_if_open()
            .map(|c| (c.feed().downloaded(0, None), c.feed().len()))
            .unwrap_or_default();
        DriveInfo {
            key: drive.key(),
            discovery_key: drive.discovery_key(),
            content_key: drive.content_key(),
            version: drive.metadata().len(),
            writable: drive.writable(),
            name: drive_name(metadata),
            totals,
            metadata_blocks_stored: drive.metadata().downloaded(0, None),
            metadata_blocks: drive.metadata().len(),
            content_blocks_stored,
            content_blocks,
            peers: metadata.stats().peers.len() as u32,
            // A drive written here has every block of its own.
            all: all || drive.writable(),
        }
    }

    /// The files of `drive` at its version, from the metadata stored here (`None` when
    /// blocks of it are missing); counted once per version.
    async fn count_files(&self, drive: &Drive) -> Option<Totals> {
        let key = drive.key();
        if let Some(totals) = self.drives().counted(&key, drive.version()) {
            return Some(totals);
        }
        // A walk of every node (10,000 files: about 10 ms warm, 100 ms cold in a release
        // build): off the runtime's workers.
        let (counting, runtime) = (drive.clone(), tokio::runtime::Handle::current());
        let counted = tokio::task::spawn_blocking(move || {
            let totals = runtime.block_on(counting.stored_totals());
            totals.map_err(|e| e.to_string())
        })
        .await;
        match counted {
            Ok(Ok(Some(totals))) => {
                self.drives().remember_counted(&key, totals);
                Some(totals)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!("cannot count the files of drive {key}: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("counting the files of drive {key} failed: {e}");
                None
            }
        }
    }
}

/// The name a drive was created with, from its metadata core's name.
fn drive_name(metadata: &Core) -> Option<String> {
    let name = std::str::from_utf8(metadata.name()?).ok()?;
    name.strip_prefix(NAME_PREFIX).map(str::to_string)
}

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
    /// URL's). A path without its leading `/` gets one; an empty one is the root. A path
    /// no drive could hold (see [`hyperdrive::check_path`]) is refused here, for every
    /// operation alike, rather than read as a path that is not there.
    pub fn from_parts(
        url: &str,
        key: &str,
        version: Option<u64>,
        path: &str,
    ) -> Result<DriveLocation> {
        let location = Self::parse(url, key, version, path)?;
        hyperdrive::check_path(&location.path).map_err(DaemonError::drive)?;
        Ok(location)
    }

    /// [`Self::from_parts`] before the path is checked.
    fn parse(url: &str, key: &str, version: Option<u64>, path: &str) -> Result<DriveLocation> {
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
            ("", HEX, None, "/a/../b", "/a/../b: has a . or .. component"),
            (&format!("hyper://{HEX}/a/./b"), "", None, "", "/a/./b"),
            ("", HEX, None, "/a\0b", "NUL"),
            ("", HEX, None, &format!("/{}", "n".repeat(256)), "255"),
            ("", HEX, None, &"/d".repeat(2500), "4096"),
        ] {
            let err = DriveLocation::from_parts(url, key, version, path).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
            assert!(err.message.contains(names), "{err}");
        }
    }
}
