//! Two short pieces of CPU work at once: a small file's write signs twice (its content's
//! append and its Stat's), about 17 us each, and the two signatures are independent.
//!
//! A hop to tokio's blocking pool costs more than a signature on a small VM (a sleeping
//! thread is woken, and then the caller), so [`join`] hands one piece to a helper thread
//! that stays awake for a moment after each piece (writes come in bursts), runs the other
//! itself, and takes its piece back if the helper has not started it by then: never much
//! slower than doing both in turn, twice as fast when the helper is at hand.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long the helper watches for more work before it sleeps.
const STAY_AWAKE: Duration = Duration::from_micros(200);

/// A piece of work handed to the helper, which either of them runs.
trait Piece: Send + Sync {
    /// Runs the work unless the other side took it.
    fn run(&self);
}

/// The work, its result (or its panic) and whether it is finished.
struct Slot<B, F> {
    work: Mutex<Option<F>>,
    result: Mutex<Option<std::thread::Result<B>>>,
    done: AtomicBool,
}

impl<B: Send, F: FnOnce() -> B + Send> Piece for Slot<B, F> {
    fn run(&self) {
        let work = lock(&self.work).take();
        if let Some(work) = work {
            // A panic goes back to the caller, as if it had run the work itself; the
            // helper lives on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            *lock(&self.result) = Some(result);
            self.done.store(true, Ordering::Release);
        }
    }
}

struct Helper {
    queue: Mutex<VecDeque<Arc<dyn Piece>>>,
    /// Pieces queued: what the helper watches while awake, without taking the lock.
    queued: AtomicUsize,
    /// Whether the helper sleeps on `wake` (else it is working or watching `queued`).
    asleep: AtomicBool,
    wake: Condvar,
}

static HELPER: LazyLock<Option<Arc<Helper>>> = LazyLock::new(|| {
    // Without a second core there is nothing to gain: `join` runs both in turn.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return None;
    }
    let helper = Arc::new(Helper {
        queue: Mutex::new(VecDeque::new()),
        queued: AtomicUsize::new(0),
        asleep: AtomicBool::new(false),
        wake: Condvar::new(),
    });
    let worker = helper.clone();
    std::thread::Builder::new()
        .name("hyperdrive-sign".into())
        .spawn(move || serve(&worker))
        .ok()
        .map(|_| helper)
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The helper's loop: runs what is queued, watches the queue for [`STAY_AWAKE`] after
/// the last piece, then sleeps until woken.
fn serve(helper: &Helper) {
    let mut idle_since = Instant::now();
    loop {
        if helper.queued.load(Ordering::Acquire) > 0 {
            let next = lock(&helper.queue).pop_front();
            if let Some(piece) = next {
                helper.queued.fetch_sub(1, Ordering::AcqRel);
                piece.run();
            }
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < STAY_AWAKE {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            continue;
        }
        let mut queue = lock(&helper.queue);
        helper.asleep.store(true, Ordering::SeqCst);
        while queue.is_empty() {
            queue = helper.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        helper.asleep.store(false, Ordering::SeqCst);
        drop(queue);
        idle_since = Instant::now();
    }
}

/// Runs `a` here and `b` on the helper thread at the same time, or both here in turn
/// when the helper is busy or slow to wake; returns both results.
pub(crate) fn join<A, B, F>(a: impl FnOnce() -> A, b: F) -> (A, B)
where
    B: Send + 'static,
    F: FnOnce() -> B + Send + 'static,
{
    let Some(helper) = HELPER.as_ref() else {
        let a = a();
        return (a, b());
    };
    let slot = Arc::new(Slot {
        work: Mutex::new(Some(b)),
        result: Mutex::new(None),
        done: AtomicBool::new(false),
    });
    {
        let mut queue = lock(&helper.queue);
        queue.push_back(slot.clone());
        helper.queued.fetch_add(1, Ordering::AcqRel);
        if helper.asleep.load(Ordering::SeqCst) {
            helper.wake.notify_one();
        }
    }
    let a = a();
    // Take `b` back if the helper has not started it; else it is running: wait for it.
    slot.run();
    while !slot.done.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let result = lock(&slot.result).take();
    match result {
        Some(Ok(b)) => (a, b),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => unreachable!("a finished piece has its result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_results_come_back_whoever_runs_them() {
        for n in 0..1000u64 {
            let (a, b) = join(|| n * 2, move || n * 3);
            assert_eq!((a, b), (n * 2, n * 3));
        }
        // From many threads at once: each gets its own results.
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for n in 0..200 {
                        let (a, b) = join(|| (t, n), move || format!("{t}/{n}"));
                        assert_eq!(a, (t, n));
                        assert_eq!(b, format!("{t}/{n}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn the_helper_runs_work_while_the_caller_does_its_own() {
        // The caller's piece waits until the other one has started elsewhere: that can
        // only end if the helper runs it (the caller would take it back only after).
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let (ran_alongside, other) = join(
            || {
                let t0 = Instant::now();
                while !seen.load(Ordering::Acquire) {
                    if t0.elapsed() > Duration::from_secs(10) {
                        return false;
                    }
                    std::thread::yield_now();
                }
                true
            },
            move || {
                started.store(true, Ordering::Release);
                std::thread::current().name().map(str::to_string)
            },
        );
        if HELPER.is_some() {
            assert!(ran_alongside, "the helper never started the piece");
            assert_eq!(other.as_deref(), Some("hyperdrive-sign"));
        } else {
            eprintln!("SKIPPED: one core, no helper thread: join runs both in turn");
        }
    }

    #[test]
    fn a_panic_comes_back_to_the_caller_and_the_helper_lives_on() {
        let caught = std::panic::catch_unwind(|| join(|| 1, || -> u32 { panic!("piece") }));
        assert!(caught.is_err());
        assert_eq!(join(|| 1, || 2), (1, 2));
    }
}
