//! Fuzz target: the token tape reads any text as the serde_json tree it replaced did: it
//! accepts and refuses the same bodies, and writes the same canonical bytes (so ids never move),
//! strictly (a key twice refused) and leniently (the last wins, as `serde_json::Value`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodbridge_tencent::differential::{oracle_lenient, oracle_strict, tape_lenient, tape_strict};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (tape, oracle) in [
        (tape_strict(text), oracle_strict(text)),
        (tape_lenient(text), oracle_lenient(text)),
    ] {
        match (tape, oracle) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "canonical forms differ for {text:?}"),
            (Err(_), Err(_)) => {}
            (tape, oracle) => panic!("{text:?}: tape {tape:?}, serde_json {oracle:?}"),
        }
    }
});
