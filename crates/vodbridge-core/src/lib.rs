//! Broker- and provider-neutral heart of vodbridge: the envelope, the sink contract and the routing pipeline.
//!
//! # Brief overview
//!
//! Every event that enters vodbridge becomes one [`Envelope`] (a CloudEvents 1.0 event with a
//! content-derived [`EventId`]). The [`Pipeline`] looks the envelope's event type up in its
//! [`RouteTable`], publishes a [`Message`] to every routed [`Sink`] at once under one deadline,
//! and merges the per-sink results into one [`Outcome`] where the worst result wins. A permanent
//! failure ([`SinkError::Rejected`]) goes to the dead-letter destination when one is configured.
//!
//! The caller turns the outcome into the provider's answer in one place: only an outcome for which
//! [`Outcome::is_handled`] is true may be acknowledged upstream (an HTTP 200, a `ConfirmEvents`).
//!
//! [`inline_or_file`] loads the secrets of every configuration section the same way.
//!
//! This crate knows no broker, no HTTP and no provider, so the acknowledgement rules can be tested
//! without a network.
//!
//! ```
//! use std::sync::Arc;
//! use vodbridge_core::{Outcome, SinkError, FailureReason};
//!
//! let ok = Outcome::Delivered;
//! let transient = Outcome::from(SinkError::retryable(FailureReason::Timeout, "no ack in 4s"));
//! // A transient failure anywhere means the event must come back: it is the worse outcome.
//! assert!(!ok.clone().merge(transient).is_handled());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod background;
mod best_effort;
mod binding;
mod envelope;
mod error;
mod failure;
mod ordered;
mod outcome;
mod pipeline;
mod publish;
mod redact;
mod redrive;
mod route;
mod secret;
mod shared_record;
mod sink;
mod sink_record;
mod stall;
mod trace;

pub use background::Background;
pub use best_effort::{
    BestEffortSettings, BreakerState, DropReason, LaneObserver, LaneStatus, LaneStore,
    StoredPublish,
};
pub use binding::{DeadLetterInfo, HeaderStyle};
pub use envelope::{Envelope, EventId, Ingress, SPEC_VERSION};
pub use error::{Error, Result};
pub use failure::{FailureReason, SinkError};
pub use ordered::{in_order, InOrder};
pub use outcome::Outcome;
pub use pipeline::{DeliveryReport, Pipeline, SinkClosed};
pub use publish::{Queued, SinkAttempt, UnroutableRetry};
pub use redact::redact_url;
pub use redrive::{RedriveMessage, RedriveTarget};
pub use route::{
    default_destination, push_token, EventTypePattern, Resolution, Route, RouteAction,
    RouteContext, RouteTable, Target, Template,
};
pub use secret::{inline_or_file, read_secret_file};
pub use shared_record::{RecordKey, SharedRecord};
pub use sink::{Message, PublishFuture, Sink};
pub use sink_record::SinkRecord;
pub use stall::{Pending, StallWatch};
pub use trace::TraceParent;

/// The `tracing` target of the spans that are exported as OpenTelemetry spans (receive,
/// normalize, publish per sink, confirm). The application routes them to its exporter only:
/// without one they are disabled at their call sites and cost nothing.
pub const TRACE_TARGET: &str = "vodbridge::trace";
