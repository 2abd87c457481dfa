//! What every process controller shares: free ports, finding a broker's binary (or failing with
//! the package to install), starting a process and waiting for its port, reaping it.

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

pub(crate) fn require(binary: &str, package: &str) -> PathBuf {
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

pub(crate) fn wait_for_port(port: u16, timeout: Duration, what: &str) {
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

/// Starts `command` quietly and waits until it opens `port`. With `TESTKIT_LOG` set in the
/// environment, the standard error of the process named `what` (e.g. `TESTKIT_LOG=vodbridge`,
/// or `all`) goes to the test's, to debug a failing test.
pub(crate) fn launch(command: &mut Command, port: u16, timeout: Duration, what: &str) -> Child {
    let shown = std::env::var("TESTKIT_LOG").is_ok_and(|v| v == what || v == "all");
    let child = command
        .stdout(Stdio::null())
        .stderr(if shown {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    wait_for_port(port, timeout, what);
    child
}

/// Kills a child process, if any, and reaps it.
pub(crate) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
