//! The shutdown token and task trackers a sink's background tasks run under.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Where a sink's background work (connection supervisors, stream checks, probes) runs.
///
/// Every broker sink takes one in its constructor (`XSink::start(name, config, background)`).
/// The app makes one root with [`Background::new`] and hands each sink a [`Background::child`]:
///
/// - every task started with [`Background::spawn`] stops when the sink's token is cancelled,
///   by the sink's own [`Background::stop`] (from `Sink::close`) or by the app cancelling the
///   root;
/// - every task is counted by the sink's own tracker, which [`Background::stop`] waits for,
///   and by the app's, so the app can wait for all sinks' tasks at once.
///
/// `Background::default()` is a root of its own (tests, benches, tools).
#[derive(Debug, Clone, Default)]
pub struct Background {
    shutdown: CancellationToken,
    app: TaskTracker,
    own: TaskTracker,
}

impl Background {
    /// A root: `shutdown` stops every task, `tasks` counts every task.
    #[must_use]
    pub fn new(shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        Self {
            shutdown,
            app: tasks.clone(),
            own: tasks,
        }
    }

    /// One sink's share: a child token (cancelling it leaves the others running) and a
    /// tracker of its own, with the app's tracker still counting.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            shutdown: self.shutdown.child_token(),
            app: self.app.clone(),
            own: TaskTracker::new(),
        }
    }

    /// The token the tasks stop on; long waits inside a task should select on it.
    #[must_use]
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task` until it ends or the token is cancelled, counted by both trackers.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.shutdown.clone().run_until_cancelled_owned(task);
        let task = self.app.track_future(self.own.track_future(task));
        tokio::spawn(task);
    }

    /// Cancels the token and waits until every task this share started has ended.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.own.close();
        self.own.wait().await;
    }

    /// Closes the tracker for new tasks and waits until every counted task has ended (the
    /// app, after closing every sink).
    pub async fn wait(&self) {
        self.app.close();
        self.app.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_child_stops_alone_and_the_root_sees_every_task() {
        let root = Background::default();
        let (a, b) = (root.child(), root.child());
        a.spawn(std::future::pending());
        b.spawn(std::future::pending());
        a.stop().await;
        assert!(a.shutdown().is_cancelled());
        assert!(
            !b.shutdown().is_cancelled(),
            "stopping one sink leaves the others"
        );
        // b's task still runs: the root's wait would not end.
        assert!(tokio::time::timeout(Duration::from_secs(1), root.wait())
            .await
            .is_err());
        root.shutdown().cancel();
        root.wait().await;
        b.stop().await;
    }
}
