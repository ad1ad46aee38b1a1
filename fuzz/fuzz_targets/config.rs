//! Fuzz target: arbitrary text through the config loader (TOML, `${VAR}` expansion and
//! validation); it must answer with a config or a report, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match switchyard::config::parse(src, "fuzz", Box::new(|_| None)) {
        Ok(cfg) => {
            // What a valid config promises the proxy: a header value it can write as it is.
            let g = &cfg.server.gateway_header;
            assert!(!g.is_empty() && g.bytes().all(|b| (b' '..=b'~').contains(&b)));
            let _ = cfg.summary();
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
});
