//! Kafka sink of vodbridge over rdkafka's `FutureProducer`: `publish` resolves on the delivery
//! report, with `acks=all` and idempotence on by default.
//!
//! # Brief overview
//!
//! The three broker crates (Kafka, AMQP, NATS) have the same parts, in the same files:
//!
//! - **Configuration** (`config.rs`): [`KafkaSinkConfig`] is the `type = "kafka"` section, with
//!   librdkafka properties passed through; [`KafkaSinkConfig::validate`] checks everything the
//!   constructor checks, without connecting, so `check-config` and `run` agree.
//! - **Lifecycle** (`sink.rs`): [`KafkaSink::start`]`(name, config, background)` returns at once;
//!   librdkafka connects and reconnects by itself, and a metadata probe (under the
//!   [`vodbridge_core::Background`] it was given) reports health. `close()` stops the probe,
//!   waits for it, and flushes the producer.
//! - **Publishing**: [`KafkaSink`] implements [`vodbridge_core::Sink`]. The topic is the route's
//!   destination (default `vod.{event_type}`, see [`vodbridge_core::default_destination`]), the
//!   key is the envelope's `partitionkey` (the FileId: one video, one partition, in order), and
//!   the event travels in CloudEvents binary mode (`ce_*` headers, value = `data`) or
//!   structured mode. A dead letter carries `ce_deadletter*` headers.
//! - **Failures** (`error.rs`): [`classify`] is the one place a client error becomes retryable
//!   or rejected.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod redrive;
mod sink;

pub use config::KafkaSinkConfig;
pub use error::{classify, Error, Result};
pub use redrive::{redrive, REDRIVE_GROUP};
pub use sink::KafkaSink;
