//! A small stderr logger: `LEVEL thread message`, level from `RINGWAY_LOG` (error, warn, info,
//! debug, trace; default info).

use std::io::Write;

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) || !r.target().starts_with("ringway") {
            return;
        }
        let t = std::thread::current();
        let _ = writeln!(std::io::stderr().lock(), "{:5} [{}] {}", r.level(), t.name().unwrap_or("?"), r.args());
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = std::env::var("RINGWAY_LOG").ok().and_then(|s| s.parse().ok()).unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&Logger).is_ok() {
        log::set_max_level(level);
    }
}
