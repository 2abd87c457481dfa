//! The sources: where events come in. `push` answers VOD's normal callbacks (and spools them
//! when asked), `forward` drains the spool, `pull` drains VOD's reliable-callback queue; `ordered` delivers in
//! order per video for both.

mod backoff;
pub(crate) mod forward;
mod ordered;
pub(crate) mod pull;
pub(crate) mod push;
