//! The reliability suite: the no-loss promise tried end to end with the real `vodbridge`
//! binary, real brokers and the VOD emulator, judged by the emulator's ledger and an
//! independent consumer per broker (by FileId), never by the bridge's own counters. The minute-long
//! push outage and spool scenarios live here too, out of the default `it` suite.
//!
//! Each scenario prints its counts as one `RELIABILITY {json}` line and writes them to
//! `$CARGO_TARGET_TMPDIR/reliability/`; RELIABILITY.md records the last run. Run it alone with
//! `cargo test --test reliability -- --nocapture` (it is part of the README's test command).

mod best_effort;
mod crash;
mod fleet;
// The in-process app, the emulator and the broker readers the `it` suite uses, for the scenarios
// that run the bridge in process (push outages, the spool).
#[path = "../it/helpers.rs"]
#[allow(
    dead_code,
    reason = "each suite uses its own part of the shared helpers"
)]
mod helpers;
mod outage;
mod partition;
mod push_outage;
mod refusals;
mod shutdown;
mod spool;
mod sub_apps;
mod support;
mod vod_faults;
