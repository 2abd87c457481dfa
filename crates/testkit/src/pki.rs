//! A throw-away certificate authority for TLS tests: a CA, a server certificate for
//! `localhost` / `127.0.0.1` and a client certificate, made with the `openssl` command.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::process::require;

/// PEM files of a test CA and the certificates it signed, in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates the CA (P-256 keys, valid two days), a server certificate with the SANs
    /// `localhost` and `127.0.0.1`, and a client certificate (`CN=vodbridge-client`).
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails.
    #[must_use]
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vodbridge-pki")
            .tempdir()
            .expect("tempdir");
        let pki = Self { dir };
        let d = pki.dir.path();
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write");
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
        .expect("write");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=vodbridge test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, subject) in [
            ("server", "/CN=localhost"),
            ("client", "/CN=vodbridge-client"),
        ] {
            sign(d, name, subject);
        }
        pki
    }

    /// The CA certificate (PEM).
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    #[must_use]
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server key (PEM).
    #[must_use]
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The client certificate (PEM).
    #[must_use]
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client key (PEM).
    #[must_use]
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// Copies the server's files (CA, certificate, key) into `dir`, for a broker that must own
    /// them; returns the copies' paths in that order.
    ///
    /// # Panics
    ///
    /// When a copy fails.
    #[must_use]
    pub fn server_files_in(&self, dir: &Path) -> [PathBuf; 3] {
        [self.ca(), self.server_cert(), self.server_key()].map(|from| {
            let to = dir.join(from.file_name().expect("a file name"));
            std::fs::copy(&from, &to).expect("copy a certificate file");
            to
        })
    }
}

/// A key and a certificate `{name}.pem` for `subject`, signed by the CA in `d` with the
/// extensions of `{name}.ext`.
fn sign(d: &Path, name: &str, subject: &str) {
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let binary = require("openssl", "openssl");
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr)
    );
}
