//! What a sub-application costs a pull source with `sub_app_ids = "all"`: the real `vodbridge`
//! binary on the VOD emulator (VOD's 5 s long poll and limits), quiet, with 1 (a plain
//! `sub_app_id` source, the in-run baseline), 50 and 500 sub-applications. Reports its resident
//! memory, its CPU time per second, and the `PullEvents` calls per second the quiet
//! sub-applications spend (the fair pacing's share of the account's budget).
//!
//! `cargo bench --bench sub_apps`; env `SUB_APPS` ("50,500"), `SETTLE_SECS` (20).
#![allow(missing_docs)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use vod_emulator::{sub_app, Emulator, EmulatorConfig, Limits, RunningEmulator};
use vodbridge_testkit::free_port;

mod support;

const ID: &str = "AKIDSUBAPPBENCH";
const KEY: &str = "sub-app-bench";
const FIRST: u64 = 1_600_000_000;

/// `VmRSS` of a process, KiB, and its user + system CPU time, s.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    (rss, ticks / 100.0)
}

async fn emulator(sub_apps: u64) -> RunningEmulator {
    let mut config = EmulatorConfig::new(ID, KEY);
    config.long_poll = Duration::from_secs(5);
    config.limits = Limits::VOD;
    let emu = Emulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves");
    for i in 0..sub_apps {
        emu.emulator
            .add_sub_app(sub_app(FIRST + i, &format!("tenant-{i}")));
    }
    emu
}

/// One run: a bridge on `sub_apps` sub-applications (1: a plain `sub_app_id` source), quiet for
/// `settle`, then measured for `settle`. Returns (RSS KiB, CPU s per s, pulls per s).
async fn run(sub_apps: u64, settle: Duration) -> (u64, f64, f64) {
    let emu = emulator(sub_apps).await;
    let port = free_port();
    let which = if sub_apps == 1 {
        format!("sub_app_id = {FIRST}")
    } else {
        "sub_app_ids = \"all\"".to_owned()
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[telemetry]\nlog_level = \"error\"\n\
         [sources.tenants]\nmode = \"pull\"\nendpoint = \"{}\"\nsecret_id = \"{ID}\"\n\
         secret_key = \"{KEY}\"\n{which}\nloops = 4\nvod_check = \"off\"\n\
         [sinks.out]\ntype = \"stdout\"\n",
        emu.endpoint()
    );
    let client = reqwest::Client::new();
    let (mut child, _config) = support::start_bridge(&config, port, &client).await;
    tokio::time::sleep(settle).await;
    let pid = child.id();
    let (_, cpu_before) = usage(pid);
    let pulls_before = emu.emulator.stats().pulls;
    let started = Instant::now();
    tokio::time::sleep(settle).await;
    let seconds = started.elapsed().as_secs_f64();
    let (rss, cpu_after) = usage(pid);
    let pulls = (emu.emulator.stats().pulls - pulls_before) as f64 / seconds;
    let _ = child.kill();
    let _ = child.wait();
    (rss, (cpu_after - cpu_before) / seconds, pulls)
}

fn main() {
    let counts: Vec<u64> = std::env::var("SUB_APPS")
        .unwrap_or_else(|_| "50,500".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let settle = Duration::from_secs(support::env_usize("SETTLE_SECS", 20) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (base_rss, base_cpu, base_pulls) = run(1, settle).await;
        println!("| sub-applications | RSS MiB | RSS ÷ one sub-application | KiB per added sub-application | CPU ms/s | PullEvents/s (quiet) |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| 1 (baseline, `sub_app_id`) | {:.1} | 1.00 | — | {:.1} | {base_pulls:.1} |",
            base_rss as f64 / 1024.0,
            base_cpu * 1000.0
        );
        for count in counts {
            let (rss, cpu, pulls) = run(count, settle).await;
            println!(
                "| {count} | {:.1} | {:.2} | {:.0} | {:.1} | {pulls:.1} |",
                rss as f64 / 1024.0,
                rss as f64 / base_rss.max(1) as f64,
                (rss as f64 - base_rss as f64) / (count - 1) as f64,
                cpu * 1000.0
            );
        }
    });
}
