//! Giving memory back to the system. glibc's allocator keeps freed memory in its arenas:
//! after a burst of large blocks (API streams of 8 MiB blocks, big appends) the daemon's
//! resident size stayed at its peak. A task trims the allocator's free memory every few
//! seconds, off the hot paths, so an idle daemon returns to its idle size.

use std::time::Duration;

/// How often free memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Hands the allocator's free memory back to the system, every [`TRIM_EVERY`], until
/// dropped (the daemon runs it as one of its tasks, which stop with it).
pub(crate) async fn trim_periodically(daemon: crate::Daemon) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // It walks the allocator's free lists: a blocking call, though a short one.
        let _ = daemon.spawn_blocking("trimming free memory", trim).await;
    }
}

/// Allocations at least this large get their own mapping, returned to the system as soon
/// as they are freed. Above the 1–2 MiB buffers of API messages and replication batches,
/// which are reused from the arenas (mapping them afresh each time cost a third of
/// `hyperctl core append`'s speed in page faults), below 8 MiB blocks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Free memory an arena keeps at its top. Setting the mmap threshold fixes glibc's trim
/// threshold at its default of 128 KiB, so freeing one 1 MiB read buffer gave its pages
/// back and the next one faulted them in afresh: a 256 MiB `hyperctl drive cat` faulted
/// 224 MiB of pages in and ran at a third of its speed. Room for a 1 MiB buffer and
/// change, no more: [`trim`] does not shrink the top of a thread's arena, so what is kept
/// here stays resident in every arena (16 MiB left the daemon 90 MiB above its idle size
/// after 16 concurrent reads).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 2 << 20;

/// Tunes the allocator for the daemon's mix of small objects and large blocks; call it
/// once, before any thread starts. glibc raises its mmap threshold to the size of each
/// large buffer freed (up to 32 MiB), after which 8 MiB blocks come from the arenas and
/// their memory stays there, fragmented; a fixed threshold keeps large buffers in their
/// own mappings, and a fixed trim threshold lets the arenas reuse smaller ones.
/// Elsewhere a no-op.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() {
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Tunes the allocator (glibc only); elsewhere a no-op.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

/// Returns free heap memory to the system (glibc `malloc_trim`); elsewhere a no-op.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own state
    // under its locks; glibc documents it as safe to call at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns free heap memory to the system (glibc `malloc_trim`); elsewhere a no-op.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
