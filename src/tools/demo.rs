//! `vodbridge demo`: the built-in VOD emulator generating a mix of events, the bridge pulling
//! from it on its embedded defaults, and a live progress line; no broker needed.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use vod_emulator::{generate::parse_types, Emulator, EmulatorConfig};
use vodbridge_tencent::event_config::EventSwitch;

use crate::{
    config::{
        Config, FileSinkConfig, FsyncPolicy, PullSourceConfig, Settings, SinkConfig, SourceConfig,
        SubAppIds, VodAccessConfig, VodCheckConfig,
    },
    error::{Error, Result},
    App, Progress,
};

/// SubAppId of the demo's events (the first one's, with `--sub-apps`).
const SUB_APP_ID: u64 = 1_500_000_001;
/// The most sub-applications `--sub-apps` makes.
pub const MAX_SUB_APPS: u32 = 500;
const SECRET_ID: &str = "AKIDVODBRIDGEDEMO";
const SECRET_KEY: &str = "vodbridge-demo-key";

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Bridge listener (metrics, health).
    pub listen: SocketAddr,
    /// Events generated per second.
    pub rate: u32,
    /// Stop after this many events (0: run until Ctrl-C).
    pub events: u64,
    /// Write envelopes to this file instead of standard output.
    pub output: Option<PathBuf>,
    /// Sub-applications to generate for (1 to [`MAX_SUB_APPS`]); above 1, the bridge pulls
    /// them all from one source with `sub_app_ids = "all"`.
    pub sub_apps: u32,
}

/// Runs the demo until `shutdown` resolves or every requested event is confirmed.
///
/// # Errors
///
/// When the emulator or the bridge cannot start.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut emulator_config = EmulatorConfig::new(SECRET_ID, SECRET_KEY);
    // One sub-application: a short long poll keeps Ctrl-C snappy. Several: VOD's 5 s, as the
    // bridge paces a quiet sub-application to one long poll per 5 s.
    emulator_config.long_poll = if options.sub_apps > 1 {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    };
    // VOD's own starting point: PUSH mode, every event switch off; `vod configure` sets it up.
    emulator_config.event_config = vod_emulator::EventConfigPolicy::Enforced;
    let emulator = Emulator::new(emulator_config);
    if !(1..=MAX_SUB_APPS).contains(&options.sub_apps) {
        return Err(Error::Config(format!(
            "--sub-apps must be 1 to {MAX_SUB_APPS}"
        )));
    }
    for i in 0..u64::from(options.sub_apps) {
        emulator.add_sub_app(vod_emulator::sub_app(
            SUB_APP_ID + i,
            &format!("demo-{}", i + 1),
        ));
    }
    let running = emulator
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(Error::Emulator)?;

    let config = demo_config(&options, running.endpoint());
    let settings = Settings::from_config(config)?;
    // What an operator does with a new sub-application: put it in PULL mode and turn on the
    // switches the source needs, as `vodbridge vod configure` does.
    let configured = crate::tools::vod::configure(&settings, None, &[], false).await?;
    eprint!("{}", configured.report);
    let app = App::build(settings).await?;
    let progress = app.progress();
    let done = CancellationToken::new();

    let generator = tokio::spawn(generate(emulator.clone(), done.clone(), options.clone()));
    let reporter = tokio::spawn(report(
        emulator.clone(),
        progress,
        done.clone(),
        options.events,
    ));

    let stop = {
        let done = done.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = done.cancelled() => {}
            }
        }
    };
    let result = app.run_until(stop).await;
    done.cancel();
    let _ = generator.await;
    let _ = reporter.await;
    let stats = emulator.stats();
    eprintln!(
        "demo finished: {} generated, {} confirmed, {} handed out again (unconfirmed events stay in the emulator's queue)",
        stats.enqueued, stats.confirmed, stats.redeliveries
    );
    drop(running);
    result
}

/// The bridge's configuration for the demo: a pull source on the emulator at `endpoint`, its
/// sub-application's every event switch wanted, and a file sink when `--output` is given
/// (standard output otherwise, the embedded default).
fn demo_config(options: &DemoOptions, endpoint: String) -> Config {
    let mut config = Config::default();
    config.server.listen = options.listen;
    config.sources.insert(
        "demo".to_owned(),
        SourceConfig::Pull(PullSourceConfig {
            access: VodAccessConfig {
                endpoint,
                secret_id: Some(SECRET_ID.to_owned()),
                secret_key: Some(SECRET_KEY.to_owned().into()),
                ..VodAccessConfig::default()
            },
            // One sub-application, or every one the emulator lists.
            sub_app_id: (options.sub_apps <= 1).then_some(SUB_APP_ID),
            sub_app_ids: (options.sub_apps > 1).then(|| SubAppIds::All("all".to_owned())),
            // The demo generates every event type, so it needs every switch on.
            check: VodCheckConfig {
                event_switches: EventSwitch::ALL.to_vec(),
                ..VodCheckConfig::default()
            },
            ..PullSourceConfig::default()
        }),
    );
    if let Some(path) = &options.output {
        config.sinks.insert(
            "file".to_owned(),
            SinkConfig::File(FileSinkConfig {
                path: path.clone(),
                fsync: FsyncPolicy::Always,
                rotate_bytes: None,
                keep_files: None,
            }),
        );
    }
    config
}

/// Generates `rate` events a second (in bursts every 100 ms) of every type, each burst for
/// the next sub-application in turn, until `events` (0: none) or `done`.
async fn generate(emulator: Emulator, done: CancellationToken, options: DemoOptions) {
    let types = parse_types("all");
    let (rate, limit) = (u64::from(options.rate.max(1)), options.events);
    let mut made = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for turn in 0_u64.. {
        if done.is_cancelled() || (limit != 0 && made >= limit) {
            break;
        }
        tick.tick().await;
        let burst = (rate / 10)
            .max(1)
            .min(if limit == 0 { u64::MAX } else { limit - made });
        emulator.generate(
            SUB_APP_ID + turn % u64::from(options.sub_apps.max(1)),
            usize::try_from(burst).unwrap_or(usize::MAX),
            &types,
        );
        made += burst;
    }
}

/// A progress line every second on standard error (rewritten in place on a terminal); cancels
/// `done` once `events` (if not 0) are confirmed.
async fn report(emulator: Emulator, progress: Progress, done: CancellationToken, events: u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last = (std::time::Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => break,
        }
        let stats = emulator.stats();
        let confirmed = progress.confirmed();
        let rate = (confirmed - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (std::time::Instant::now(), confirmed);
        let line = format!(
            "generated {:>8}  pulled {:>8}  published {:>8}  confirmed {:>8}  pending {:>6}  {:>7.0} events/s",
            stats.enqueued, stats.deliveries, progress.published(), confirmed, stats.pending, rate
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        if events > 0 && stats.confirmed >= events {
            done.cancel();
        }
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
}
