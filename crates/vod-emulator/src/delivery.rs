//! VOD's normal callback, as VOD delivers it: one event POSTed to the NotificationUrl with a
//! 5 s timeout, sent again only when no answer came, three sends at most. The admin handlers
//! (`/emulator/push`) and the event-configuration semantics (PUSH mode) both deliver through it.

use std::time::Duration;

use serde_json::Value;
use vodbridge_tencent::SignKey;

use crate::Shared;

/// VOD's callback timeout.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// VOD retries a timed-out callback twice.
const PUSH_ATTEMPTS: u32 = 3;

/// POSTs one event like VOD: 5 s timeout, sent again only when no answer came (a timeout or a
/// failed or dropped connection), three sends at most. The status and body of an answer are
/// ignored: any answer ends the event's delivery, and only a 200 is an acknowledgement.
pub(crate) async fn push_one(
    shared: &Shared,
    url: &str,
    key: u64,
    mut event: Value,
    sign_key: Option<&SignKey>,
) {
    if let (Some(key), Some(object)) = (sign_key, event.as_object_mut()) {
        let t = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        object.insert("Sign".into(), Value::from(key.sign(t)));
        object.insert("T".into(), Value::from(t));
    }
    let body = event.to_string();
    for _ in 0..PUSH_ATTEMPTS {
        shared.queue().note_push_attempt(key);
        let answer = shared
            .http
            .post(url)
            .timeout(PUSH_TIMEOUT)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if let Ok(response) = answer {
            shared
                .queue()
                .note_push_answer(key, response.status().as_u16());
            return;
        }
    }
    shared.queue().note_push_gave_up(key);
}
