//! Wiring and lifecycle: build sinks and pipeline, bind the listener, serve, drain on shutdown.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::Router;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use vodbridge_core::{Background, LaneObserver, LaneStore, Pipeline, SharedRecord, Sink};
use vodbridge_tencent::governor::Governor;

use crate::{
    config::{GovernorScope, Settings, SourceKind},
    error::{Error, Result},
    record::StoreRecord,
    server, sinks,
    sources::{
        forward,
        pull::{PullSource, SubAppSet},
    },
    spool::Spool,
    state::AppState,
    telemetry::Metrics,
    vod_check::{self, SourceCheck},
};

/// A built bridge: listener bound, sinks open, not yet serving.
///
/// `App::build(settings)` → [`App::local_addr`] → [`App::run_until`]`(shutdown)`; binding port 0
/// lets tests run the real wiring side by side.
pub struct App {
    /// The bound listener (callbacks, metrics, health).
    listener: TcpListener,
    /// Shared handler state.
    state: Arc<AppState>,
    /// The pull sources, whose loops `run_until` starts.
    pull_sources: Vec<Arc<PullSource>>,
    /// The pull sources with `sub_app_ids`, whose registries `run_until` starts.
    sub_app_sets: Vec<Arc<SubAppSet>>,
    /// Time allowed for in-flight work after the shutdown signal.
    drain_timeout: Duration,
    /// The sinks' background tasks (connection supervisors, probes): each sink stops its own
    /// on close; the app cancels and awaits whatever is left after closing them all.
    sink_tasks: Background,
}

impl App {
    /// Builds sinks from the settings and binds the listener.
    ///
    /// # Errors
    ///
    /// A sink that cannot be opened, or an address that cannot be bound.
    pub async fn build(settings: Settings) -> Result<Self> {
        Self::build_with_sinks(settings, Vec::new()).await
    }

    /// Like [`App::build`], but a sink in `overrides` replaces the configured sink of the same
    /// name (tests use it to put scripted sinks behind the real HTTP path).
    ///
    /// # Errors
    ///
    /// As [`App::build`].
    pub async fn build_with_sinks(
        settings: Settings,
        overrides: Vec<Arc<dyn Sink>>,
    ) -> Result<Self> {
        let sink_tasks = Background::default();
        let metrics = Arc::new(Metrics::new()?);
        let spool = settings
            .spool
            .as_ref()
            .map(|s| Spool::open(&s.path, s.max_bytes))
            .transpose()?;
        let (pipeline, shared_record) =
            pipeline(&settings, overrides, &sink_tasks, &metrics, spool.as_ref())?;
        let PullSources {
            sources: pull_sources,
            sets: sub_app_sets,
            governors,
        } = pull_sources(&settings)?;
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        // A source with sub_app_ids checks each of its sub-applications itself.
        let vod_checks = settings
            .sources
            .values()
            .filter(|s| !sub_app_sets.iter().any(|set| set.name == s.name))
            .filter_map(|s| s.vod.clone().map(|check| (s.name.clone(), check)))
            .map(|(name, check)| SourceCheck::new(&name, check).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let state = Arc::new(AppState {
            pipeline,
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight)),
            draining: false.into(),
            metrics,
            shared_record,
            publish_timeout: settings.publish_timeout(),
            sources: settings.sources,
            server: settings.server,
            pull_auth: pull_sources
                .iter()
                .map(|s| (s.name.clone(), Arc::clone(&s.auth_failed)))
                .chain(
                    sub_app_sets
                        .iter()
                        .map(|s| (s.name.clone(), s.auth_failed())),
                )
                .collect(),
            sub_app_sets: sub_app_sets.clone(),
            governors,
            spool,
            vod_checks,
        });
        let drain_timeout = Duration::from_secs(state.server.drain_timeout_secs);
        Ok(Self {
            listener,
            state,
            pull_sources,
            sub_app_sets,
            drain_timeout,
            sink_tasks,
        })
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// When the OS cannot report it.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Live totals, readable while the app runs.
    #[must_use]
    pub fn progress(&self) -> Progress {
        Progress(Arc::clone(&self.state))
    }

    /// The router, for tests that call handlers without a socket.
    pub fn router(&self) -> Router {
        server::router(Arc::clone(&self.state))
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns false, new callbacks get
    /// 503, pull loops stop pulling, in-flight publishes finish and acknowledged events are
    /// confirmed (all within the drain timeout), then sinks are flushed and closed.
    ///
    /// # Errors
    ///
    /// When the server fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let addr = self.local_addr()?;
        let stop = CancellationToken::new();
        let loops = TaskTracker::new();
        let confirmers = TaskTracker::new();
        for source in &self.pull_sources {
            source.spawn(&self.state, &stop, &loops, &confirmers);
        }
        for set in &self.sub_app_sets {
            set.spawn(&self.state, &stop, &loops, &confirmers);
        }
        self.state.pipeline.resume();
        if !self.state.vod_checks.is_empty() {
            loops.spawn(vod_check::run_checks(
                self.state.vod_checks.clone(),
                self.state.metrics.vod_config_mismatch.clone(),
                stop.clone(),
            ));
        }
        if let Some(spool) = &self.state.spool {
            loops.spawn(forward::run_forwarder(
                Arc::clone(spool),
                Arc::clone(&self.state),
                stop.clone(),
            ));
        }
        loops.close();
        confirmers.close();

        let router = self.router();
        let serve = server::serve(self.listener, router, Arc::clone(&self.state), stop.clone());
        let mut serve = std::pin::pin!(serve);
        tracing::info!(local_addr = %addr, version = env!("CARGO_PKG_VERSION"), pull_sources = self.pull_sources.len() + self.sub_app_sets.len(), "Listening.");

        tokio::select! {
            result = &mut serve => return result.map_err(Error::Serve),
            () = shutdown => {}
        }
        tracing::info!(
            drain_timeout_secs = self.drain_timeout.as_secs(),
            "Shutting down; draining in-flight events."
        );
        self.state.draining.store(true, Ordering::Relaxed);
        stop.cancel();
        let drain_until = tokio::time::Instant::now() + self.drain_timeout;
        let drain = async {
            let (served, (), ()) = tokio::join!(&mut serve, loops.wait(), confirmers.wait());
            served
        };
        match tokio::time::timeout_at(drain_until, drain).await {
            Ok(result) => result.map_err(Error::Serve)?,
            Err(_) => {
                tracing::warn!("Drain timeout passed; unconfirmed events will come back from VOD.")
            }
        }
        // Closing is bounded too (a flush to a silent broker, a connection close that is never
        // acknowledged): what is left of the drain, at least CLOSE_FLOOR.
        let within = drain_until
            .saturating_duration_since(tokio::time::Instant::now())
            .max(CLOSE_FLOOR);
        for closed in self.state.pipeline.close(within).await {
            log_closed(&closed);
        }
        // Each sink stopped its own tasks on close; this ends any a failed close left behind.
        self.sink_tasks.shutdown().cancel();
        if tokio::time::timeout(TASKS_LIMIT, self.sink_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "Sink background tasks did not stop within {} ms; abandoned.",
                TASKS_LIMIT.as_millis()
            );
        }
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// The sinks (a sink in `overrides` replacing the configured one of its name), the pipeline over
/// them with the delivery record, and the shared record when configured.
fn pipeline(
    settings: &Settings,
    overrides: Vec<Arc<dyn Sink>>,
    sink_tasks: &Background,
    metrics: &Arc<Metrics>,
    spool: Option<&Arc<Spool>>,
) -> Result<(Pipeline, Option<Arc<StoreRecord>>)> {
    let mut built: Vec<Arc<dyn Sink>> = Vec::with_capacity(settings.sinks.len());
    for (name, config) in &settings.sinks {
        match overrides.iter().find(|s| s.name() == name) {
            Some(sink) => built.push(Arc::clone(sink)),
            None => built.push(sinks::build(name, config, sink_tasks.child())?),
        }
    }
    let mut pipeline = Pipeline::new(built, settings.routes.clone(), settings.dead_letter.clone())
        .map_err(Error::Pipeline)?
        .with_unroutable_retry(settings.unroutable_retry)
        .with_sink_record(settings.sink_record_capacity);
    let shared_record = settings
        .shared_record
        .as_ref()
        .map(|shared| StoreRecord::open(shared, metrics.record.clone()).map(Arc::new))
        .transpose()?;
    if let Some(shared) = &shared_record {
        pipeline = pipeline.with_shared_record(Arc::clone(shared) as Arc<dyn SharedRecord>);
    }
    // Last: the best-effort queues' workers take the records above when they start.
    let mut pipeline = pipeline.with_best_effort(
        &settings.best_effort,
        Some(Arc::clone(metrics) as Arc<dyn LaneObserver>),
    );
    if let (true, Some(spool)) = (settings.best_effort_durable, spool) {
        let restored;
        (pipeline, restored) =
            pipeline.with_best_effort_store(Arc::clone(spool) as Arc<dyn LaneStore>);
        if restored > 0 {
            tracing::info!(
                events = restored,
                "The spool holds best-effort events from a previous run; publishing them."
            );
        }
    }
    Ok((pipeline, shared_record))
}

/// The pull sources of a bridge and their VOD accounts' governors.
struct PullSources {
    /// Sources of one sub-application (or the default application).
    sources: Vec<Arc<PullSource>>,
    /// Sources with `sub_app_ids`.
    sets: Vec<Arc<SubAppSet>>,
    /// One per VOD account (per sub-application with `governor_scope = "sub_app"`).
    governors: Vec<Arc<Governor>>,
}

/// The pull sources, each with its VOD account's request governor (one per account: its API
/// budget is shared by every source using it; with `governor_scope = "sub_app"`, one per
/// account and sub-application).
fn pull_sources(settings: &Settings) -> Result<PullSources> {
    let mut built = PullSources {
        sources: Vec::new(),
        sets: Vec::new(),
        governors: Vec::new(),
    };
    let mut governors: BTreeMap<String, Arc<Governor>> = BTreeMap::new();
    for source in settings.sources.values() {
        if let SourceKind::Pull(pull) = &source.kind {
            let key = match (pull.governor_scope, pull.client.sub_app_id) {
                (GovernorScope::SubApp, Some(id)) => format!("{}/{id}", pull.account.key),
                _ => pull.account.key.clone(),
            };
            let governor = governors.entry(key).or_insert_with(|| {
                Arc::new(Governor::new(
                    pull.account.label.clone(),
                    pull.account.budget,
                ))
            });
            if pull.sub_apps.is_some() {
                built.sets.push(Arc::new(SubAppSet::new(
                    &source.name,
                    (**pull).clone(),
                    source.vod.clone(),
                    Arc::clone(governor),
                )?));
                continue;
            }
            built.sources.push(Arc::new(PullSource::new(
                &source.name,
                source.normalizer.clone(),
                (**pull).clone(),
                Arc::clone(governor),
            )?));
        }
    }
    built.governors = governors.into_values().collect();
    Ok(built)
}

/// The least time sinks get to close (flush, release connections) after the drain, even when
/// the drain used all of `drain_timeout_secs`.
const CLOSE_FLOOR: Duration = Duration::from_secs(2);
/// The most time the sinks' background tasks get to end after the sinks closed.
const TASKS_LIMIT: Duration = Duration::from_secs(1);

/// One log line per sink at shutdown: what it abandoned, and how its close ended.
fn log_closed(closed: &vodbridge_core::SinkClosed) {
    let sink = closed.sink.as_str();
    match (&closed.result, closed.abandoned) {
        (Ok(()), 0) => tracing::debug!(sink, "Sink closed."),
        (Ok(()), abandoned) => tracing::warn!(
            sink,
            abandoned,
            "Sink closed with {abandoned} publishes unacknowledged; VOD hands those events out (pull) or sends them (push) again."
        ),
        (Err(error), abandoned) => tracing::warn!(
            sink,
            abandoned,
            error = %error,
            "Sink did not close cleanly; {abandoned} publishes unacknowledged, VOD hands those events out (pull) or sends them (push) again."
        ),
    }
}

/// Live totals of a running app.
#[derive(Clone)]
pub struct Progress(Arc<AppState>);

impl Progress {
    /// Publishes acknowledged by sinks, all sinks together.
    #[must_use]
    pub fn published(&self) -> u64 {
        sum(&self.0.metrics.published)
    }

    /// Events acknowledged to VOD (confirmed, or answered 200), all sources together.
    #[must_use]
    pub fn confirmed(&self) -> u64 {
        sum(&self.0.metrics.confirmed)
    }
}

fn sum(counter: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    counter
        .collect()
        .iter()
        .flat_map(|family| {
            family
                .get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
        })
        .sum::<f64>() as u64
}
