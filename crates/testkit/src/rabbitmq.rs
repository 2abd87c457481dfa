//! A RabbitMQ node of its own (`rabbitmq-server`): started, stopped, crashed and restarted.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::process::{free_port, kill_child, launch, require, wait_for_port};
use crate::TestPki;

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
