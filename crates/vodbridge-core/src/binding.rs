//! The CloudEvents protocol bindings' names: how each broker's binary mode names an attribute's
//! header ([`HeaderStyle`]), and the dead-letter extension attributes ([`DeadLetterInfo`]).

use std::borrow::Cow;

use crate::failure::FailureReason;

/// How a binary-mode protocol binding names an attribute's header: `ce_id` (Kafka),
/// `cloudEvents_id` (AMQP), `ce-id` (NATS, as HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `ce_` prefix (CloudEvents Kafka binding).
    Kafka,
    /// `cloudEvents_` prefix (CloudEvents AMQP binding).
    Amqp,
    /// `ce-` prefix (CloudEvents HTTP binding, used for NATS headers).
    Nats,
}

/// Every attribute [`Envelope::attributes`] yields, plus the dead-letter extensions, with its
/// header name in each [`HeaderStyle`].
const HEADER_NAMES: [[&str; 4]; 16] = [
    [
        "specversion",
        "ce_specversion",
        "cloudEvents_specversion",
        "ce-specversion",
    ],
    ["id", "ce_id", "cloudEvents_id", "ce-id"],
    ["source", "ce_source", "cloudEvents_source", "ce-source"],
    ["type", "ce_type", "cloudEvents_type", "ce-type"],
    ["subject", "ce_subject", "cloudEvents_subject", "ce-subject"],
    ["time", "ce_time", "cloudEvents_time", "ce-time"],
    [
        "vodeventtype",
        "ce_vodeventtype",
        "cloudEvents_vodeventtype",
        "ce-vodeventtype",
    ],
    [
        "vodsubappid",
        "ce_vodsubappid",
        "cloudEvents_vodsubappid",
        "ce-vodsubappid",
    ],
    [
        "vodingress",
        "ce_vodingress",
        "cloudEvents_vodingress",
        "ce-vodingress",
    ],
    [
        "vodtaskid",
        "ce_vodtaskid",
        "cloudEvents_vodtaskid",
        "ce-vodtaskid",
    ],
    [
        "partitionkey",
        "ce_partitionkey",
        "cloudEvents_partitionkey",
        "ce-partitionkey",
    ],
    [
        "traceparent",
        "ce_traceparent",
        "cloudEvents_traceparent",
        "ce-traceparent",
    ],
    [
        "deadletterreason",
        "ce_deadletterreason",
        "cloudEvents_deadletterreason",
        "ce-deadletterreason",
    ],
    [
        "deadletterdetail",
        "ce_deadletterdetail",
        "cloudEvents_deadletterdetail",
        "ce-deadletterdetail",
    ],
    [
        "deadlettersink",
        "ce_deadlettersink",
        "cloudEvents_deadlettersink",
        "ce-deadlettersink",
    ],
    [
        "deadletterdestination",
        "ce_deadletterdestination",
        "cloudEvents_deadletterdestination",
        "ce-deadletterdestination",
    ],
];

impl HeaderStyle {
    /// The prefix this style puts before an attribute name.
    #[must_use]
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Kafka => "ce_",
            Self::Amqp => "cloudEvents_",
            Self::Nats => "ce-",
        }
    }

    /// The header carrying attribute `name`: borrowed for every attribute the bridge writes
    /// (publishing allocates no header names), built for any other.
    #[must_use]
    pub fn header_name(self, name: &str) -> Cow<'static, str> {
        let column = match self {
            Self::Kafka => 1,
            Self::Amqp => 2,
            Self::Nats => 3,
        };
        HEADER_NAMES.iter().find(|row| row[0] == name).map_or_else(
            || Cow::Owned(format!("{}{name}", self.prefix())),
            |row| Cow::Borrowed(row[column]),
        )
    }
}

/// Why a message was sent to the dead-letter destination; sinks carry it as headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Bounded reason label.
    pub reason: FailureReason,
    /// Human-readable detail from the sink that rejected the message.
    pub detail: String,
    /// The sink that rejected the message.
    pub failed_sink: String,
    /// The destination that rejected the message.
    pub failed_destination: String,
}

impl DeadLetterInfo {
    /// Reads the dead-letter extensions back: `None` when `attribute` has no
    /// `deadletterreason` (a message that is no dead letter).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Decode`] for a reason that is no [`FailureReason`].
    pub fn from_attributes<'a>(
        attribute: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>,
    ) -> crate::Result<Option<Self>> {
        let Some(reason) = attribute("deadletterreason") else {
            return Ok(None);
        };
        let text = |name: &str| attribute(name).map(|v| v.into_owned()).unwrap_or_default();
        Ok(Some(Self {
            reason: reason.parse()?,
            detail: text("deadletterdetail"),
            failed_sink: text("deadlettersink"),
            failed_destination: text("deadletterdestination"),
        }))
    }

    /// The dead-letter extension attributes, in a fixed order: what every sink writes, as
    /// headers in binary mode (with its binding's prefix, [`crate::HeaderStyle`]) or as members
    /// of the structured-mode JSON. Empty values (no sink failed: the body itself was unusable)
    /// are still written, so consumers see one shape.
    #[must_use]
    pub fn attributes(&self) -> [(&'static str, &str); 4] {
        [
            ("deadletterreason", self.reason.as_str()),
            ("deadletterdetail", self.detail.as_str()),
            ("deadlettersink", self.failed_sink.as_str()),
            ("deadletterdestination", self.failed_destination.as_str()),
        ]
    }
}
