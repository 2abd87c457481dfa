//! Test harness: real broker processes (NATS, RabbitMQ, tansu for Kafka) on free loopback ports, each with its own data
//! directory, stopped when dropped. A missing broker binary panics with the package to install,
//! never skips.
#![forbid(unsafe_code)]

mod pki;
mod proxy;

pub use pki::TestPki;
pub use proxy::SilentProxy;

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

/// Starts `command` quietly and waits until it opens `port`. With `TESTKIT_LOG` set in the
/// environment, the standard error of the process named `what` (e.g. `TESTKIT_LOG=vodbridge`,
/// or `all`) goes to the test's, to debug a failing test.
fn launch(command: &mut Command, port: u16, timeout: Duration, what: &str) -> Child {
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
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `nats-server -js` process.
pub struct NatsServer {
    /// Client port.
    pub port: u16,
    /// JetStream storage directory (kept across [`NatsServer::restart`]).
    store: tempfile::TempDir,
    /// CA, certificate and key when TLS (with client verification) is on.
    tls: Option<[PathBuf; 3]>,
    /// The token clients must present, if any.
    token: Option<String>,
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
            tls: None,
            token: None,
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts a JetStream-enabled server that only accepts clients presenting `token`.
    ///
    /// # Panics
    ///
    /// When `nats-server` is missing or does not start.
    #[must_use]
    pub fn start_with_token(token: &str) -> Self {
        let store = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            port: free_port(),
            store,
            tls: None,
            token: Some(token.to_owned()),
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts a JetStream-enabled server that requires TLS and a client certificate signed
    /// by `pki`'s CA.
    ///
    /// # Panics
    ///
    /// When `nats-server` is missing or does not start.
    #[must_use]
    pub fn start_tls(pki: &TestPki) -> Self {
        let store = tempfile::tempdir().expect("tempdir");
        let tls = Some(pki.server_files_in(store.path()));
        let mut server = Self {
            port: free_port(),
            store,
            tls,
            token: None,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require("nats-server", "nats-server");
        self.child = Some(launch(
            Command::new(binary)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(self.store.path())
                .args(self.token.iter().flat_map(|t| ["--auth", t.as_str()]))
                .args(self.tls.iter().flat_map(|[ca, cert, key]| {
                    [
                        "--tlsverify".as_ref(),
                        "--tlscacert".as_ref(),
                        ca.as_os_str(),
                        "--tlscert".as_ref(),
                        cert.as_os_str(),
                        "--tlskey".as_ref(),
                        key.as_os_str(),
                    ]
                })),
            self.port,
            Duration::from_secs(20),
            "nats-server",
        ));
    }

    /// `nats://127.0.0.1:port`, or `tls://127.0.0.1:port` when started with TLS.
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (for reading its CPU time in benchmarks).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL: like a crash; file storage must keep acknowledged messages).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
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

/// A RabbitMQ node (`rabbitmq-server`) with its own node name, ports and data directory.
///
/// The Debian script switches to the `rabbitmq` user when run as root, so the directory is
/// handed to that user. The data directory is kept for [`RabbitMq::restart`].
pub struct RabbitMq {
    /// AMQP port.
    pub port: u16,
    /// AMQPS port, when started with TLS.
    pub tls_port: Option<u16>,
    dist_port: u16,
    node: String,
    /// Running, app stopped, or VM killed.
    state: RabbitState,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RabbitMq {
    /// The node's `max_message_size` (bytes): larger publishes are refused by the broker.
    pub const MAX_MESSAGE_SIZE: usize = 512 * 1024;

    /// Starts a node on free ports; returns once it accepts AMQP connections (about 5 s).
    ///
    /// # Panics
    ///
    /// When `rabbitmq-server` is missing or does not start within 90 s.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a node that also listens for AMQPS, with `pki`'s server certificate, and
    /// requires a client certificate signed by `pki`'s CA there.
    ///
    /// # Panics
    ///
    /// When `rabbitmq-server` is missing or does not start within 90 s.
    #[must_use]
    pub fn start_tls(pki: &TestPki) -> Self {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&TestPki>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vodbridge-rabbitmq")
            .tempdir()
            .expect("tempdir");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("write");
        // Messages are capped at MAX_MESSAGE_SIZE so tests can hit the limit cheaply.
        let mut conf = format!("max_message_size = {}\n", Self::MAX_MESSAGE_SIZE);
        let tls_port = pki.map(|pki| {
            let port = free_port();
            let [ca, cert, key] = pki.server_files_in(dir.path());
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n",
                ca.display(),
                cert.display(),
                key.display()
            ));
            port
        });
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        if root {
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir.path())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot give {} to the rabbitmq user",
                dir.path().display()
            );
        }
        let port = free_port();
        let mut node = Self {
            port,
            tls_port,
            dist_port: free_port(),
            node: format!("vodbridge{port}@localhost"),
            state: RabbitState::Running,
            dir,
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let binary = require("rabbitmq-server", "rabbitmq-server");
        let d = self.dir.path();
        let mut command = Command::new(binary);
        command.env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"));
        self.child = Some(launch(
            command
                .env("RABBITMQ_NODENAME", &self.node)
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", self.port.to_string())
                .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
                .env("RABBITMQ_FEATURE_FLAGS_FILE", d.join("feature_flags"))
                .env("RABBITMQ_PID_FILE", d.join("pid")),
            self.port,
            Duration::from_secs(90),
            "rabbitmq-server",
        ));
        if let Some(port) = self.tls_port {
            wait_for_port(port, Duration::from_secs(30), "rabbitmq-server (TLS)");
        }
    }

    /// `amqp://guest:guest@127.0.0.1:port/%2f`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://guest:guest@127.0.0.1:tls_port/%2f`, when started with TLS.
    #[must_use]
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@127.0.0.1:{port}/%2f"))
    }

    /// Stops the broker (`rabbitmqctl stop_app`: connections drop, the port closes, queues are
    /// written out); [`RabbitMq::restart`] brings it back with the same data.
    pub fn stop(&mut self) {
        let ctl = require("rabbitmqctl", "rabbitmq-server");
        let stopped = Command::new(ctl)
            .args(["-n", &self.node, "stop_app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(stopped, "rabbitmqctl -n {} stop_app failed", self.node);
        self.state = RabbitState::AppStopped;
        self.wait_port_closed();
    }

    /// The Erlang VM's process id (from its pid file; the Debian script runs it under `su`, so
    /// it is not the child), for reading the broker's CPU time in benchmarks.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// Crashes the broker: SIGKILL of the Erlang VM, nothing written out. [`RabbitMq::restart`]
    /// boots a new node on the same data directory (it recovers the durable queues).
    pub fn crash(&mut self) {
        self.kill();
        self.state = RabbitState::Killed;
        self.wait_port_closed();
    }

    fn wait_port_closed(&self) {
        let started = Instant::now();
        while TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(100),
        )
        .is_ok()
            && started.elapsed() < Duration::from_secs(20)
        {
            sleep(Duration::from_millis(50));
        }
    }

    /// Kills the node and its Erlang VM (which runs in its own session: the Debian script su's
    /// to rabbitmq), matched by node name.
    fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        let node_name = self.node.split('@').next().unwrap_or_default().to_owned();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &node_name])
            .status();
        kill_child(&mut self.child);
    }

    /// Starts the broker again on the same ports and data.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        match self.state {
            RabbitState::Running => self.stop(),
            RabbitState::AppStopped => {}
            RabbitState::Killed => {
                self.spawn();
                self.state = RabbitState::Running;
                return;
            }
        }
        let ctl = require("rabbitmqctl", "rabbitmq-server");
        let started = Command::new(ctl)
            .args(["-n", &self.node, "start_app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(started, "rabbitmqctl -n {} start_app failed", self.node);
        self.state = RabbitState::Running;
        wait_for_port(self.port, Duration::from_secs(60), "rabbitmq-server");
        if let Some(port) = self.tls_port {
            wait_for_port(port, Duration::from_secs(30), "rabbitmq-server (TLS)");
        }
    }
}

/// Where a [`RabbitMq`] node is between stop/crash and restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RabbitState {
    Running,
    /// `rabbitmqctl stop_app`: the VM runs, the app does not.
    AppStopped,
    /// The VM was killed.
    Killed,
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
    }
}

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
    /// PLAIN is served too, but tansu 0.6 checks no PLAIN password (any is accepted): a
    /// wrong-password test needs SCRAM.
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
