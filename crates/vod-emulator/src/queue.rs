//! VOD's reliable-callback queue: at most 16 events a pull, a fresh handle per hand-out, a
//! visibility timeout, strict confirmation, retention, and a ledger of every event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::{Duration, Instant};

/// Most events one `PullEvents` answer carries.
pub const MAX_PULL: usize = 16;

/// One event's history, as the admin API reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The key the emulator assigned.
    pub key: u64,
    /// The sub-application (0 for the default application).
    pub sub_app_id: u64,
    /// The EventType.
    pub event_type: String,
    /// `pull` (queued) or `push` (POSTed to a URL).
    pub mode: &'static str,
    /// How many times it was handed out (pull) or POSTed (push).
    pub delivered: u32,
    /// When it was enqueued (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    /// When it was confirmed (pull) or answered 200 (push); `null` while not.
    #[serde(with = "time::serde::rfc3339::option")]
    pub confirmed_at: Option<OffsetDateTime>,
    /// Push: the HTTP status of the answer VOD took. VOD ignores it: any answer ends the
    /// event's delivery, so an answer other than 200 is an event VOD will not send again.
    /// `null` while unanswered (and always for pull).
    pub answer_status: Option<u16>,
    /// Push: every attempt timed out or failed to connect, and VOD gave up on the event.
    pub gave_up: bool,
    /// True when retention removed it unconfirmed.
    pub expired: bool,
}

/// A queued event.
#[derive(Debug)]
struct Entry {
    /// The sub-application it belongs to.
    sub_app_id: u64,
    /// The event JSON without `EventHandle`.
    body: Bytes,
    /// Monotonic enqueue time, for retention.
    enqueued: Instant,
    /// Not handed out before this instant.
    visible_at: Instant,
    /// The current handle and when it stops being confirmable.
    handle: Option<(String, Instant)>,
}

/// Totals for `GET /emulator/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Events enqueued or pushed.
    pub enqueued: u64,
    /// Events confirmed (pull) or acknowledged with 200 (push).
    pub confirmed: u64,
    /// Events not confirmed yet.
    pub pending: u64,
    /// Hand-outs and POSTs, redeliveries included.
    pub deliveries: u64,
    /// Hand-outs beyond the first per event.
    pub redeliveries: u64,
    /// `PullEvents` calls answered.
    pub pulls: u64,
    /// `PullEvents` calls answered, per sub-application (0: the default application).
    pub pulls_by_sub_app: std::collections::BTreeMap<u64, u64>,
    /// Push: events answered with a status other than 200 (VOD does not send them again).
    pub push_not_acknowledged: u64,
    /// Push: events whose every attempt timed out or failed (VOD gave up on them).
    pub push_gave_up: u64,
    /// `ConfirmEvents` calls that confirmed.
    pub confirms: u64,
    /// `ConfirmEvents` calls refused for an expired or unknown handle.
    pub confirm_rejections: u64,
    /// Answers replaced by an injected `InternalError`.
    pub injected_errors: u64,
    /// Answers replaced by `RequestLimitExceeded` (every action).
    pub throttled: u64,
    /// `PullEvents` calls over their request limit.
    pub throttled_pulls: u64,
    /// `ConfirmEvents` calls over their request limit.
    pub throttled_confirms: u64,
    /// Requests refused for their signature.
    pub auth_failures: u64,
    /// Events not emitted under the enforced event configuration (switch off, or `PUSH` mode
    /// without a URL).
    pub dropped_by_config: u64,
}

/// One sub-application's unconfirmed events, indexed so that a pull costs O(log n) however
/// deep the backlog (a pull of a quiet sub-application must not scan another's 16,000
/// events): the keys visible now in queue order, and the handed-out ones by when they show again.
#[derive(Debug, Default)]
struct SubQueue {
    visible: BTreeSet<u64>,
    hidden: BTreeSet<(Instant, u64)>,
}

impl SubQueue {
    /// Moves the handed-out events whose handles expired by `now` back to the visible ones.
    fn reveal(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.hidden.first() {
            if at > now {
                break;
            }
            self.hidden.pop_first();
            self.visible.insert(key);
        }
    }

    /// Forgets `key`, visible until `visible_at`.
    fn remove(&mut self, key: u64, visible_at: Instant) {
        self.visible.remove(&key);
        self.hidden.remove(&(visible_at, key));
    }
}

/// The queue of every sub-application and the ledger.
#[derive(Debug)]
pub struct Queue {
    /// Unconfirmed pull-mode events by key.
    active: BTreeMap<u64, Entry>,
    /// The same events, per sub-application.
    by_sub_app: HashMap<u64, SubQueue>,
    /// Every event ever seen, by key.
    ledger: BTreeMap<u64, LedgerEntry>,
    /// Handle → key of the current hand-outs.
    handles: BTreeMap<String, u64>,
    next_key: u64,
    next_handle: u64,
    /// How long a handed-out event stays invisible (VOD: 30 s).
    visibility: Duration,
    /// How long unconfirmed events are kept (VOD: 4 days).
    retention: Duration,
    /// When retention was last applied.
    last_expiry: Option<Instant>,
    /// Counters.
    pub stats: Stats,
}

impl Queue {
    /// An empty queue.
    #[must_use]
    pub fn new(visibility: Duration, retention: Duration) -> Self {
        Self {
            active: BTreeMap::new(),
            by_sub_app: HashMap::new(),
            ledger: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_key: 1,
            next_handle: 1,
            visibility,
            retention,
            last_expiry: None,
            stats: Stats::default(),
        }
    }

    /// Adds a pull-mode event; returns its key.
    pub fn enqueue(&mut self, sub_app_id: u64, event_type: &str, body: Bytes, now: Instant) -> u64 {
        let key = self.record(sub_app_id, event_type, "pull");
        self.by_sub_app
            .entry(sub_app_id)
            .or_default()
            .visible
            .insert(key);
        self.active.insert(
            key,
            Entry {
                sub_app_id,
                body,
                enqueued: now,
                visible_at: now,
                handle: None,
            },
        );
        key
    }

    /// Records an event in the ledger without queueing it (push mode); returns its key.
    pub fn record(&mut self, sub_app_id: u64, event_type: &str, mode: &'static str) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.stats.enqueued += 1;
        self.ledger.insert(
            key,
            LedgerEntry {
                key,
                sub_app_id,
                event_type: event_type.to_owned(),
                mode,
                delivered: 0,
                enqueued_at: OffsetDateTime::now_utc(),
                confirmed_at: None,
                answer_status: None,
                gave_up: false,
                expired: false,
            },
        );
        key
    }

    /// Notes one push attempt of `key`.
    pub fn note_push_attempt(&mut self, key: u64) {
        if let Some(entry) = self.ledger.get_mut(&key) {
            entry.delivered += 1;
            self.stats.deliveries += 1;
            if entry.delivered > 1 {
                self.stats.redeliveries += 1;
            }
        }
    }

    /// Notes the answer VOD took for push event `key`: 200 acknowledges it; any other status
    /// ends its delivery all the same (VOD ignores the status).
    pub fn note_push_answer(&mut self, key: u64, status: u16) {
        let Some(entry) = self.ledger.get_mut(&key) else {
            return;
        };
        entry.answer_status = Some(status);
        if status == 200 {
            if entry.confirmed_at.is_none() {
                entry.confirmed_at = Some(OffsetDateTime::now_utc());
                self.stats.confirmed += 1;
            }
        } else {
            self.stats.push_not_acknowledged += 1;
        }
    }

    /// Notes that VOD gave up on push event `key`: no attempt got an answer.
    pub fn note_push_gave_up(&mut self, key: u64) {
        if let Some(entry) = self.ledger.get_mut(&key) {
            entry.gave_up = true;
            self.stats.push_gave_up += 1;
        }
    }

    /// Hands out up to [`MAX_PULL`] visible events of `sub_app_id`, each with a fresh handle,
    /// as the JSON of one `EventSet` element.
    pub fn pull(&mut self, sub_app_id: u64, now: Instant) -> Vec<Bytes> {
        self.expire(now);
        let Some(queue) = self.by_sub_app.get_mut(&sub_app_id) else {
            return Vec::new();
        };
        queue.reveal(now);
        let ready: Vec<u64> = queue.visible.iter().take(MAX_PULL).copied().collect();
        for key in &ready {
            queue.visible.remove(key);
            queue.hidden.insert((now + self.visibility, *key));
        }
        let mut out = Vec::with_capacity(ready.len());
        for key in ready {
            let handle = format!("{:08x}{:016x}", key, self.next_handle);
            self.next_handle += 1;
            let Some(entry) = self.active.get_mut(&key) else {
                continue;
            };
            if let Some((old, _)) = entry.handle.take() {
                self.handles.remove(&old);
            }
            entry.visible_at = now + self.visibility;
            entry.handle = Some((handle.clone(), now + self.visibility));
            self.handles.insert(handle.clone(), key);
            out.push(with_handle(&handle, &entry.body));
            if let Some(ledger) = self.ledger.get_mut(&key) {
                ledger.delivered += 1;
                self.stats.deliveries += 1;
                if ledger.delivered > 1 {
                    self.stats.redeliveries += 1;
                }
            }
        }
        out
    }

    /// When the next event of `sub_app_id` becomes visible, if any is waiting.
    #[must_use]
    pub fn next_visible(&self, sub_app_id: u64) -> Option<Instant> {
        let queue = self.by_sub_app.get(&sub_app_id)?;
        if !queue.visible.is_empty() {
            // Visible already: the next pull takes it.
            return Some(Instant::now());
        }
        queue.hidden.first().map(|(at, _)| *at)
    }

    /// Confirms handles. Strict: if any handle is unknown, superseded or expired, nothing is
    /// confirmed and the call fails (VOD documents only "parameter error" for expired handles;
    /// the strict reading makes the bridge prove it copes with redelivery).
    ///
    /// # Errors
    ///
    /// The first bad handle.
    pub fn confirm(&mut self, handles: &[String], now: Instant) -> Result<usize, String> {
        for handle in handles {
            let valid = self
                .handles
                .get(handle)
                .and_then(|key| self.active.get(key))
                .and_then(|e| e.handle.as_ref())
                .is_some_and(|(h, expires)| h == handle && now < *expires);
            if !valid {
                self.stats.confirm_rejections += 1;
                return Err(handle.clone());
            }
        }
        let confirmed_at = OffsetDateTime::now_utc();
        let mut count = 0;
        for handle in handles {
            if let Some(key) = self.handles.remove(handle) {
                if let Some(entry) = self.active.remove(&key) {
                    if let Some(queue) = self.by_sub_app.get_mut(&entry.sub_app_id) {
                        queue.remove(key, entry.visible_at);
                    }
                    count += 1;
                    self.stats.confirmed += 1;
                    if let Some(ledger) = self.ledger.get_mut(&key) {
                        ledger.confirmed_at = Some(confirmed_at);
                    }
                }
            }
        }
        self.stats.confirms += 1;
        Ok(count)
    }

    /// Events of `sub_app_id` waiting to be pulled (visible now).
    #[must_use]
    pub fn count_to_pull(&self, sub_app_id: u64, now: Instant) -> u64 {
        let count = self.by_sub_app.get(&sub_app_id).map_or(0, |queue| {
            queue.visible.len() + queue.hidden.range(..(now, u64::MAX)).count()
        });
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// `DescribeEventsState`'s `CountOfEventsToPull` as VOD answers it: about `lag` behind.
    /// Counts the events of `sub_app_id` that were queued and not yet confirmed `lag` ago
    /// (hand-outs in between are not subtracted, as VOD's own figure is only a trend); with
    /// `lag` zero, the exact count of events visible now.
    #[must_use]
    pub fn count_to_pull_lagging(
        &self,
        sub_app_id: u64,
        now: Instant,
        wall_now: OffsetDateTime,
        lag: Duration,
    ) -> u64 {
        if lag.is_zero() {
            return self.count_to_pull(sub_app_id, now);
        }
        let Ok(lag) = time::Duration::try_from(lag) else {
            return 0;
        };
        let then = wall_now - lag;
        let count = self
            .ledger
            .values()
            .filter(|e| e.sub_app_id == sub_app_id && e.mode == "pull" && !e.expired)
            .filter(|e| e.enqueued_at <= then && e.confirmed_at.is_none_or(|at| at > then))
            .count();
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// Drops unconfirmed events older than the retention (checked at most once a second).
    fn expire(&mut self, now: Instant) {
        if self
            .last_expiry
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            return;
        }
        self.last_expiry = Some(now);
        let retention = self.retention;
        let expired: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, e)| now.duration_since(e.enqueued) >= retention)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(entry) = self.active.remove(&key) {
                if let Some(queue) = self.by_sub_app.get_mut(&entry.sub_app_id) {
                    queue.remove(key, entry.visible_at);
                }
                if let Some((handle, _)) = entry.handle {
                    self.handles.remove(&handle);
                }
            }
            if let Some(ledger) = self.ledger.get_mut(&key) {
                ledger.expired = true;
            }
        }
    }

    /// The ledger, by key.
    #[must_use]
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.ledger.values().cloned().collect()
    }

    /// Current totals.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.pending = stats.enqueued - stats.confirmed;
        stats
    }
}

/// `{"EventHandle":"h",` + the body's members: the element form of `EventSet`.
fn with_handle(handle: &str, body: &Bytes) -> Bytes {
    let rest = body
        .iter()
        .position(|b| *b == b'{')
        .map_or(&body[..], |i| &body[i + 1..]);
    let empty = rest.iter().all(|b| b.is_ascii_whitespace() || *b == b'}');
    let mut out = Vec::with_capacity(body.len() + handle.len() + 20);
    out.extend_from_slice(b"{\"EventHandle\":\"");
    out.extend_from_slice(handle.as_bytes());
    out.extend_from_slice(if empty { b"\"}" } else { b"\"," });
    if !empty {
        out.extend_from_slice(rest);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{n}"}}}}"#
        ))
    }

    fn handle_of(element: &Bytes) -> String {
        let v: serde_json::Value = serde_json::from_slice(element).expect("json");
        v["EventHandle"].as_str().expect("handle").to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_16_per_pull_and_invisible_until_timeout() {
        let mut q = Queue::new(Duration::from_secs(30), Duration::from_secs(4 * 86400));
        let now = Instant::now();
        for n in 0..20 {
            q.enqueue(1, "NewFileUpload", body(n), now);
        }
        q.enqueue(2, "NewFileUpload", body(99), now);
        let first = q.pull(1, now);
        assert_eq!(first.len(), 16);
        assert_eq!(q.pull(1, now).len(), 4, "the rest");
        assert!(q.pull(1, now).is_empty(), "handed-out events are invisible");
        assert_eq!(q.pull(2, now).len(), 1, "sub-applications are separate");
        let later = now + Duration::from_secs(30);
        let again = q.pull(1, later);
        assert_eq!(
            again.len(),
            16,
            "unconfirmed events come back after the visibility timeout"
        );
        assert_ne!(
            handle_of(&again[0]),
            handle_of(&first[0]),
            "a fresh handle per hand-out"
        );
        assert_eq!(q.stats().redeliveries, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn confirm_is_strict_about_expired_and_superseded_handles() {
        let mut q = Queue::new(Duration::from_secs(30), Duration::from_secs(86400));
        let now = Instant::now();
        q.enqueue(0, "NewFileUpload", body(1), now);
        q.enqueue(0, "NewFileUpload", body(2), now);
        let pulled = q.pull(0, now);
        let handles: Vec<String> = pulled.iter().map(handle_of).collect();
        assert_eq!(
            q.confirm(&handles[..1], now + Duration::from_secs(31)),
            Err(handles[0].clone()),
            "expired"
        );
        let again = q.pull(0, now + Duration::from_secs(31));
        let fresh: Vec<String> = again.iter().map(handle_of).collect();
        let mixed = vec![fresh[0].clone(), handles[1].clone()];
        assert!(
            q.confirm(&mixed, now + Duration::from_secs(32)).is_err(),
            "a superseded handle fails the call"
        );
        assert_eq!(q.stats().confirmed, 0, "nothing confirmed by a failed call");
        assert_eq!(q.confirm(&fresh, now + Duration::from_secs(32)), Ok(2));
        assert!(q
            .ledger()
            .iter()
            .all(|e| e.confirmed_at.is_some() && e.delivered == 2));
        assert!(
            q.pull(0, now + Duration::from_secs(100)).is_empty(),
            "confirmed events never come back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_events_state_count_runs_behind_like_vods() {
        let mut q = Queue::new(Duration::from_secs(30), Duration::from_secs(86400));
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let lag = Duration::from_secs(180);
        for n in 0..3 {
            q.enqueue(7, "NewFileUpload", body(n), now);
        }
        assert_eq!(
            q.count_to_pull_lagging(7, now, wall, Duration::ZERO),
            3,
            "exact"
        );
        assert_eq!(
            q.count_to_pull_lagging(7, now, wall, lag),
            0,
            "not seen yet"
        );
        let pulled = q.pull(7, now);
        let handles: Vec<String> = pulled.iter().take(1).map(handle_of).collect();
        assert_eq!(q.confirm(&handles, now), Ok(1));
        let later = wall + time::Duration::seconds(200);
        assert_eq!(
            q.count_to_pull_lagging(7, now, later, lag),
            2,
            "three minutes on: the three queued, less the one confirmed since"
        );
        assert_eq!(
            q.count_to_pull_lagging(8, now, later, lag),
            0,
            "per sub-application"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retention_expires_unconfirmed_events() {
        let mut q = Queue::new(Duration::from_secs(30), Duration::from_secs(60));
        let now = Instant::now();
        q.enqueue(0, "NewFileUpload", body(1), now);
        assert!(q.pull(0, now + Duration::from_secs(61)).is_empty());
        assert!(q.ledger()[0].expired);
    }

    #[test]
    fn element_form_carries_the_handle_first() {
        assert_eq!(
            &with_handle("h", &Bytes::from_static(b"{\"A\":1}"))[..],
            b"{\"EventHandle\":\"h\",\"A\":1}"
        );
        assert_eq!(
            &with_handle("h", &Bytes::from_static(b" { } "))[..],
            b"{\"EventHandle\":\"h\"}"
        );
    }
}
