//! A faithful local stand-in for Tencent Cloud VOD's event side, for tests, benchmarks, the
//! compose demo and users' own development.
//!
//! # Brief overview
//!
//! [`Emulator`] owns a [`queue::Queue`] (VOD's reliable-callback queue: at most 16 events a
//! pull, a fresh `EventHandle` per hand-out, a visibility timeout, strict confirmation,
//! retention) and serves:
//!
//! - `POST /`: the Tencent Cloud API 3.0 endpoint (action in `X-TC-Action`): `PullEvents`
//!   (long poll), `ConfirmEvents`, `DescribeEventsState`, each verified with TC3-HMAC-SHA256
//!   and answered with API 3.0 bodies, so Tencent's SDKs work against it with only the endpoint
//!   changed.
//! - `POST /emulator/events?sub_app_id=N` (a JSON array of `EventContent` objects, or
//!   `?generate=N&types=A,B`): enqueue; answers the assigned keys.
//! - `POST /emulator/push?url=U&generate=N[&sign_key=K]`: POST events to a URL like VOD's
//!   normal callback (5 s timeout, two retries on timeout, optional `Sign`/`T`).
//! - `GET /emulator/ledger`, `GET /emulator/stats`: what happened to every event.
//! - `PUT /emulator/faults`: error rate, latency, an overall throttle.
//! - `PUT /emulator/sub-apps` (a `SubAppIdInfo`), `DELETE /emulator/sub-apps/{id}`: the
//!   account's sub-applications, answered by `DescribeSubAppIds` (paged, 200 at most).
//! - `PUT /emulator/limits`: VOD's request limits per action and SecretId
//!   ([`Limits`]; on by default: `PullEvents` and `ConfirmEvents` 100/s, `DescribeEventsState`
//!   20/s), answered `RequestLimitExceeded` beyond them.
//!
//! [`generate::Generator`] makes realistic bodies for every known EventType.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod api;
mod delivery;
mod error;
mod event_config;
pub mod generate;
mod limits;
pub mod queue;
mod sub_apps;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use axum::{
    routing::{get, post, put},
    Router,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle, time::Instant};

pub use error::{Error, Result};
pub use event_config::{Emitted, EventConfigPolicy};
use generate::Generator;
pub use limits::Limits;
use queue::{LedgerEntry, Queue, Stats};
pub use sub_apps::sub_app;
pub use vodbridge_tencent::sub_apps::{SubAppIdInfo, SubAppStatus};

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The SecretId requests must be signed with.
    pub secret_id: String,
    /// The SecretKey requests must be signed with.
    pub secret_key: String,
    /// How long a handed-out event stays invisible and its handle confirmable (VOD: 30 s).
    pub visibility: Duration,
    /// How long `PullEvents` waits for events when none are ready (VOD: at most 5 s).
    pub long_poll: Duration,
    /// How long unconfirmed events are kept (VOD: 4 days).
    pub retention: Duration,
    /// Largest accepted difference between `X-TC-Timestamp` and the clock (Tencent: 5 min).
    pub clock_window: Duration,
    /// Injected faults at start.
    pub faults: Faults,
    /// Request limits per action and SecretId (VOD's quotas by default).
    pub limits: Limits,
    /// Seed of the body generator.
    pub seed: u64,
    /// Whether the sub-applications' event configuration decides delivery (default: kept and
    /// answered, not enforced).
    pub event_config: EventConfigPolicy,
    /// How far `DescribeEventsState`'s `CountOfEventsToPull` runs behind (VOD: about 3
    /// minutes, and its docs say not to decide whether to pull by it); zero answers the exact
    /// count now.
    pub events_state_lag: Duration,
}

impl EmulatorConfig {
    /// VOD's own numbers with the given credentials.
    #[must_use]
    pub fn new(secret_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            secret_id: secret_id.into(),
            secret_key: secret_key.into(),
            visibility: Duration::from_secs(30),
            long_poll: Duration::from_secs(5),
            retention: Duration::from_secs(4 * 24 * 3600),
            clock_window: Duration::from_secs(300),
            faults: Faults::default(),
            limits: Limits::VOD,
            seed: 1,
            event_config: EventConfigPolicy::Recorded,
            events_state_lag: Duration::from_secs(180),
        }
    }
}

/// Injected faults, applied to API calls after their signature was verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of calls (0.0–1.0) answered `InternalError` without being processed.
    pub error_rate: f64,
    /// Added to every call before it is processed (at most 60 s).
    pub latency_ms: u64,
    /// Calls per second, all actions and SecretIds together, beyond which
    /// `RequestLimitExceeded` is answered (0: no limit). VOD's own per-action limits are
    /// [`Limits`]; this is an extra, coarser throttle for fault tests.
    pub throttle_rps: u32,
    /// Share of `ConfirmEvents` calls (0.0–1.0) answered `InternalError` without confirming:
    /// the events were published but stay unconfirmed, so VOD hands them out again once their
    /// handles expire.
    pub confirm_error_rate: f64,
    /// Added to every `ConfirmEvents` call only, before it is processed (at most 60 s): a
    /// confirm that reaches VOD after the handle lifetime is refused as expired.
    pub confirm_latency_ms: u64,
}

/// State shared by the handlers.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    queue: Mutex<Queue>,
    /// Wakes long polls when events are enqueued.
    pub(crate) notify: Notify,
    faults: Mutex<Faults>,
    generator: Mutex<Generator>,
    /// Start and count of the current one-second throttling window.
    throttle_window: Mutex<(Instant, u32)>,
    /// VOD's per-action, per-SecretId request limits.
    limiters: Mutex<limits::Limiters>,
    /// Each sub-application's event configuration.
    pub(crate) event_configs: Mutex<event_config::Configs>,
    /// The account's sub-applications (`DescribeSubAppIds`).
    pub(crate) sub_apps: Mutex<sub_apps::Registry>,
    requests: AtomicU64,
    /// Client of push mode.
    pub(crate) http: reqwest::Client,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way that
    // matters for an emulator; keep serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    pub(crate) fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    pub(crate) fn set_limits(&self, limits: Limits) {
        *lock(&self.limiters) = limits::Limiters::new(limits);
    }

    pub(crate) fn limits(&self) -> Limits {
        lock(&self.limiters).limits()
    }

    pub(crate) fn generator(&self) -> MutexGuard<'_, Generator> {
        lock(&self.generator)
    }

    /// Applies VOD's request limit of `action` to one call by `secret_id`.
    pub(crate) fn apply_limits(&self, action: &str, secret_id: &str) -> Result<()> {
        if lock(&self.limiters).admit(action, secret_id) {
            return Ok(());
        }
        {
            let mut queue = self.queue();
            queue.stats.throttled += 1;
            match action {
                "PullEvents" => queue.stats.throttled_pulls += 1,
                "ConfirmEvents" => queue.stats.throttled_confirms += 1,
                _ => {}
            }
        }
        Err(Error::api(
            "RequestLimitExceeded",
            format!("the request rate of {action} exceeds the limit"),
        ))
    }

    /// Applies the configured faults to one call of `action`.
    pub(crate) async fn inject_faults(&self, action: &str) -> Result<()> {
        let faults = lock(&self.faults).clone();
        let latency_ms = if action == "ConfirmEvents" {
            faults.latency_ms.saturating_add(faults.confirm_latency_ms)
        } else {
            faults.latency_ms
        };
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms).min(api::MAX_LATENCY)).await;
        }
        if faults.throttle_rps > 0 {
            let mut window = lock(&self.throttle_window);
            let now = Instant::now();
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            window.1 += 1;
            if window.1 > faults.throttle_rps {
                drop(window);
                self.queue().stats.throttled += 1;
                return Err(Error::api(
                    "RequestLimitExceeded",
                    "the request rate exceeds the limit",
                ));
            }
        }
        let rate = if action == "ConfirmEvents" {
            faults.error_rate.max(faults.confirm_error_rate)
        } else {
            faults.error_rate
        };
        if rate > 0.0 {
            #[allow(clippy::cast_precision_loss)] // A ratio of two u64 below 2^53 is exact enough.
            let roll = self.generator().below(1_000_000) as f64 / 1_000_000.0;
            if roll < rate {
                self.queue().stats.injected_errors += 1;
                return Err(Error::api("InternalError", "injected internal error"));
            }
        }
        Ok(())
    }
}

/// The emulator: cheap to clone, all clones share one queue.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
    /// A new emulator with an empty queue.
    #[must_use]
    pub fn new(config: EmulatorConfig) -> Self {
        let faults = config.faults.clone();
        let limiters = limits::Limiters::new(config.limits);
        let generator = Generator::new(config.seed);
        let queue = Queue::new(config.visibility, config.retention);
        Self {
            shared: Arc::new(Shared {
                config,
                queue: Mutex::new(queue),
                notify: Notify::new(),
                faults: Mutex::new(faults),
                generator: Mutex::new(generator),
                throttle_window: Mutex::new((Instant::now(), 0)),
                limiters: Mutex::new(limiters),
                event_configs: Mutex::new(event_config::Configs::default()),
                sub_apps: Mutex::new(sub_apps::Registry::default()),
                requests: AtomicU64::new(0),
                http: reqwest::Client::new(),
            }),
        }
    }

    /// Every route: the API at `POST /` and the admin API under `/emulator/`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(api::handle))
            .route("/emulator/events", post(admin::enqueue))
            .route("/emulator/push", post(admin::push))
            .route("/emulator/ledger", get(admin::ledger))
            .route("/emulator/stats", get(admin::stats))
            .route(
                "/emulator/faults",
                put(admin::set_faults).get(admin::get_faults),
            )
            .route(
                "/emulator/limits",
                put(admin::set_limits).get(admin::get_limits),
            )
            .route("/emulator/sub-apps", put(admin::put_sub_app))
            .route(
                "/emulator/sub-apps/{sub_app_id}",
                axum::routing::delete(admin::delete_sub_app),
            )
            .with_state(Arc::clone(&self.shared))
    }

    /// Emits one finished event (an `EventContent` object) of `sub_app_id` as VOD would: queued
    /// for pulling, or, under [`EventConfigPolicy::Enforced`], as the sub-application's
    /// configuration says (pushed to its `NotificationUrl` in `PUSH` mode, dropped while its
    /// switch is off). Returns its ledger key.
    pub fn enqueue(&self, sub_app_id: u64, event: &serde_json::Value) -> u64 {
        self.emit(sub_app_id, event).key()
    }

    /// Like [`Emulator::enqueue`], saying what happened to the event.
    pub fn emit(&self, sub_app_id: u64, event: &serde_json::Value) -> Emitted {
        event_config::emit(&self.shared, sub_app_id, event.clone())
    }

    /// The event configuration of `sub_app_id` (what `DescribeEventConfig` answers).
    #[must_use]
    pub fn event_config(&self, sub_app_id: u64) -> vodbridge_tencent::event_config::EventConfig {
        lock(&self.shared.event_configs)
            .get(sub_app_id, self.shared.config.event_config)
            .config
    }

    /// Applies a `ModifyEventConfig` to `sub_app_id`, as the API call would.
    pub fn modify_event_config(
        &self,
        sub_app_id: u64,
        change: &vodbridge_tencent::event_config::ModifyEventConfig,
    ) {
        lock(&self.shared.event_configs).modify(
            sub_app_id,
            self.shared.config.event_config,
            change,
        );
    }

    /// Enqueues one pull-mode event as raw bytes, handed out exactly so (with its
    /// `EventHandle` first): for bodies a JSON value cannot express, such as a key given twice.
    /// Returns its key.
    pub fn enqueue_raw(&self, sub_app_id: u64, event_type: &str, body: Bytes) -> u64 {
        let key = self
            .shared
            .queue()
            .enqueue(sub_app_id, event_type, body, Instant::now());
        self.shared.notify.notify_waiters();
        key
    }

    /// Generates and enqueues `count` events cycling through `types`; returns their keys.
    pub fn generate(&self, sub_app_id: u64, count: usize, types: &[String]) -> Vec<u64> {
        (0..count)
            .map(|i| {
                let event = self
                    .shared
                    .generator()
                    .event(&types[i % types.len().max(1)]);
                self.enqueue(sub_app_id, &event)
            })
            .collect()
    }

    /// Pushes `bodies` to `url` as VOD's normal callback does (5 s timeout, sent again only
    /// when no answer came, three sends at most), `rate` per second, in the background: what
    /// `POST /emulator/push?url=..&rate=..` does, in process. Returns the ledger keys, one
    /// per body, in order.
    ///
    /// # Panics
    ///
    /// When `rate` is not above 0, or when called outside a Tokio runtime.
    pub fn push(&self, url: &str, bodies: Vec<serde_json::Value>, rate: f64) -> Vec<u64> {
        assert!(rate > 0.0, "rate must be above 0");
        let jobs: Vec<(u64, serde_json::Value)> = {
            let mut queue = self.shared.queue();
            bodies
                .into_iter()
                .map(|body| {
                    let event_type = body
                        .get("EventType")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    (queue.record(0, &event_type, "push"), body)
                })
                .collect()
        };
        let keys = jobs.iter().map(|(key, _)| *key).collect();
        delivery::push_at_rate(&self.shared, url, jobs, rate, None);
        keys
    }

    /// Lists a sub-application in `DescribeSubAppIds` (or replaces it); its queue and event
    /// configuration exist whether it is listed or not, as every id's do.
    pub fn add_sub_app(&self, info: SubAppIdInfo) {
        lock(&self.shared.sub_apps).insert(info);
    }

    /// Takes a sub-application off the list; true when it was listed.
    pub fn remove_sub_app(&self, sub_app_id: u64) -> bool {
        lock(&self.shared.sub_apps).remove(sub_app_id)
    }

    /// Sets a listed sub-application's `Status` (`Off` disables it); false when not listed.
    pub fn set_sub_app_status(&self, sub_app_id: u64, status: SubAppStatus) -> bool {
        lock(&self.shared.sub_apps).set_status(sub_app_id, status)
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Replaces the request limits (budgets start full).
    pub fn set_limits(&self, limits: Limits) {
        self.shared.set_limits(limits);
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.shared.queue().ledger()
    }

    /// The totals.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.queue().stats()
    }

    /// Binds `addr` and serves in a background task until the returned handle is stopped or
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn serve(&self, addr: SocketAddr) -> Result<RunningEmulator> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(Error::Serve)?;
        let router = self.router();
        let task =
            tokio::spawn(async move { axum::serve(listener, router).await.map_err(Error::Serve) });
        Ok(RunningEmulator {
            addr,
            emulator: self.clone(),
            task,
        })
    }
}

/// A serving emulator; the server stops when this is dropped.
pub struct RunningEmulator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The emulator, for enqueueing and reading the ledger in-process.
    pub emulator: Emulator,
    task: JoinHandle<Result<()>>,
}

impl RunningEmulator {
    /// `http://addr`: the endpoint to give a VOD client.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
