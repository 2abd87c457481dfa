//! A `redis-server` process (Debian's package; Valkey speaks the same protocol) for the shared
//! delivery record's tests: in memory, optionally with a password.

use std::{
    process::{Child, Command},
    time::Duration,
};

use crate::process::{free_port, kill_child, launch, require};

/// A `redis-server` on a free loopback port, without persistence (a restart forgets every key,
/// as a crashed cache would).
pub struct RedisServer {
    /// Client port.
    pub port: u16,
    /// The password clients must give (`requirepass`), if any.
    password: Option<String>,
    /// Its working directory (no dump is written; keeps stray files out of the tree).
    dir: tempfile::TempDir,
    /// CA, certificate and key when it serves TLS only (no client certificate asked).
    tls: Option<[std::path::PathBuf; 3]>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without a password.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not start.
    #[must_use]
    pub fn start() -> Self {
        Self::spawned(None)
    }

    /// Starts a server that requires `password`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    #[must_use]
    pub fn start_with_password(password: &str) -> Self {
        Self::spawned(Some(password.to_owned()))
    }

    /// Starts a server that speaks TLS only, with a certificate `pki`'s CA signed.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    #[must_use]
    pub fn start_tls(pki: &crate::TestPki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = Some(pki.server_files_in(dir.path()));
        let mut server = Self {
            port: free_port(),
            password: None,
            dir,
            tls,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawned(password: Option<String>) -> Self {
        let mut server = Self {
            port: free_port(),
            password,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: None,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require("redis-server", "redis-server");
        let mut command = Command::new(binary);
        let port = self.port.to_string();
        command
            .current_dir(self.dir.path())
            .args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &port]),
            Some([ca, cert, key]) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        command.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(launch(
            &mut command,
            self.port,
            Duration::from_secs(20),
            "redis-server",
        ));
    }

    /// `redis://[:password@]127.0.0.1:port`, or `rediss://localhost:port` when it serves TLS
    /// (the name its certificate carries).
    #[must_use]
    pub fn url(&self) -> String {
        match (&self.password, &self.tls) {
            (_, Some(_)) => format!("rediss://localhost:{}", self.port),
            (Some(password), None) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            (None, None) => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Stops the server (SIGKILL, like a crash).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
