//! tansu, the Kafka-compatible broker: in memory, on SQLite, behind a proxy, or with SASL
//! behind TLS.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use crate::process::{free_port, kill_child, launch, require};
use crate::TestPki;

/// A `tansu` Kafka-compatible broker: in-memory storage (a restart starts empty), or SQLite
/// storage in a directory of its own that survives restarts ([`Tansu::start_durable`]).
pub struct Tansu {
    /// Kafka port.
    pub port: u16,
    /// The port it tells clients to connect to (its own, or a proxy's in front of it).
    advertised: u16,
    child: Option<Child>,
    /// `memory://tansu/` or `sqlite://tansu.db` (relative to the directory below: tansu reads
    /// the URL's path as relative).
    storage: String,
    /// The SQLite database's directory, removed on drop.
    dir: Option<tempfile::TempDir>,
    /// `--authentication`: SASL required (PLAIN, SCRAM-SHA-256/512).
    authentication: bool,
    /// The TLS endpoint in front of it ([`Tansu::start_secure`]).
    tls: Option<TlsTerminator>,
}

/// A SCRAM user created in a [`Tansu::start_secure`] broker.
#[derive(Clone, Copy, Debug)]
pub struct ScramUser<'a> {
    /// User name.
    pub name: &'a str,
    /// Password.
    pub password: &'a str,
    /// `scram256` or `scram512` (`tansu user create --mechanism`).
    pub mechanism: &'a str,
}

/// `stunnel` accepting TLS (the [`TestPki`] server certificate, `localhost` / `127.0.0.1`) on
/// one port and forwarding the plain bytes to another: the TLS endpoint of a broker that has
/// none of its own.
struct TlsTerminator {
    port: u16,
    child: Option<Child>,
    /// stunnel's configuration, certificate and key.
    _dir: tempfile::TempDir,
}

impl TlsTerminator {
    fn start(pki: &TestPki, port: u16, upstream: u16) -> Self {
        let binary = require("stunnel4", "stunnel4");
        let dir = tempfile::tempdir().expect("a stunnel directory");
        let [_, cert, key] = pki.server_files_in(dir.path());
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\nsyslog = no\ndebug = 3\n[broker]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{upstream}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .expect("stunnel.conf");
        let child = launch(
            Command::new(binary).arg(&config),
            port,
            Duration::from_secs(10),
            "stunnel",
        );
        Self {
            port,
            child: Some(child),
            _dir: dir,
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn tansu_binary() -> PathBuf {
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    if let Ok(path) = cargo_bin {
        if path.is_file() {
            return path;
        }
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("tansu");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("tansu is not installed: cargo install tansu --features dynostore,libsql --locked (bash scripts/test.sh does); tests never skip a broker");
}

impl Tansu {
    /// Starts a broker on a free port.
    ///
    /// # Panics
    ///
    /// When `tansu` is missing or does not open its port.
    #[must_use]
    pub fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// Starts a broker on `port` that tells clients (in its metadata) to connect to
    /// `advertised`, the port of a [`crate::SilentProxy`] in front of it: without that, a
    /// Kafka client would find the broker's own address and go around the proxy.
    ///
    /// # Panics
    ///
    /// When `tansu` is missing or does not open its port.
    #[must_use]
    pub fn start_advertising(port: u16, advertised: u16) -> Self {
        let mut broker = Self {
            port,
            advertised,
            child: None,
            storage: "memory://tansu/".to_owned(),
            dir: None,
            authentication: false,
            tls: None,
        };
        broker.spawn();
        broker
    }

    /// Starts a broker whose topics live in a SQLite database (tansu's `libsql` feature), so
    /// what it acknowledged before [`Tansu::stop`] is still there after [`Tansu::restart`].
    ///
    /// # Panics
    ///
    /// When `tansu` is missing, was built without `libsql`, or does not open its port.
    #[must_use]
    pub fn start_durable() -> Self {
        let dir = tempfile::tempdir().expect("a tansu directory");
        let port = free_port();
        let mut broker = Self {
            port,
            advertised: port,
            child: None,
            storage: "sqlite://tansu.db".to_owned(),
            dir: Some(dir),
            authentication: false,
            tls: None,
        };
        broker.spawn();
        broker
    }

    /// Starts a broker as managed Kafka is reached: TLS (a certificate from `pki`'s CA, for
    /// `localhost` and `127.0.0.1`) and SASL required, with `users` as its SCRAM credentials.
    /// tansu 0.6 serves SCRAM only: PLAIN and OAUTHBEARER are refused (`NoSharedMechanism`).
    ///
    /// tansu 0.6 takes `--cert`/`--key` but never wraps a connection in TLS, so the TLS endpoint
    /// is `stunnel` in front of it, and the broker advertises stunnel's port. The users are
    /// created through the broker (`tansu user create`) before authentication is switched on,
    /// in its SQLite storage.
    ///
    /// # Panics
    ///
    /// When `tansu` or `stunnel4` is missing, or a user cannot be created.
    #[must_use]
    pub fn start_secure(pki: &TestPki, users: &[ScramUser<'_>]) -> Self {
        let mut broker = Self::start_durable();
        let port = broker.port;
        for user in users {
            let output = Command::new(tansu_binary())
                .args([
                    "user",
                    "create",
                    "--broker",
                    &format!("tcp://127.0.0.1:{port}"),
                    "--mechanism",
                    user.mechanism,
                    user.name,
                    user.password,
                ])
                .output()
                .expect("tansu user create runs");
            assert!(
                output.status.success(),
                "tansu user create {}: {}",
                user.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        broker.stop();
        let tls_port = free_port();
        broker.advertised = tls_port;
        broker.authentication = true;
        broker.spawn();
        broker.tls = Some(TlsTerminator::start(pki, tls_port, port));
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // Behind TLS, the name the certificate is for.
        let host = if self.authentication {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let advertised = format!("tcp://{host}:{}", self.advertised);
        let mut command = Command::new(tansu_binary());
        if let Some(dir) = &self.dir {
            command.current_dir(dir.path());
        }
        self.child = Some(launch(
            command
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                    "--storage-engine",
                    &self.storage,
                ])
                .args(self.authentication.then_some("--authentication")),
            self.port,
            Duration::from_secs(30),
            "tansu",
        ));
    }

    /// `127.0.0.1:port`, for `bootstrap.servers` (the advertised port: a proxy's, when the
    /// broker was started behind one); `localhost:port` of the TLS endpoint for
    /// [`Tansu::start_secure`].
    #[must_use]
    pub fn bootstrap(&self) -> String {
        match &self.tls {
            Some(tls) => format!("localhost:{}", tls.port),
            None => format!("127.0.0.1:{}", self.advertised),
        }
    }

    /// The broker's process id while it runs (for reading its CPU time in benchmarks).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it again on the same port (empty with memory storage, as it was with SQLite).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}
