//! Access logs: one JSON line per sampled request, written off the hot path. Workers hand
//! finished lines to a bounded channel (never blocking: when it is full the line is dropped
//! and counted); one writer thread per file appends them, flushing whenever the channel runs
//! empty, and reopens the file when asked (SIGUSR1, for log rotation, as nginx does).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

/// How often an idle writer looks for a reopen request.
const REOPEN_POLL: Duration = Duration::from_millis(100);

/// A file's counts, shared by the workers that feed it and the admin side.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// Where a listener's lines go: the bounded channel to its file's writer thread.
#[derive(Clone, Debug)]
pub struct Sink {
    pub path: Arc<Path>,
    tx: Sender<String>,
    pub stats: Arc<SinkStats>,
}

impl Sink {
    /// Queues a line; drops (and counts) it when the writer has fallen behind.
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer threads, one per file, owned by the control thread.
#[derive(Default)]
pub struct Writers {
    files: Vec<(Sink, Arc<AtomicBool>)>,
}

impl Writers {
    /// The sink of `path`, starting its writer (with a queue of `queue` lines) on first use.
    pub fn sink(&mut self, path: &Path, queue: usize) -> std::io::Result<Sink> {
        if let Some((s, _)) = self.files.iter().find(|(s, _)| &*s.path == path) {
            return Ok(s.clone());
        }
        let file = open(path)?;
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let sink = Sink { path: path.into(), tx, stats: Arc::default() };
        let reopen = Arc::new(AtomicBool::new(false));
        let (p, r, stats) = (path.to_path_buf(), reopen.clone(), sink.stats.clone());
        std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || write_loop(p, file, rx, r, stats))?;
        self.files.push((sink.clone(), reopen));
        Ok(sink)
    }

    /// Every writer reopens its file before its next line (log rotation).
    pub fn reopen_all(&self) {
        for (_, r) in &self.files {
            r.store(true, Ordering::Relaxed);
        }
    }

    /// Every file's sink (the admin side reports their counts).
    pub fn sinks(&self) -> Vec<Sink> {
        self.files.iter().map(|(s, _)| s.clone()).collect()
    }
}

fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(64 * 1024, OpenOptions::new().create(true).append(true).open(path)?))
}

/// Appends lines until every sender is gone; flushes whenever the queue runs empty.
fn write_loop(
    path: PathBuf,
    mut file: BufWriter<File>,
    rx: Receiver<String>,
    reopen: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
) {
    loop {
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = file.flush();
            match open(&path) {
                Ok(f) => {
                    file = f;
                    log::info!("access log {} reopened", path.display());
                }
                Err(e) => {
                    log::error!("access log {}: reopen failed ({e}); still writing to the old file", path.display())
                }
            }
        }
        match rx.recv_timeout(REOPEN_POLL) {
            Ok(line) => {
                let ok = file.write_all(line.as_bytes()).and_then(|()| file.write_all(b"\n"));
                match ok {
                    Ok(()) => stats.written.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
                };
                if rx.is_empty() {
                    let _ = file.flush();
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = file.flush();
                return;
            }
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-06T04:30:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_530_186_207);
        assert_eq!(rfc3339(t), "2026-12-06T04:09:46.207Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_a_reopen_follows_a_rename() {
        let dir = std::env::temp_dir().join(format!("ringway-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut w = Writers::default();
        let sink = w.sink(&path, 4).unwrap();
        for i in 0..1000 {
            sink.send(format!("{{\"n\":{i}}}"));
        }
        let settled = || sink.stats.written.load(Ordering::Relaxed) + sink.stats.dropped.load(Ordering::Relaxed);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while settled() < 1000 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(settled(), 1000, "every line written or counted as dropped");
        assert!(sink.stats.dropped.load(Ordering::Relaxed) > 0, "a queue of 4 cannot take 1000 at once");
        // Rotation: rename the file, ask for a reopen; later lines go to a new file.
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        w.reopen_all();
        std::thread::sleep(REOPEN_POLL * 3);
        sink.send("after".into());
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default() != "after\n" && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert!(!std::fs::read_to_string(&rotated).unwrap().contains("after"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
