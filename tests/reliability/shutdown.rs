//! Clean shutdown under load: SIGTERM in the middle of a pull stream at VOD's real handle
//! lifetime (30 s). The bridge stops pulling, finishes what it pulled (a pull on the wire
//! included), confirms it, closes the sinks and exits 0; everything it was handed is confirmed,
//! and a second bridge finishes the stream with no event handed out or published twice.

use std::time::{Duration, Instant};

use serde_json::json;
use vodbridge_testkit::NatsServer;

use crate::support::{
    acknowledged, bridge, emulator, enqueue, file_held, nats_held, nats_sink, pull_source, report,
    route_to, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_with_no_duplicates() {
    const EVENTS: usize = 6_000;
    const LIFETIME_MS: u64 = 30_000;
    let nats = NatsServer::start();
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let body = format!(
        "{}{}[sinks.file]\ntype = \"file\"\npath = {:?}\nfsync = \"never\"\n{}",
        pull_source(&emu, LIFETIME_MS, 4),
        nats_sink(&nats),
        path.display().to_string(),
        route_to(&[("file", ""), ("nats", "vod.{event_type}")]),
    );
    // The default drain (35 s) covers the 30 s lifetime: no batch is cut off.
    let mut first = bridge(&body, 35);
    let keys = enqueue(&emu, "79", 0..EVENTS);
    wait_for("a third of the stream", Duration::from_secs(60), || {
        emu.emulator.stats().confirmed >= (EVENTS / 3) as u64
    })
    .await;
    let signalled = Instant::now();
    let confirmed_at_signal = acknowledged(&emu, &keys).len();
    let clean = first.terminate(Duration::from_secs(45));
    let exit_secs = signalled.elapsed().as_secs_f64();
    let ledger = emu.emulator.ledger();
    let handed_out_unconfirmed = ledger
        .iter()
        .filter(|e| keys.contains_key(&e.key) && e.delivered > 0 && e.confirmed_at.is_none())
        .count();
    let confirmed_at_exit = acknowledged(&emu, &keys).len();
    let published_at_exit = file_held(&path).0.len();

    let second = bridge(&body, 35);
    wait_for("the rest confirmed", Duration::from_secs(90), || {
        acknowledged(&emu, &keys).len() == EVENTS
    })
    .await;
    let stats = emu.emulator.stats();
    let file = file_held(&path);
    let stream = nats_held(&nats).await;
    let confirmed = acknowledged(&emu, &keys);
    report(
        "sigterm-under-load",
        json!({
            "sent": EVENTS, "confirmed_at_signal": confirmed_at_signal,
            "exit_code_zero": clean, "exit_seconds": (exit_secs * 10.0).round() / 10.0,
            "confirmed_at_exit": confirmed_at_exit, "published_at_exit": published_at_exit,
            "handed_out_unconfirmed_at_exit": handed_out_unconfirmed,
            "confirmed": confirmed.len(), "redeliveries": stats.redeliveries,
            "file": { "messages": file.0.len(), "duplicates": file.duplicates(),
                      "lost": file.missing(&confirmed).len() },
            "nats": { "messages": stream.0.len(), "duplicates": stream.duplicates(),
                      "lost": stream.missing(&confirmed).len() },
        }),
    );
    assert!(clean, "SIGTERM ends in exit 0");
    assert_eq!(
        handed_out_unconfirmed, 0,
        "everything the bridge was handed is confirmed before it exits"
    );
    assert_eq!(
        confirmed_at_exit, published_at_exit,
        "what was published before exit was confirmed"
    );
    assert_eq!(stats.redeliveries, 0, "nothing handed out twice");
    assert_eq!(file.duplicates(), 0, "no event published twice");
    assert!(file.missing(&confirmed).is_empty());
    assert!(stream.missing(&confirmed).is_empty());
    drop(second);
}
