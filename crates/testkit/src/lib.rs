//! Test harness: real broker and store processes (NATS, RabbitMQ, tansu for Kafka, Redis) on free loopback ports,
//! each with its own data directory, stopped when dropped; one module per process kind. A missing
//! broker binary panics with the package to install, never skips. [`contract`] is the sink
//! contract each broker crate runs against its broker.
#![forbid(unsafe_code)]

mod bridge;
pub mod contract;
mod nats;
mod pki;
mod process;
mod proxy;
mod rabbitmq;
#[cfg(feature = "amqp")]
pub mod rabbitmq_client;
mod redis;
mod tansu;
#[cfg(feature = "kafka")]
pub mod tansu_client;

pub use bridge::BridgeProcess;
pub use nats::NatsServer;
pub use pki::TestPki;
pub use process::free_port;
pub use proxy::SilentProxy;
pub use rabbitmq::RabbitMq;
pub use redis::RedisServer;
pub use tansu::{ScramUser, Tansu};
