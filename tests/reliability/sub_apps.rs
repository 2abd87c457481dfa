//! Fifty sub-applications of one VOD account from one source (`sub_app_ids = "all"`), under
//! VOD's limits (100 `PullEvents` and 100 `ConfirmEvents` per second for the account), 20 ms
//! on every call and VOD's 5 s long poll, into NATS JetStream. Forty-nine sub-applications get
//! a trickle (10 events/s in all) throughout; one gets a 16,000-event backlog. Three phases:
//! the trickle alone (the quiet sub-applications' baseline wait), the trickle with the backlog,
//! and the trickle with a second backlog drained by two replicas. Judged by the emulator's
//! ledger (queued → confirmed, redeliveries, pulls per sub-application) and NATS's stream.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;
use vod_emulator::{sub_app, Faults, RunningEmulator};
use vodbridge_testkit::NatsServer;

use crate::support::{
    bridge, event, metric, nats_held, nats_sink, report, route_to, wait_for, wait_ready, ID, KEY,
};

const SUB_APPS: u64 = 50;
const FIRST: u64 = 1_600_000_000;
/// The sub-application with the backlog.
const BUSY: u64 = FIRST;
const BACKLOG: usize = 16_000;
/// Events per second over the 49 quiet sub-applications.
const TRICKLE_PER_SEC: u64 = 10;
/// VOD's bound for one account: 100 pulls/s of 16 events.
const VOD_BOUND: f64 = 1_600.0;

/// The emulator: VOD's limits, VOD's 5 s long poll and 30 s handles, 20 ms per call, 50
/// sub-applications listed On.
async fn emulator() -> RunningEmulator {
    let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
    config.visibility = Duration::from_secs(30);
    config.long_poll = Duration::from_secs(5);
    config.limits = vod_emulator::Limits::VOD;
    let emu = vod_emulator::Emulator::new(config)
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves");
    emu.emulator.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    for i in 0..SUB_APPS {
        emu.emulator
            .add_sub_app(sub_app(FIRST + i, &format!("tenant-{i}")));
    }
    emu
}

fn config(emu: &RunningEmulator, nats: &NatsServer) -> String {
    format!(
        r#"
[sources.tenants]
mode = "pull"
endpoint = "{endpoint}"
secret_id = "{ID}"
secret_key = "{KEY}"
sub_app_ids = "all"
sub_app_refresh_secs = 10
loops = 4
handle_lifetime_ms = 30000
confirm_margin_ms = 7500
max_backoff_ms = 500
{nats}{route}"#,
        endpoint = emu.endpoint(),
        nats = nats_sink(nats),
        route = route_to(&[("nats", "vod.{event_type}")]),
    )
}

/// Events the trickle queued: ledger key → phase.
type Trickled = Arc<Mutex<HashMap<u64, &'static str>>>;

/// Queues 10 events/s over the 49 quiet sub-applications, round robin, labelled with the
/// phase that is current when each is queued, until `done`.
fn trickle(
    emu: &RunningEmulator,
    phase: Arc<Mutex<&'static str>>,
    done: Arc<AtomicBool>,
) -> (Trickled, tokio::task::JoinHandle<()>) {
    let queued: Trickled = Arc::default();
    let (emulator, out) = (emu.emulator.clone(), Arc::clone(&queued));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / TRICKLE_PER_SEC));
        let mut i = 0_u64;
        while !done.load(Ordering::Relaxed) {
            tick.tick().await;
            let sub_app = FIRST + 1 + i % (SUB_APPS - 1);
            let (_, body) = event("quiet", i as usize);
            let key = emulator.enqueue(sub_app, &body);
            let now = *phase.lock().expect("lock");
            out.lock().expect("lock").insert(key, now);
            i += 1;
        }
    });
    (queued, task)
}

/// The p99 and the most of `waits`, in ms.
fn p99(mut waits: Vec<f64>) -> (f64, f64) {
    waits.sort_by(f64::total_cmp);
    let at = ((waits.len() as f64) * 0.99).ceil() as usize;
    (
        waits[at.saturating_sub(1).min(waits.len() - 1)],
        *waits.last().unwrap_or(&0.0),
    )
}

/// Queued → confirmed of the trickled events of `phase`, in ms, and how many are unconfirmed.
fn quiet_waits(emu: &RunningEmulator, trickled: &Trickled, phase: &str) -> (Vec<f64>, usize) {
    let trickled = trickled.lock().expect("lock");
    let (mut waits, mut open) = (Vec::new(), 0);
    for entry in emu.emulator.ledger() {
        if trickled.get(&entry.key) != Some(&phase) {
            continue;
        }
        match entry.confirmed_at {
            Some(at) => waits.push((at - entry.enqueued_at).as_seconds_f64() * 1000.0),
            None => open += 1,
        }
    }
    (waits, open)
}

/// Queues the backlog in the busy sub-application; returns its keys.
fn backlog(emu: &RunningEmulator, run: &str) -> Vec<u64> {
    (0..BACKLOG)
        .map(|i| emu.emulator.enqueue(BUSY, &event(run, i).1))
        .collect()
}

/// Waits until every key is confirmed; the time from the first queued to the last confirmed,
/// in s. Reads the emulator's totals until enough events are confirmed and only then its
/// ledger: copying 30,000 entries every few milliseconds would take the cores the run measures.
async fn drained(emu: &RunningEmulator, keys: &[u64], confirmed_before: u64) -> f64 {
    let target = confirmed_before + keys.len() as u64;
    wait_for("the backlog confirmed", Duration::from_secs(90), || {
        emu.emulator.stats().confirmed >= target
    })
    .await;
    let keys: std::collections::HashSet<u64> = keys.iter().copied().collect();
    loop {
        let ledger = emu.emulator.ledger();
        let of_backlog: Vec<_> = ledger.iter().filter(|e| keys.contains(&e.key)).collect();
        if of_backlog.iter().all(|e| e.confirmed_at.is_some()) {
            let last = of_backlog.iter().filter_map(|e| e.confirmed_at).max();
            let first = of_backlog.iter().map(|e| e.enqueued_at).min();
            let (Some(last), Some(first)) = (last, first) else {
                panic!("no backlog");
            };
            return (last - first).as_seconds_f64();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Pulls per sub-application so far.
fn pulls(emu: &RunningEmulator) -> BTreeMap<u64, u64> {
    emu.emulator.stats().pulls_by_sub_app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sub_apps_one_backlog_share_the_account_fairly() {
    let nats = NatsServer::start();
    let emu = emulator().await;
    let body = config(&emu, &nats);
    let first = bridge(&body, 35);
    wait_ready(&first, Duration::from_secs(30)).await;
    wait_for(
        "50 sub-applications pulled",
        Duration::from_secs(20),
        || pulls(&emu).len() as u64 == SUB_APPS,
    )
    .await;

    let phase = Arc::new(Mutex::new("baseline"));
    let done = Arc::new(AtomicBool::new(false));
    let (trickled, trickling) = trickle(&emu, Arc::clone(&phase), Arc::clone(&done));

    // 1. The trickle alone for 30 s.
    tokio::time::sleep(Duration::from_secs(30)).await;

    // 2. The backlog in one sub-application, with the trickle.
    *phase.lock().expect("lock") = "backlog";
    let pulls_before = pulls(&emu);
    let stats_before = emu.emulator.stats();
    let keys = backlog(&emu, "busy");
    let one = drained(&emu, &keys, stats_before.confirmed).await;
    let pulls_after = pulls(&emu);
    let stats_after = emu.emulator.stats();
    *phase.lock().expect("lock") = "after";
    let quiet_pulls: u64 = pulls_after
        .iter()
        .filter(|(id, _)| **id != BUSY)
        .map(|(id, n)| n - pulls_before.get(id).copied().unwrap_or(0))
        .sum();
    let busy_pulls = pulls_after[&BUSY] - pulls_before[&BUSY];

    // 3. A second replica joins; a second backlog with the trickle.
    let second = bridge(&body, 35);
    wait_ready(&second, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    *phase.lock().expect("lock") = "two_replicas";
    let throttled_before = emu.emulator.stats();
    let keys_two = backlog(&emu, "again");
    let two = drained(&emu, &keys_two, throttled_before.confirmed).await;
    let throttled_after = emu.emulator.stats();
    *phase.lock().expect("lock") = "after";
    tokio::time::sleep(Duration::from_secs(8)).await;
    let replica_confirms = [
        metric(&first, r#"vodbridge_confirmed_total{source="tenants"}"#)
            .await
            .unwrap_or(0.0),
        metric(&second, r#"vodbridge_confirmed_total{source="tenants"}"#)
            .await
            .unwrap_or(0.0),
    ];

    // 4. A rolling restart of both replicas (SIGTERM, a new one, the next) while a third
    //    backlog drains: each stops its 50 sub-applications, confirming what it pulled.
    *phase.lock().expect("lock") = "rolling";
    let rolling_before = emu.emulator.stats();
    let keys_rolling = backlog(&emu, "rolling");
    let mut exits = Vec::new();
    let mut replicas = vec![first, second];
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut old = replicas.remove(0);
        exits.push(old.terminate(Duration::from_secs(40)));
        let fresh = bridge(&body, 35);
        wait_ready(&fresh, Duration::from_secs(30)).await;
        replicas.push(fresh);
    }
    let rolling = drained(&emu, &keys_rolling, rolling_before.confirmed).await;
    done.store(true, Ordering::Relaxed);
    trickling.await.expect("trickle");
    wait_for(
        "every trickled event confirmed",
        Duration::from_secs(30),
        || emu.emulator.stats().pending == 0,
    )
    .await;
    let (baseline, baseline_open) = quiet_waits(&emu, &trickled, "baseline");
    let (during, during_open) = quiet_waits(&emu, &trickled, "backlog");
    let (during_two, two_open) = quiet_waits(&emu, &trickled, "two_replicas");
    let (baseline_p99, baseline_max) = p99(baseline.clone());
    let (during_p99, during_max) = p99(during.clone());
    let (two_p99, two_max) = p99(during_two.clone());
    let stats = emu.emulator.stats();
    let trickled_by_app: BTreeMap<u64, usize> =
        emu.emulator
            .ledger()
            .iter()
            .fold(BTreeMap::new(), |mut by, e| {
                if e.sub_app_id != BUSY {
                    *by.entry(e.sub_app_id).or_default() += usize::from(e.confirmed_at.is_some());
                }
                by
            });
    let held = nats_held(&nats).await;
    let expected = 3 * BACKLOG + trickled.lock().expect("lock").len();
    // Calls the account's limit refused, of all PullEvents calls, while two replicas drained.
    let answered_two = throttled_after.pulls - throttled_before.pulls;
    let refused_two = throttled_after.throttled_pulls - throttled_before.throttled_pulls;
    let refused_share = refused_two as f64 / (answered_two + refused_two).max(1) as f64;
    report(
        "sub_apps_fair_share",
        json!({
            "sub_apps": SUB_APPS,
            "backlog": BACKLOG,
            "sent": expected,
            "confirmed": stats.confirmed,
            "quiet_p99_ms": {"baseline": baseline_p99, "with_backlog": during_p99, "two_replicas": two_p99},
            "quiet_max_ms": {"baseline": baseline_max, "with_backlog": during_max, "two_replicas": two_max},
            "quiet_events": {"baseline": baseline.len(), "with_backlog": during.len(), "two_replicas": during_two.len()},
            "drain_secs": {"one_replica": one, "two_replicas": two},
            "drain_per_sec": {"one_replica": BACKLOG as f64 / one, "two_replicas": BACKLOG as f64 / two},
            "share_of_vod_bound": {"one_replica": BACKLOG as f64 / one / VOD_BOUND, "two_replicas": BACKLOG as f64 / two / VOD_BOUND},
            "pulls_during_backlog": {"busy": busy_pulls, "quiet": quiet_pulls, "per_sec": (busy_pulls + quiet_pulls) as f64 / one},
            "throttled_pulls": {"one_replica": stats_after.throttled_pulls - stats_before.throttled_pulls, "two_replicas": throttled_after.throttled_pulls - throttled_before.throttled_pulls},
            "throttled_confirms_two_replicas": throttled_after.throttled_confirms - throttled_before.throttled_confirms,
            "pulls_per_sec_two_replicas": answered_two as f64 / two,
            "throttled_share_two_replicas": refused_share,
            "replica_confirms": replica_confirms,
            "rolling_restart": {"events": BACKLOG, "drain_secs": rolling, "sigterm_exit_zero": exits},
            "redeliveries": stats.redeliveries,
            "nats": {"held": held.0.len(), "unique": held.unique().len(), "duplicates": held.duplicates(), "expected": expected},
        }),
    );

    assert_eq!(stats.redeliveries, 0, "no event handed out twice");
    assert_eq!(baseline_open + during_open + two_open, 0);
    assert_eq!(held.unique().len(), expected, "NATS holds every event");
    assert_eq!(
        trickled_by_app.len() as u64,
        SUB_APPS - 1,
        "every quiet sub-application had its events confirmed: {trickled_by_app:?}"
    );
    assert!(
        during_p99 <= 2.0 * baseline_p99,
        "quiet p99 with the backlog {during_p99:.0} ms, without {baseline_p99:.0} ms"
    );
    assert!(
        BACKLOG as f64 / one >= 0.8 * VOD_BOUND,
        "the backlog drained at {:.0}/s",
        BACKLOG as f64 / one
    );
    assert!(
        replica_confirms.iter().all(|c| *c > 1_000.0),
        "both replicas drained: {replica_confirms:?}"
    );
    assert!(
        refused_share <= 0.10,
        "two replicas stay within the account's 100 pulls/s: {:.1} % of calls over it",
        refused_share * 100.0
    );
    assert!(
        two_p99 <= 2.0 * baseline_p99,
        "quiet p99 with two replicas {two_p99:.0} ms, without {baseline_p99:.0} ms"
    );
    assert!(
        exits.iter().all(|exited| *exited),
        "each SIGTERM drained its sub-applications and exited 0: {exits:?}"
    );
    for mut replica in replicas {
        assert!(replica.terminate(Duration::from_secs(40)));
    }
}
