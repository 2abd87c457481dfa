//! A `nats-server -js` process: plain, with a token, or with TLS and client certificates.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use crate::process::{free_port, kill_child, launch, require};
use crate::TestPki;

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
