//! Tencent Cloud VOD on the vodbridge side: the event model, normalization into the envelope,
//! and callback authentication.
//!
//! # Brief overview
//!
//! A body from VOD (a normal-callback POST, or one element of a `PullEvents` answer) is read once
//! with [`RawEvent::parse`], which reads it once into a flat token tape and exposes the delivery-only
//! fields (`EventHandle`, `Sign`, `T`). A [`Normalizer`], one per configured source, turns it into
//! a [`vodbridge_core::Envelope`] with the content-derived id. [`SignKey`] checks a callback's
//! `Sign`/`T`. Consumers decode an envelope's `data` with [`EventContent`] into a [`VodEvent`].
//! [`catalog`] lists the EventTypes VOD documents; the set is open and unknown types pass through.
//! [`api::VodClient`] calls `PullEvents`/`ConfirmEvents`, paced per account by a
//! [`governor::Governor`] that adapts to VOD's request limits.
//!
//! ```
//! use bytes::Bytes;
//! use time::OffsetDateTime;
//! use vodbridge_core::Ingress;
//! use vodbridge_tencent::{Normalizer, RawEvent};
//!
//! let body = Bytes::from_static(br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["37"]}}"#);
//! let event = RawEvent::parse(&body)?;
//! let normalizer = Normalizer::new("/tencentcloud/vod/1500000001", Some(1500000001), Ingress::Push);
//! let envelope = normalizer.normalize(event, OffsetDateTime::now_utc())?;
//! assert_eq!(envelope.ty, "com.tencentcloud.vod.FileDeleted");
//! assert_eq!(envelope.subject.as_deref(), Some("37"));
//! assert_eq!(envelope.data, body);
//! # Ok::<(), vodbridge_tencent::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
mod callback_auth;
#[cfg(any(test, feature = "oracle"))]
mod canonical;
pub mod catalog;
mod error;
mod event;
pub mod event_config;
pub mod governor;
mod model;
pub mod sub_apps;
mod tape;
pub mod tc3;

/// The tape canonicalizer beside the tree one it replaced, for differential fuzzing (feature
/// `oracle`). Both return the canonical form of a body that must be a JSON object, or why not.
#[cfg(feature = "oracle")]
#[doc(hidden)]
pub mod differential {
    use crate::tape::{canonical_form, Duplicates};

    /// The tape, strict (a key twice refused).
    pub fn tape_strict(text: &str) -> Result<Vec<u8>, String> {
        canonical_form(text, Duplicates::Refuse)
    }

    /// The tape, lenient (a key twice: the last wins).
    pub fn tape_lenient(text: &str) -> Result<Vec<u8>, String> {
        canonical_form(text, Duplicates::LastWins)
    }

    /// The tree canonicalizer, strict.
    pub fn oracle_strict(text: &str) -> Result<Vec<u8>, String> {
        crate::canonical::oracle(text)
    }

    /// `serde_json::Value`, lenient.
    pub fn oracle_lenient(text: &str) -> Result<Vec<u8>, String> {
        crate::canonical::oracle_lenient(text)
    }
}

pub use callback_auth::SignKey;
pub use error::{Error, Result};
pub use event::{Normalizer, RawEvent, Salvaged, INVALID_EVENT_TYPE, LEGACY_TYPE, TYPE_PREFIX};
pub use model::{
    AudioStream, DeletePart, EditMediaFileInfo, EditMediaTask, EditMediaTaskInput,
    EditMediaTaskOutput, EventContent, FileDeleteResultInfo, FileDeleteTask, FileUploadTask,
    MediaBasicInfo, MediaMetaData, MediaSourceData, ProcedureTask, PullUploadTask, VideoStream,
    VodEvent, WechatPublishTask,
};
