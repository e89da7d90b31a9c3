//! The daemon's tasks. Every task the daemon spawns goes through [`Tasks`]: it is
//! tracked (one `TaskTracker` for the whole daemon), named, and ends when its
//! cancellation token is cancelled, so a shutdown is: cancel, wait until nothing runs
//! (bounded, naming what still does), close the corestore. Subsystems get a child with a
//! token of their own, and a task that can be stopped alone (a follow's mirror, a redial
//! loop) gets a child of that.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns, tracks and stops the daemon's tasks. Cheap to clone; clones share the token.
#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
    /// Tasks running now, by name (for shutdown's log line and tests).
    running: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

/// Counts a task as running while it lives.
struct Running {
    running: Arc<Mutex<BTreeMap<&'static str, usize>>>,
    name: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = lock(&self.running);
        if let Some(n) = running.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.name);
            }
        }
    }
}

impl Tasks {
    /// A new set of tasks with its own token and tracker.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Tasks tracked here whose token is a child of this one: cancelling it stops them
    /// only; cancelling this one stops them too.
    pub fn child(&self) -> Tasks {
        Tasks {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
            running: self.running.clone(),
        }
    }

    /// Stops the tasks spawned through this (and its children).
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when cancelled.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Runs `op` unless cancelled first: `None` then (and `op` is dropped).
    pub async fn unless_cancelled<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        self.token.run_until_cancelled(op).await
    }

    fn enter(&self, name: &'static str) -> Running {
        *lock(&self.running).entry(name).or_default() += 1;
        Running {
            running: self.running.clone(),
            name,
        }
    }

    /// Runs `task` until it finishes or the token is cancelled, when it is dropped where
    /// it waits.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn_with_stop(name, |stop| async move {
            stop.run_until_cancelled_owned(task).await;
        });
    }

    /// Runs the task `start` makes from the token; the task ends itself when the token
    /// is cancelled, for tasks that close something first (a connection, a batch being
    /// written) rather than being dropped.
    pub fn spawn_with_stop<F>(&self, name: &'static str, start: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let running = self.enter(name);
        let task = start(self.token.clone());
        self.tracker.spawn(async move {
            let _running = running;
            task.await;
        });
    }

    /// Runs blocking work on the runtime's blocking threads, tracked: a shutdown waits
    /// for it (a state file being written is finished, not cut off).
    pub fn spawn_blocking<R: Send + 'static>(
        &self,
        name: &'static str,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let running = self.enter(name);
        self.tracker.spawn_blocking(move || {
            let _running = running;
            work()
        })
    }

    /// The tasks running now, by name, with how many of each.
    pub fn running(&self) -> Vec<(&'static str, usize)> {
        lock(&self.running)
            .iter()
            .map(|(name, n)| (*name, *n))
            .collect()
    }

    /// Cancels every task, then waits until all have ended, at most `limit`; true if
    /// they did. Otherwise logs which still run and returns false: a shutdown goes on
    /// rather than hang.
    pub async fn stop(&self, limit: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        let still: Vec<String> = self
            .running()
            .iter()
            .map(|(name, n)| format!("{n} × {name}"))
            .collect();
        tracing::warn!(
            "tasks still running {limit:?} after the shutdown began: {}; stopping anyway",
            still.join(", ")
        );
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn stop_cancels_every_task_and_waits_for_them() {
        let tasks = Tasks::new();
        let subsystem = tasks.child();
        tasks.spawn("forever", std::future::pending());
        subsystem.spawn("forever in a subsystem", std::future::pending());
        // A task that closes something when stopped: it runs to its end.
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        subsystem.spawn_with_stop("closing", |stop| async move {
            stop.cancelled().await;
            tokio::task::yield_now().await;
            let _ = closed_tx.send(());
        });
        assert_eq!(
            tasks.running(),
            vec![
                ("closing", 1),
                ("forever", 1),
                ("forever in a subsystem", 1)
            ]
        );
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert!(tasks.running().is_empty());
        closed_rx.await.unwrap();
    }

    #[tokio::test]
    async fn a_child_stops_alone() {
        let tasks = Tasks::new();
        let child = tasks.child();
        tasks.spawn("parent's", std::future::pending());
        child.spawn("child's", std::future::pending());
        child.cancel();
        while tasks.running().len() > 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(tasks.running(), vec![("parent's", 1)]);
        assert!(!tasks.is_cancelled());
        assert!(tasks.stop(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_token_is_named_not_waited_for() {
        let tasks = Tasks::new();
        tasks.spawn_with_stop("stubborn", |_| std::future::pending());
        assert!(!tasks.stop(Duration::from_millis(100)).await);
        assert_eq!(tasks.running(), vec![("stubborn", 1)]);
    }
}
