//! Giving memory back to the system. glibc's allocator keeps freed memory in its arenas:
//! after a burst of large blocks (API streams of 8 MiB blocks, big appends) the daemon's
//! resident size stayed at its peak. A task trims the allocator's free memory every few
//! seconds, off the hot paths, so an idle daemon returns to its idle size.

use std::time::Duration;

/// How often free memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Hands the allocator's free memory back to the system, every [`TRIM_EVERY`], until
/// `stop` resolves.
pub async fn trim_periodically(stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // It walks the allocator's free lists: a blocking call, though a short one.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            _ = &mut stop => return,
        }
    }
}

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
