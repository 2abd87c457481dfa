//! Fuzz target: any text as the configuration file is parsed and validated without a panic;
//! a configuration that validates describes itself (what `check-config` prints) without one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodbridge::config::{Config, Settings};

fuzz_target!(|text: &str| {
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    if let Ok(settings) = Settings::from_config(config) {
        let _ = settings.describe();
    }
});
