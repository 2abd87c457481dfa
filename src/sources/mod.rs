//! The sources: where events come in. `push` answers VOD's normal callbacks (and spools them
//! when asked), `forward` drains the spool, `pull` drains VOD's reliable-callback queue (both
//! deliver in order per video with `vodbridge_core::in_order`).

mod backoff;
pub(crate) mod forward;
pub(crate) mod pull;
pub(crate) mod push;
