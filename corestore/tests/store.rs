#![allow(clippy::unwrap_used)]
//! The store on real directories: getting cores by name, key, key pair and discovery key;
//! what is written where; writability after a restart; one core per discovery key under
//! concurrent gets; listing, closing and removing cores; damaged entries.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use corestore::{
    core_path, derive_key_pair, encode_name, Corestore, CorestoreOptions, Error, MasterKey,
};
use hypercore::{KeyPair, PublicKey};

async fn open(dir: &Path) -> Corestore {
    Corestore::open(dir, CorestoreOptions::default())
        .await
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn master_key_is_created_once_with_mode_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/cores");
    let store = open(&dir).await;
    let path = dir.join("master_key");
    assert_eq!(std::fs::read(&path).unwrap(), store.master_key().as_bytes());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(store.dir(), dir);
    let key = store.master_key().clone();
    store.close().await.unwrap();

    let again = open(&dir).await;
    assert_eq!(again.master_key(), &key);
    again.close().await.unwrap();

    // Shorter than 32 bytes: replaced by a fresh key, as JS does.
    std::fs::write(&path, [1u8; 31]).unwrap();
    let fresh = open(&dir).await;
    assert_ne!(fresh.master_key(), &key);
    assert_eq!(std::fs::read(&path).unwrap(), fresh.master_key().as_bytes());
    // Longer: the first 32 bytes.
    let mut long = vec![9u8; 32];
    long.extend_from_slice(b"trailing");
    std::fs::write(&path, &long).unwrap();
    let reread = open(&dir).await;
    assert_eq!(reread.master_key().as_bytes(), &[9u8; 32]);
}

#[tokio::test]
async fn named_cores_write_key_and_name_but_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let core = store.get_named(b"hello").await.unwrap();
    let feed = core.feed();
    assert!(feed.writable());
    assert_eq!(
        feed.key(),
        derive_key_pair(store.master_key(), b"hello").public
    );
    feed.append("one").await.unwrap();
    let dir = tmp.path().join(core_path(&feed.discovery_key()));
    assert_eq!(store.core_dir(&feed.discovery_key()), dir);
    assert_eq!(
        files(&dir),
        ["bitfield", "data", "key", "name", "signatures", "tree"]
    );
    assert_eq!(std::fs::read(dir.join("name")).unwrap(), b"\x05hello");
    assert_eq!(
        std::fs::read(dir.join("key")).unwrap(),
        feed.key().as_bytes()
    );

    // The default core is the one named "default".
    let default = store.default_core().await.unwrap();
    assert_eq!(
        default.feed().key(),
        derive_key_pair(store.master_key(), b"default").public
    );
    // Random names are 32 bytes and stored, so the core is re-derivable.
    let random = store.create().await.unwrap();
    let random_dir = store.core_dir(&random.feed().discovery_key());
    let name = std::fs::read(random_dir.join("name")).unwrap();
    assert_eq!(name.len(), 33);
    assert_eq!(name[0], 32);
    assert!(random.feed().writable());
    assert!(matches!(
        store.get_named(b"").await.unwrap_err(),
        Error::EmptyName
    ));
    store.close().await.unwrap();
}

#[tokio::test]
async fn writability_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = KeyPair::generate();
    let explicit = KeyPair::generate();
    let (named, random, clone) = {
        let store = open(tmp.path()).await;
        let named = store.get_named(b"drive").await.unwrap();
        named.feed().append_batch(["a", "b"]).await.unwrap();
        let random = store.create().await.unwrap();
        random.feed().append("r").await.unwrap();
        let pair = store.get_with_key_pair(explicit.clone()).await.unwrap();
        assert!(pair.feed().writable());
        pair.feed().append("k").await.unwrap();
        let secret = store
            .core_dir(&explicit.public.discovery_key())
            .join("secret_key");
        assert_eq!(
            std::fs::read(&secret).unwrap(),
            explicit.secret.to_bytes().to_vec()
        );
        assert_eq!(mode(&secret), 0o600);
        let clone = store.get_by_key(foreign.public).await.unwrap();
        assert!(!clone.feed().writable());
        assert!(clone.feed().is_empty());
        let clone_dir = store.core_dir(&foreign.public.discovery_key());
        assert_eq!(
            files(&clone_dir),
            ["bitfield", "data", "key", "signatures", "tree"]
        );
        store.close().await.unwrap();
        (named.feed().key(), random.feed().key(), clone.feed().key())
    };

    let store = open(tmp.path()).await;
    // By key only: writable again through the stored name or secret key.
    for (key, writable, len) in [
        (named, true, 2),
        (random, true, 1),
        (explicit.public, true, 1),
        (clone, false, 0),
    ] {
        let core = store.get_by_key(key).await.unwrap();
        assert_eq!(core.feed().writable(), writable, "{key}");
        assert_eq!(core.feed().len(), len, "{key}");
        if writable {
            core.feed().append("more").await.unwrap();
        }
    }
    assert_eq!(
        &store
            .get_named(b"drive")
            .await
            .unwrap()
            .feed()
            .get(2)
            .await
            .unwrap()[..],
        b"more"
    );

    let mut stored = store.stored().await.unwrap();
    assert_eq!(stored.len(), 4);
    let mut dks: Vec<_> = stored.iter().map(|c| c.discovery_key).collect();
    dks.sort();
    assert_eq!(
        dks,
        stored.iter().map(|c| c.discovery_key).collect::<Vec<_>>()
    );
    stored.sort_by_key(|c| c.key);
    for c in &stored {
        assert_eq!(c.discovery_key, c.key.discovery_key());
        match c.key {
            k if k == named => {
                assert_eq!(c.name.as_deref(), Some(&b"drive"[..]));
                assert!(c.writable);
            }
            k if k == random => assert!(c.writable && c.name.as_ref().unwrap().len() == 32),
            k if k == explicit.public => assert!(c.writable && c.name.is_none()),
            k if k == clone => assert!(!c.writable && c.name.is_none()),
            k => panic!("unexpected core {k}"),
        }
    }

    // Another master key cannot write the named cores, even with their name files.
    store.close().await.unwrap();
    let other = Corestore::open_with_master_key(
        tmp.path(),
        MasterKey::generate(),
        CorestoreOptions::default(),
    )
    .await
    .unwrap();
    let listed = other.stored().await.unwrap();
    assert_eq!(listed.iter().filter(|c| c.writable).count(), 1); // the explicit key pair
    let err = other.get_by_key(named).await.unwrap_err();
    assert!(
        matches!(err, Error::IncorrectName { .. })
            && err.to_string().contains("Stored an incorrect name"),
        "{err}"
    );
}

#[tokio::test]
async fn a_name_file_of_another_core_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let key = store.get_named(b"right").await.unwrap().feed().key();
    store.close_core(&key).await.unwrap();
    let dir = store.core_dir(&key.discovery_key());
    std::fs::write(dir.join("name"), encode_name(b"wrong")).unwrap();
    let err = store.get_by_key(key).await.unwrap_err();
    assert!(matches!(err, Error::IncorrectName { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&dir.join("name").display().to_string()));
    // The slot is free again: a fixed name file opens fine.
    std::fs::write(dir.join("name"), encode_name(b"right")).unwrap();
    assert!(store.get_by_key(key).await.unwrap().feed().writable());
    // A malformed name file is no name (JS): read-only.
    store.close_core(&key).await.unwrap();
    std::fs::write(dir.join("name"), b"\x09right").unwrap();
    assert!(!store.get_by_key(key).await.unwrap().feed().writable());
}

#[tokio::test]
async fn get_by_discovery_key_opens_only_stored_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let core = store.get_named(b"x").await.unwrap();
    core.feed().append("data").await.unwrap();
    let dk = core.feed().discovery_key();
    // Loaded: the same core.
    let same = store.get_by_discovery_key(&dk).await.unwrap().unwrap();
    assert_eq!(same.feed().len(), 1);
    // From disk after unloading, writable through its name.
    store.close_core(&core.feed().key()).await.unwrap();
    assert!(store.get_open(&core.feed().key()).is_none());
    assert!(core.feed().is_closed());
    let reopened = store.get_by_discovery_key(&dk).await.unwrap().unwrap();
    assert!(reopened.feed().writable());
    assert_eq!(&reopened.feed().get(0).await.unwrap()[..], b"data");
    // Unknown: nothing, and nothing is created.
    let unknown = KeyPair::generate().public.discovery_key();
    assert!(store
        .get_by_discovery_key(&unknown)
        .await
        .unwrap()
        .is_none());
    assert!(!store.core_dir(&unknown).exists());
    assert!(store.get_open(&KeyPair::generate().public).is_none());
}

#[tokio::test]
async fn concurrent_gets_share_one_core() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let key = derive_key_pair(store.master_key(), b"shared").public;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => store.get_named(b"shared").await,
                1 => store.get_by_key(key).await,
                _ => loop {
                    // Finds it once some other task has created it.
                    if let Some(core) = store.get_by_discovery_key(&key.discovery_key()).await? {
                        break Ok(core);
                    }
                    tokio::task::yield_now().await;
                },
            }
        }));
    }
    let cores: Vec<_> = futures_join(tasks).await;
    assert_eq!(store.open_cores().len(), 1);
    cores[0].feed().append("seen by all").await.unwrap();
    for core in &cores {
        assert_eq!(core.feed().key(), key);
        // One feed: the append through the first handle is visible through every one.
        assert_eq!(core.feed().len(), 1);
        assert!(core.feed().writable());
    }

    // Closing while others get: every get ends with an open core, never a lock error.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 4 == 0 {
                store.close_core(&key).await?;
            }
            store.get_by_key(key).await
        }));
    }
    futures_join(tasks).await;
    let core = store.get_by_key(key).await.unwrap();
    assert!(!core.feed().is_closed());
    assert_eq!(core.feed().len(), 1);
    assert_eq!(store.open_cores().len(), 1);
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<Result<corestore::Core, Error>>>,
) -> Vec<corestore::Core> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn remove_deletes_the_core_and_empty_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let a = store.get_named(b"a").await.unwrap();
    a.feed().append("x").await.unwrap();
    let b = store.get_named(b"b").await.unwrap();
    let dir_a = store.core_dir(&a.feed().discovery_key());
    // Someone else's entry under the same first-level directory keeps it alive.
    let sibling = dir_a.parent().unwrap().parent().unwrap().join("zz");
    std::fs::create_dir_all(&sibling).unwrap();

    store.remove(&a.feed().key()).await.unwrap();
    assert!(a.feed().is_closed());
    assert!(!dir_a.exists());
    assert!(!dir_a.parent().unwrap().exists());
    assert!(sibling.exists());
    assert!(store.get_open(&a.feed().key()).is_none());
    let b_dir = store.core_dir(&b.feed().discovery_key());
    store.remove(&b.feed().key()).await.unwrap();
    assert!(!b_dir.exists());
    if b_dir.parent().unwrap().parent().unwrap() != sibling.parent().unwrap() {
        assert!(!b_dir.parent().unwrap().parent().unwrap().exists());
    }
    assert!(tmp.path().join("master_key").exists());
    assert!(store.stored().await.unwrap().is_empty());
    // Removing what is not stored does nothing; an empty core can be had again afresh.
    store.remove(&a.feed().key()).await.unwrap();
    let again = store.get_named(b"b").await.unwrap();
    assert!(again.feed().is_empty());
    assert!(again.feed().writable());
}

#[tokio::test]
async fn a_removed_core_with_blocks_is_not_signed_again_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let core = store.get_named(b"published").await.unwrap();
    core.feed().append_batch(["one", "two"]).await.unwrap();
    let key = core.feed().key();
    drop(core);
    store.remove(&key).await.unwrap();
    assert_eq!(
        store.tombstone(&key),
        Some(corestore::Tombstone { key, length: 2 })
    );
    // Deriving the same key again would sign a second history under it.
    let err = store.get_named(b"published").await.unwrap_err();
    assert!(
        matches!(err, Error::Removed { key: k, length: 2 } if k == key),
        "{err}"
    );
    assert!(
        !store.core_dir(&key.discovery_key()).exists(),
        "a refused create left a directory"
    );
    // The tombstone survives a restart.
    store.close().await.unwrap();
    let store = open(tmp.path()).await;
    assert!(matches!(
        store.get_named(b"published").await,
        Err(Error::Removed { .. })
    ));
    // Following it back (a read-only clone) is fine, and a clone that holds less than the
    // removed history is still not signed.
    let clone = store.get_by_key(key).await.unwrap();
    assert!(!clone.feed().writable());
    drop(clone);
    store.close_core(&key).await.unwrap();
    assert!(matches!(
        store.get_named(b"published").await,
        Err(Error::Removed { .. })
    ));
    assert!(!store.core_dir(&key.discovery_key()).join("name").exists());
    // Asked explicitly: a new history, and the tombstone is gone.
    store.remove(&key).await.unwrap();
    let forced = store.recreate_named(b"published").await.unwrap();
    assert!(forced.feed().writable() && forced.feed().is_empty());
    assert_eq!(store.tombstone(&key), None);
    store.close().await.unwrap();
    let store = open(tmp.path()).await;
    assert_eq!(store.tombstone(&key), None);
    assert!(store
        .get_named(b"published")
        .await
        .unwrap()
        .feed()
        .writable());
}

#[tokio::test]
async fn stored_skips_damaged_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let good = store.get_named(b"good").await.unwrap().feed().key();
    let damaged = |name: &[u8]| {
        let key: PublicKey = derive_key_pair(store.master_key(), name).public;
        store.core_dir(&key.discovery_key())
    };
    // No key file.
    let no_key = damaged(b"no key");
    std::fs::create_dir_all(&no_key).unwrap();
    std::fs::write(no_key.join("name"), encode_name(b"no key")).unwrap();
    // A short key file.
    let short = damaged(b"short");
    std::fs::create_dir_all(&short).unwrap();
    std::fs::write(short.join("key"), [1u8; 5]).unwrap();
    // A key that belongs elsewhere.
    let misplaced = damaged(b"misplaced");
    std::fs::create_dir_all(&misplaced).unwrap();
    std::fs::write(misplaced.join("key"), good.as_bytes()).unwrap();
    // Directories that are not discovery keys, and a file where a directory should be.
    std::fs::create_dir_all(tmp.path().join("ab/cd/not-a-key")).unwrap();
    std::fs::create_dir_all(tmp.path().join("ab/zz")).unwrap();
    std::fs::write(tmp.path().join("ab/cd/file"), b"").unwrap();
    std::fs::create_dir_all(tmp.path().join("other")).unwrap();

    let stored = store.stored().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key, good);

    // Opening the misplaced one by discovery key names the file.
    let dk = derive_key_pair(store.master_key(), b"misplaced")
        .public
        .discovery_key();
    let err = store.get_by_discovery_key(&dk).await.unwrap_err();
    assert!(matches!(err, Error::MisplacedKey { .. }), "{err}");
    assert!(
        err.to_string().contains(&misplaced.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_closed_store_refuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let core = store.get_named(b"n").await.unwrap();
    store.close().await.unwrap();
    assert!(core.feed().is_closed());
    assert!(store.open_cores().is_empty());
    assert!(matches!(
        store.get_named(b"n").await.unwrap_err(),
        Error::Closed { .. }
    ));
    assert!(matches!(
        store.create().await.unwrap_err(),
        Error::Closed { .. }
    ));
    // The files stay, and another store can open them (the locks were released).
    let again = open(tmp.path()).await;
    assert!(again.get_named(b"n").await.unwrap().feed().writable());
}

#[tokio::test]
async fn a_core_is_not_opened_twice_across_stores() {
    // Two stores on one directory: the second cannot open a core the first holds (its
    // bitfield is locked), and says which core.
    let tmp = tempfile::tempdir().unwrap();
    let one = open(tmp.path()).await;
    let two = open(tmp.path()).await;
    let key = one.get_named(b"busy").await.unwrap().feed().key();
    let err = two.get_by_key(key).await.unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert!(err.to_string().contains(&key.to_hex()), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    // After the first closes it, the second can.
    one.close_core(&key).await.unwrap();
    assert!(two.get_by_key(key).await.unwrap().feed().writable());
}

#[test]
fn the_store_is_a_cheap_shared_handle() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Corestore>();
    check::<corestore::Namespace>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_leave_nothing_half_done() {
    // Gets, closes and removes that the caller stops waiting for still complete: the next
    // call finds a consistent store (never a feed locked by a half-finished open).
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    for i in 0..20u32 {
        let name = format!("core {i}");
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(50),
            store.get_named(name.as_bytes()),
        )
        .await;
        let core = store.get_named(name.as_bytes()).await.unwrap();
        core.feed().append("x").await.unwrap();
        let key = core.feed().key();
        let _ = tokio::time::timeout(std::time::Duration::from_micros(50), store.close_core(&key))
            .await;
        let again = store.get_by_key(key).await.unwrap();
        assert!(again.feed().writable());
        assert_eq!(again.feed().len(), 1);
        if i % 2 == 0 {
            let _ = tokio::time::timeout(std::time::Duration::from_micros(50), store.remove(&key))
                .await;
            store.remove(&key).await.unwrap();
            assert!(!store.core_dir(&key.discovery_key()).exists());
        }
    }
    assert_eq!(store.open_cores().len(), 10);
    assert_eq!(store.stored().await.unwrap().len(), 10);
}
