//! Configuration in three parts: the file as written (`raw.rs`), the validated settings the
//! service runs on (`settings.rs`), and the description `check-config` prints (`describe.rs`).

mod describe;
mod raw;
mod record;
mod settings;

pub use raw::*;
pub use record::{SharedRecordSettings, StoreKind};
pub use settings::*;

/// Prefix of environment variables that override config keys; `__` separates levels, e.g.
/// `VODBRIDGE_SERVER__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "VODBRIDGE_";
