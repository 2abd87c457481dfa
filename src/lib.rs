//! vodbridge, the service: carries Tencent Cloud VOD event notifications into message brokers.
//!
//! # Brief overview
//!
//! [`config::Config`] is read from TOML and `VODBRIDGE_…` environment variables and validated
//! into [`config::Settings`]. [`App`] builds the sinks and the [`vodbridge_core::Pipeline`],
//! binds one HTTP listener and serves:
//!
//! - `POST /callback/{source}`: VOD's normal callback (push). The body is read once, checked
//!   (IP allow-list, token, `Sign`/`T`), normalized into an envelope, and delivered; the answer
//!   is 200 only after every routed sink acknowledged.
//! - Pull sources: loops call `PullEvents`, deliver each event under a deadline inside its
//!   30 s handle lifetime, and a confirmer calls `ConfirmEvents` for acknowledged events only.
//! - `/metrics`, `/healthz`, `/readyz`: Prometheus text, liveness, readiness.
//!
//! With `[delivery] shared_record`, the record of what each broker already acknowledged lives
//! in Redis/Valkey or NATS KV (`record`), read before each batch and written after each ack, so
//! a redelivery to another replica skips what is already held.
//!
//! On shutdown, [`App::run_until`] turns readiness false, stops accepting, lets in-flight
//! callbacks finish within the drain timeout, then flushes and closes the sinks.
#![forbid(unsafe_code)]

mod app;
pub mod config;
mod error;
mod record;
mod server;
pub mod sinks;
mod sources;
mod spool;
mod state;
pub mod telemetry;
pub mod tools;
mod vod_check;

pub use app::{App, Progress};
pub use error::{Error, Result};
pub use record::check as check_shared_record;
pub use sources::push::{EVENT_ID_HEADER, TOKEN_HEADER};
pub use tools::{asyncapi, demo};
