//! Redrive: putting dead-lettered events back through the routes. A broker crate reads its
//! dead-letter location and offers each message to a [`RedriveTarget`]; the message is
//! acknowledged (removed, or its offset committed) only when the target says it was published
//! again, so a message that fails again stays where it was.

use futures_util::future::BoxFuture;

use crate::{binding::DeadLetterInfo, envelope::Envelope};

/// One message read from a dead-letter location: the envelope and its dead-letter
/// extensions, or why it could not be decoded.
pub type RedriveMessage = std::result::Result<(Envelope, Option<DeadLetterInfo>), String>;

/// Where a reader hands what it reads.
pub trait RedriveTarget: Send {
    /// How many messages the location holds, once the reader knows (for progress).
    fn total(&mut self, messages: u64);

    /// Offers one message. `true`: it is published again (or the routes drop it) and the
    /// reader may acknowledge it; `false`: leave it where it is.
    fn offer(&mut self, message: RedriveMessage) -> BoxFuture<'_, bool>;

    /// True once the target wants no more messages (a `--limit` reached).
    fn is_done(&self) -> bool {
        false
    }
}
