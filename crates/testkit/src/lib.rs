//! Test harness: real broker processes on free loopback ports, each with its own data
//! directory, stopped when dropped. A missing broker binary panics with the package to install,
//! never skips.
#![forbid(unsafe_code)]

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound and released; a race with other processes is possible
/// but unlikely).
///
/// # Panics
///
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn require(binary: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/sbin",
        "/usr/lib/rabbitmq/bin",
    ]) {
        let candidate = Path::new(dir).join(binary);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{binary} is not installed: install the Debian package {package} (bash scripts/test.sh does), tests never skip a broker");
}

fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    let started = Instant::now();
    while TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(
            started.elapsed() < timeout,
            "{what} did not open port {port} within {timeout:?}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// A `nats-server -js` process.
pub struct NatsServer {
    /// Client port.
    pub port: u16,
    /// JetStream storage directory (kept across [`NatsServer::restart`]).
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a JetStream-enabled server on a free port.
    ///
    /// # Panics
    ///
    /// When `nats-server` is missing or does not start.
    #[must_use]
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            port: free_port(),
            store,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require("nats-server", "nats-server");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20), "nats-server");
    }

    /// `nats://127.0.0.1:port`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: like a crash; file storage must keep acknowledged messages).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
