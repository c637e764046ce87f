//! Test hooks that record what crosses the host, for the snooping tests of sealed jobs: with
//! `CONCLAVE_CAPTURE_CHANNEL=<file>` every channel request and answer (one JSON line each), with
//! `CONCLAVE_CAPTURE_GOSSIP=<file>` every gossip message received (`u32 LE length ‖ bytes`).
//! Off unless the variable is set; a record is written with one `write` to a file opened for
//! appending, so several processes can share one file.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

/// The channel capture's variable.
pub const CHANNEL: &str = "CONCLAVE_CAPTURE_CHANNEL";
/// The gossip capture's variable.
pub const GOSSIP: &str = "CONCLAVE_CAPTURE_GOSSIP";

fn sinks() -> &'static Mutex<HashMap<&'static str, Option<std::fs::File>>> {
    static SINKS: OnceLock<Mutex<HashMap<&'static str, Option<std::fs::File>>>> = OnceLock::new();
    SINKS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Runs `f` on the file `var` names (opened once, on first use), if it names one.
fn with_sink<T>(var: &'static str, f: impl FnOnce(Option<&mut std::fs::File>) -> T) -> T {
    let mut map = match sinks().lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    let sink = map.entry(var).or_insert_with(|| {
        let path = std::env::var_os(var)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    f(sink.as_mut())
}

/// Appends `record` to the file `var` names, if it names one.
pub fn record(var: &'static str, record: &[u8]) {
    with_sink(var, |f| {
        if let Some(f) = f {
            let _ = f.write_all(record);
        }
    });
}

/// Whether `var` names a capture file (so callers skip encoding when it does not; the
/// environment is read once).
pub fn on(var: &'static str) -> bool {
    with_sink(var, |f| f.is_some())
}
