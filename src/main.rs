//! The `vodbridge` command: run the bridge, check a configuration file, or check and set VOD's
//! side of it.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vodbridge::{
    config::{Config, Settings},
    demo::DemoOptions,
    telemetry, App,
};

/// mimalloc instead of glibc malloc: the bridge allocates per event on every worker thread, and
/// glibc's arena locks showed up in profiles (BENCHMARKS.md: push path +46 %, pipeline +38 %).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Carries Tencent Cloud VOD event notifications into message brokers as CloudEvents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default). Without a config: push source `default`, stdout sink.
    Run {
        /// TOML configuration file.
        #[arg(long, short, env = "VODBRIDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// The built-in VOD emulator generating events, the bridge pulling them on its embedded
    /// defaults, envelopes on standard output and a progress line on standard error.
    Demo {
        /// Bridge listener (metrics at /metrics).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Events generated per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Stop once this many events are confirmed (0: run until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        events: u64,
        /// Write envelopes to this JSON Lines file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Sub-applications to generate for (1 to 500); above 1 the bridge pulls them all
        /// from one source with sub_app_ids = "all", each paced fairly.
        #[arg(long, default_value_t = 1)]
        sub_apps: u32,
    },
    /// Print the AsyncAPI 3.0 document of the channels a configuration publishes to.
    Asyncapi {
        /// TOML configuration file (the embedded defaults without one).
        #[arg(long, short, env = "VODBRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective routes; starts nothing. With a
    /// shared delivery record, also checks that its store answers (unless `--offline`).
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
        /// Validate only: do not reach the shared delivery record's store.
        #[arg(long)]
        offline: bool,
    },
    /// Put dead-lettered events back through the current routes (never to the dead-letter
    /// destination again: what fails again is left where it was). Prints a summary.
    Redrive(RedriveArgs),
    /// VOD's side of each source: its sub-application's callback mode, NotificationUrl and
    /// event switches.
    Vod {
        #[command(subcommand)]
        command: VodCommand,
    },
}

/// `vodbridge redrive`'s arguments.
#[derive(clap::Args)]
struct RedriveArgs {
    /// TOML configuration file (its sinks and routes are used).
    #[arg(long, short, env = "VODBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Where the dead letters are: file:PATH (rotated files included), kafka:TOPIC,
    /// amqp:QUEUE or nats:STREAM[/SUBJECT].
    #[arg(long)]
    from: String,
    /// For a broker: the configured sink whose connection to read with.
    #[arg(long)]
    sink: Option<String>,
    /// Only this dead-letter reason (unroutable, too_large, no_route, ...); repeatable.
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Only event types matching this pattern (NewFileUpload, Procedure*, @unknown);
    /// repeatable.
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Only events of this source (a configured source's name or a CloudEvents source);
    /// repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Only events whose time is at or after this (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only events whose time is before this (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Stop after this many matching events.
    #[arg(long)]
    limit: Option<u64>,
    /// Print what would go where; publish and acknowledge nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum VodCommand {
    /// For every source, what VOD is configured to do beside what the bridge expects; exits
    /// non-zero on any mismatch.
    Status {
        /// TOML configuration file.
        #[arg(long, short, env = "VODBRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Set each sub-application to what the bridge expects (ModifyEventConfig): mode,
    /// NotificationUrl (from server.public_base_url), the listed event switches, SignKey.
    /// Prints each change before making it.
    Configure {
        /// TOML configuration file.
        #[arg(long, short, env = "VODBRIDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// With --source naming a source with sub_app_ids: only this sub-application
        /// (repeatable; default: every sub-application the source pulls).
        #[arg(long = "sub-app-id", value_name = "ID")]
        sub_app_ids: Vec<u64>,
        /// Print the changes, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run {
        config: None,
        listen: None,
    }) {
        Command::Run { config, listen } => run(config, listen),
        Command::CheckConfig { file, offline } => check_config(&file, offline),
        Command::Asyncapi { config } => asyncapi(config.as_deref()),
        Command::Vod { command } => vod(command),
        Command::Redrive(args) => redrive(args),
        Command::Demo {
            listen,
            rate,
            events,
            output,
            sub_apps,
        } => demo(DemoOptions {
            listen,
            rate,
            events,
            output,
            sub_apps,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `outer: cause: root`. The library errors already
/// write their source into their own message (so a log line with `%error` says everything);
/// a cause whose text the line already ends with is not repeated.
fn chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn check_config(file: &std::path::Path, offline: bool) -> anyhow::Result<()> {
    let settings = Settings::from_config(Config::load(Some(file))?)?;
    println!("{}: valid", file.display());
    print!("{}", settings.describe());
    if let Some(shared) = settings.shared_record.as_ref().filter(|_| !offline) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        runtime
            .block_on(vodbridge::check_shared_record(shared))
            .with_context(|| format!("{} is not reachable", shared.display_url()))?;
        println!("shared delivery record: {} reachable", shared.display_url());
    }
    Ok(())
}

fn vod(command: VodCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        VodCommand::Status { config } => {
            let settings = Settings::from_config(Config::load(config.as_deref())?)?;
            let status = runtime.block_on(vodbridge::tools::vod::status(&settings))?;
            print!("{}", status.report);
            anyhow::ensure!(
                status.mismatches == 0,
                "{} difference(s) between VOD and the bridge; `vodbridge vod configure` sets VOD to what the bridge expects",
                status.mismatches
            );
            Ok(())
        }
        VodCommand::Configure {
            config,
            source,
            sub_app_ids,
            dry_run,
        } => {
            let settings = Settings::from_config(Config::load(config.as_deref())?)?;
            let done = runtime.block_on(vodbridge::tools::vod::configure(
                &settings,
                source.as_deref(),
                &sub_app_ids,
                dry_run,
            ))?;
            print!("{}", done.report);
            Ok(())
        }
    }
}

fn asyncapi(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let settings = Settings::from_config(Config::load(config)?)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&vodbridge::asyncapi::document(&settings))?
    );
    Ok(())
}

fn run(config: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = Config::load(config.as_deref())?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let settings = Settings::from_config(config)?;
    let telemetry = telemetry::init_logging(&settings.telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async {
        let app = App::build(settings).await?;
        app.run_until(shutdown_signal()).await?;
        anyhow::Ok(())
    });
    // The runtime first: the span exporter flushes with a blocking client, outside it. A
    // blocking task still running (a Kafka flush to a broker that does not answer) is left
    // behind after a second rather than holding the exit. With the sinks' close floor (2 s)
    // and their tasks' (1 s), a SIGTERM ends the process at most 4 s past the drain timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(telemetry);
    result
}

fn demo(options: DemoOptions) -> anyhow::Result<()> {
    let telemetry = vodbridge::config::TelemetryConfig {
        log_level: "warn".to_owned(),
        ..Default::default()
    };
    let _telemetry = telemetry::init_logging(&telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(vodbridge::demo::run(options, shutdown_signal()))?;
    Ok(())
}

fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use vodbridge::tools::redrive;

    let settings = Settings::from_config(Config::load(args.config.as_deref())?)?;
    let time = |what: &str, text: Option<String>| -> anyhow::Result<_> {
        text.map(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--{what} {t:?} is not an RFC 3339 time"))
        })
        .transpose()
    };
    let parsed = redrive::Filters {
        reasons: args
            .reasons
            .iter()
            .map(|r| {
                r.parse().with_context(|| {
                    format!(
                        "--reason {r:?}: expected one of {}",
                        reason_names().join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        event_types: args
            .event_types
            .iter()
            .map(|p| {
                vodbridge_core::EventTypePattern::parse(p)
                    .with_context(|| format!("--event-type {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
        sources: args.sources,
        since: time("since", args.since)?,
        until: time("until", args.until)?,
    };
    let options = redrive::Options {
        from: redrive::Location::parse(&args.from, args.sink.as_deref())?,
        filters: parsed,
        dry_run: args.dry_run,
        limit: args.limit,
        progress: std::io::stderr().is_terminal(),
    };
    let _telemetry = telemetry::init_logging(&vodbridge::config::TelemetryConfig {
        log_level: "warn".to_owned(),
        ..Default::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let summary = runtime.block_on(redrive::run(&settings, options))?;
    print!("{}", summary.render(args.dry_run));
    if summary.failed > 0 {
        anyhow::bail!(
            "{} event(s) failed again and were left where they were",
            summary.failed
        );
    }
    Ok(())
}

fn reason_names() -> Vec<&'static str> {
    vodbridge_core::FailureReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect()
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
