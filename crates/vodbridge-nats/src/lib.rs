//! NATS JetStream sink of vodbridge over async-nats: `publish` resolves on the stream's PubAck,
//! with `Nats-Msg-Id` = the envelope id so the stream drops redeliveries inside its duplicate
//! window.
//!
//! # Brief overview
//!
//! The three broker crates (Kafka, AMQP, NATS) have the same parts, in the same files:
//!
//! - **Configuration** (`config.rs`): [`NatsSinkConfig`] is the `type = "nats"` section;
//!   [`NatsSinkConfig::validate`] checks everything the constructor checks, without connecting,
//!   so `check-config` and `run` agree.
//! - **Lifecycle** (`sink.rs`): [`NatsSink::start`]`(name, config, background)` reads the
//!   credentials and returns at once; a task (under the [`vodbridge_core::Background`] it was
//!   given) creates the client, which connects and reconnects by itself, and checks, or
//!   creates, the configured stream. `close()` stops the stream checks, waits for them, and
//!   flushes the client.
//! - **Publishing**: [`NatsSink`] implements [`vodbridge_core::Sink`]. The subject is the
//!   route's destination (default `vod.{event_type}`, see
//!   [`vodbridge_core::default_destination`]), and the event travels in CloudEvents binary mode
//!   (`ce-*` headers, body = `data`) or structured mode. A dead letter carries
//!   `ce-deadletter*` headers.
//! - **Failures** (`error.rs`): [`classify`] is the one place a client error becomes retryable
//!   or rejected.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod redrive;
mod sink;

pub use config::{NatsSinkConfig, StorageKind};
pub use error::{classify, Error, Result};
pub use redrive::redrive;
pub use sink::NatsSink;
