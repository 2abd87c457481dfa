//! The real `vodbridge` binary as its own process.

use std::{
    process::{Child, Command},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::process::{kill_child, launch};

/// The real `vodbridge` binary on a configuration, as its own process (tests and benches of
/// several replicas), killed when dropped.
pub struct BridgeProcess {
    child: Option<Child>,
    /// The port of its listener (`server.listen` must be `127.0.0.1:{port}`).
    pub port: u16,
    /// Keeps the configuration file alive.
    _config: tempfile::NamedTempFile,
}

impl BridgeProcess {
    /// Starts `binary run --config FILE` with `config` (whose listener is on `port`), output
    /// discarded, and waits until it listens.
    ///
    /// # Panics
    ///
    /// When the binary does not start or does not listen within 30 s.
    #[must_use]
    pub fn start(binary: &str, config: &str, port: u16) -> Self {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().expect("a config file");
        file.write_all(config.as_bytes()).expect("config written");
        let child = launch(
            Command::new(binary)
                .args(["run", "--config"])
                .arg(file.path()),
            port,
            Duration::from_secs(30),
            "vodbridge",
        );
        Self {
            child: Some(child),
            port,
            _config: file,
        }
    }

    /// `http://127.0.0.1:{port}`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs (RSS sampling in the soak).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
