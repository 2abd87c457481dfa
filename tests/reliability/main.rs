//! The reliability suite: the no-loss promise tried end to end with the real `vodbridge`
//! binary, real brokers and the VOD emulator, judged by the emulator's ledger and an
//! independent consumer per broker (by FileId), never by the bridge's own counters.
//!
//! Each scenario prints its counts as one `RELIABILITY {json}` line and writes them to
//! `$CARGO_TARGET_TMPDIR/reliability/`; RELIABILITY.md records the last run. Run it alone with
//! `cargo test --test reliability -- --nocapture` (it is part of the README's test command).

mod crash;
mod outage;
mod partition;
mod refusals;
mod shutdown;
mod support;
mod vod_faults;
