//! NATS JetStream sink of vodbridge: `publish` resolves on the stream's PubAck, with
//! `Nats-Msg-Id` = the envelope id so the stream drops redeliveries inside its duplicate window.
//!
//! # Brief overview
//!
//! [`NatsSink::connect`] starts a client that connects (and reconnects) in the background and
//! checks, or creates, the configured stream once connected. [`NatsSink`] implements
//! [`vodbridge_core::Sink`]: the message goes to the route's subject (default
//! `vod.{event_type}`) in CloudEvents binary mode (`ce-*` headers, body = `data`) or structured
//! mode, and every failure is classified once in [`classify`]. [`NatsSinkConfig`] is the
//! `type = "nats"` section of the bridge configuration; [`NatsSinkConfig::validate`] checks it
//! without connecting, as the constructor does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod sink;

pub use config::{NatsSinkConfig, StorageKind};
pub use error::{classify, Error, Result};
pub use sink::NatsSink;
