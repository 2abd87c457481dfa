//! The emulator's error type: startup failures and API 3.0 error answers.

/// Errors of the emulator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    /// An API 3.0 error answer (`Response.Error`).
    #[error("{code}: {message}")]
    Api {
        /// e.g. `AuthFailure.SignatureFailure`.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
}

impl Error {
    /// An API error answer.
    pub fn api(code: &'static str, message: impl Into<String>) -> Self {
        Self::Api {
            code,
            message: message.into(),
        }
    }
}

/// Result with the emulator [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
