//! AMQP 0-9-1 (RabbitMQ) sink of vodbridge: `publish` resolves on the broker's publisher
//! confirm, publishes are `mandatory` so an unroutable message is a failure, never a silent
//! success, and messages are persistent.
//!
//! # Brief overview
//!
//! [`AmqpSink::connect`] starts a supervisor that connects (and reconnects with backoff),
//! declares or checks the exchange, and opens a small pool of confirm-mode channels.
//! [`AmqpSink`] implements [`vodbridge_core::Sink`]: the route's destination is the routing key,
//! CloudEvents attributes travel as `cloudEvents_*` headers (binary mode, body = `data`) or the
//! whole envelope is the body (structured mode). [`classify`] is the one place broker failures
//! become retryable or rejected. [`AmqpSinkConfig`] is the `type = "amqp"` configuration;
//! [`AmqpSinkConfig::validate`] checks it without connecting, as the constructor does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod sink;

pub use config::{AmqpSinkConfig, ExchangeType};
pub use error::{classify, Error, Result};
pub use sink::AmqpSink;
