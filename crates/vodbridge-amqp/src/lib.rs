//! AMQP 0-9-1 (RabbitMQ) sink of vodbridge over lapin: `publish` resolves on the broker's
//! publisher confirm; publishes are `mandatory` (an unroutable message is a failure, never a
//! silent success) and persistent.
//!
//! # Brief overview
//!
//! The three broker crates (Kafka, AMQP, NATS) have the same parts, in the same files:
//!
//! - **Configuration** (`config.rs`): [`AmqpSinkConfig`] is the `type = "amqp"` section;
//!   [`AmqpSinkConfig::validate`] checks everything the constructor checks, without connecting,
//!   so `check-config` and `run` agree.
//! - **Lifecycle** (`sink.rs`): [`AmqpSink::start`]`(name, config, background)` returns at once;
//!   a supervisor (under the [`vodbridge_core::Background`] it was given) connects and
//!   reconnects with backoff, declares or checks the exchange, and keeps a small pool of
//!   confirm-mode channels. `close()` stops the supervisor, waits for it, and closes the
//!   connection.
//! - **Publishing**: [`AmqpSink`] implements [`vodbridge_core::Sink`]. The routing key is the
//!   route's destination (default `vod.{event_type}`, see
//!   [`vodbridge_core::default_destination`]), and the event travels in CloudEvents binary mode
//!   (`cloudEvents_*` headers, body = `data`) or structured mode. A dead letter carries
//!   `cloudEvents_deadletter*` headers.
//! - **Failures** (`error.rs`): [`classify`] is the one place a client error becomes retryable
//!   or rejected.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod redrive;
mod sink;

pub use config::{AmqpSinkConfig, ExchangeType};
pub use error::{classify, classify_confirmation, Error, Result};
pub use redrive::redrive;
pub use sink::AmqpSink;
