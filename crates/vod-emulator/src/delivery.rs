//! VOD's normal callback, as VOD delivers it: one event POSTed to the NotificationUrl with a
//! 5 s timeout, sent again only when no answer came, three sends at most. The admin handlers
//! (`/emulator/push`) and the event-configuration semantics (PUSH mode) both deliver through it.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::time::Instant;
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

/// Pushes `jobs` (ledger key, event) to `url` at `rate` events per second on a steady
/// schedule, each as [`push_one`] does, in the background.
pub(crate) fn push_at_rate(
    shared: &Arc<Shared>,
    url: &str,
    jobs: Vec<(u64, Value)>,
    rate: f64,
    sign_key: Option<SignKey>,
) {
    let (shared, url) = (Arc::clone(shared), url.to_owned());
    tokio::spawn(async move {
        let started = Instant::now();
        for (i, (key, event)) in jobs.into_iter().enumerate() {
            #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
            let (shared, url, sign_key) = (Arc::clone(&shared), url.clone(), sign_key.clone());
            tokio::spawn(async move {
                push_one(&shared, &url, key, event, sign_key.as_ref()).await;
            });
        }
    });
}
