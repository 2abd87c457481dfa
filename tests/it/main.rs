//! End-to-end tests of the vodbridge service: the real HTTP wiring on port 0, real sinks, and
//! scripted sinks where a test must decide when and how a destination answers.

mod amqp;
mod best_effort;
mod cli;
mod config;
mod deploy;
mod edge;
mod event_types;
mod file_sink;
mod helpers;
mod kafka;
mod nats;
mod pull;
mod push;
mod redrive;
mod shared_record;
mod sub_apps;
mod tracing;
mod vod_config;
