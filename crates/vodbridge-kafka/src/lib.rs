//! Kafka sink of vodbridge over rdkafka's `FutureProducer`: `publish` resolves on the delivery
//! report, with `acks=all` and idempotence on by default.
//!
//! # Brief overview
//!
//! [`KafkaSink::new`] creates the producer (librdkafka connects and reconnects by itself) and a
//! health probe that fetches metadata. [`KafkaSink`] implements [`vodbridge_core::Sink`]: the
//! topic is the route's destination (default `vod.{event_type}`), the key is the envelope's
//! `partitionkey` (the FileId, so one video's events stay in one partition, in order), and the
//! event travels in CloudEvents binary mode (`ce_*` headers, `content-type`, value = `data`) or
//! structured mode. [`classify`] is the one place Kafka errors become retryable or rejected.
//! [`KafkaSinkConfig`] is the `type = "kafka"` configuration, with librdkafka properties passed
//! through; [`KafkaSinkConfig::validate`] checks it without connecting, as the constructor does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod sink;

pub use config::KafkaSinkConfig;
pub use error::{classify, Error, Result};
pub use sink::KafkaSink;
