//! The `vod-emulator` command: serve the VOD emulator on an address.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use vod_emulator::{generate::parse_types, Emulator, EmulatorConfig, Faults, Limits};

/// A local stand-in for Tencent Cloud VOD's event APIs (PullEvents, ConfirmEvents,
/// DescribeEventsState) with an admin API under /emulator/.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// SecretId requests must be signed with.
    #[arg(long, env = "VOD_EMULATOR_SECRET_ID", default_value = "AKIDEMULATOR")]
    secret_id: String,
    /// SecretKey requests must be signed with.
    #[arg(
        long,
        env = "VOD_EMULATOR_SECRET_KEY",
        default_value = "emulator-secret-key",
        hide_env_values = true
    )]
    secret_key: String,
    /// Seconds a handed-out event stays invisible (VOD: 30).
    #[arg(long, default_value_t = 30)]
    visibility_secs: u64,
    /// Milliseconds PullEvents waits when nothing is ready (VOD: 5000).
    #[arg(long, default_value_t = 5000)]
    long_poll_ms: u64,
    /// Events to generate at start.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// EventTypes to generate: empty for the six core types, `all`, or a comma list.
    #[arg(long, default_value = "")]
    types: String,
    /// SubAppId of generated events (0: the default application).
    #[arg(long, default_value_t = 0)]
    sub_app_id: u64,
    /// Share of API calls answered InternalError.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of ConfirmEvents calls answered InternalError without confirming (the events come
    /// back once their handles expire).
    #[arg(long, default_value_t = 0.0)]
    confirm_error_rate: f64,
    /// Latency added to ConfirmEvents calls only, in milliseconds (past the handle lifetime,
    /// confirms are refused as expired).
    #[arg(long, default_value_t = 0)]
    confirm_latency_ms: u64,
    /// Latency added to every API call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// API calls per second, all actions together, before RequestLimitExceeded (0: unlimited);
    /// an extra fault on top of VOD's per-action limits.
    #[arg(long, default_value_t = 0)]
    throttle_rps: u32,
    /// PullEvents calls per second per SecretId (VOD: 100; 0: unlimited).
    #[arg(long, default_value_t = Limits::VOD.pull_events)]
    pull_events_rps: u32,
    /// ConfirmEvents calls per second per SecretId (VOD: 100; 0: unlimited).
    #[arg(long, default_value_t = Limits::VOD.confirm_events)]
    confirm_events_rps: u32,
    /// DescribeEventsState calls per second per SecretId (VOD: 20; 0: unlimited).
    #[arg(long, default_value_t = Limits::VOD.describe_events_state)]
    describe_events_state_rps: u32,
    /// Turn VOD's request limits off (every action unlimited).
    #[arg(long)]
    no_limits: bool,
    /// Enforce each sub-application's event configuration as VOD does: it starts in PUSH mode
    /// without a URL and with every event switch off, and ModifyEventConfig (`vodbridge vod
    /// configure`) decides what is queued, pushed or dropped. Without it every event is queued.
    #[arg(long)]
    vod_event_config: bool,
    /// How far DescribeEventsState's CountOfEventsToPull runs behind, as VOD's does (about 3
    /// minutes); 0 answers the exact count now.
    #[arg(long, default_value_t = 180)]
    events_state_lag_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.error_rate),
        "--error-rate must be within 0.0..=1.0"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.confirm_error_rate),
        "--confirm-error-rate must be within 0.0..=1.0"
    );
    let mut config = EmulatorConfig::new(cli.secret_id, cli.secret_key);
    config.visibility = Duration::from_secs(cli.visibility_secs);
    config.long_poll = Duration::from_millis(cli.long_poll_ms);
    config.events_state_lag = Duration::from_secs(cli.events_state_lag_secs);
    config.faults = Faults {
        error_rate: cli.error_rate,
        latency_ms: cli.latency_ms,
        throttle_rps: cli.throttle_rps,
        confirm_error_rate: cli.confirm_error_rate,
        confirm_latency_ms: cli.confirm_latency_ms,
    };
    config.limits = if cli.no_limits {
        Limits::OFF
    } else {
        Limits {
            pull_events: cli.pull_events_rps,
            confirm_events: cli.confirm_events_rps,
            describe_events_state: cli.describe_events_state_rps,
            event_config: Limits::VOD.event_config,
            describe_sub_app_ids: Limits::VOD.describe_sub_app_ids,
        }
    };
    if cli.vod_event_config {
        config.event_config = vod_emulator::EventConfigPolicy::Enforced;
    }
    let emulator = Emulator::new(config);
    if cli.generate > 0 {
        emulator.generate(cli.sub_app_id, cli.generate, &parse_types(&cli.types));
    }
    let running = emulator
        .serve(cli.listen)
        .await
        .context("starting the emulator")?;
    tracing::info!(endpoint = %running.endpoint(), "VOD emulator listening.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
