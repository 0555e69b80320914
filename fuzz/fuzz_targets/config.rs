//! Any text as a TOML config, then validated, printed, re-read and overridden: errors, never a
//! panic, and a config that survives its own round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The text is also tried as one `--set key=value`.
    let mut overridden = Config::default();
    let _ = overridden.set(text);
    let _ = overridden.validate();
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate();
        let again = Config::from_toml(&config.to_toml()).expect("a printed config parses");
        assert_eq!(again.to_toml(), config.to_toml());
    }
});
