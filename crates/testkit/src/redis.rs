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

    fn spawned(password: Option<String>) -> Self {
        let mut server = Self {
            port: free_port(),
            password,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require("redis-server", "redis-server");
        let mut command = Command::new(binary);
        command
            .current_dir(self.dir.path())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
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

    /// `redis://[:password@]127.0.0.1:port`.
    #[must_use]
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
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
