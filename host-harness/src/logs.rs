//! What a guest logs: `proxy_log` messages and its stdout/stderr lines, captured per VM.
//!
//! Guest output is captured rather than inherited, as Envoy does: stdout lines become `Info` records and
//! stderr lines `Error` records (a Rust guest's panic message arrives this way). The buffer is bounded, so a
//! chatty filter in a long-running proxy cannot grow host memory; the oldest records go first. Every record
//! is also passed to the `log` crate under the target `wasm`, for embedders that install a logger.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Log levels of the proxy-wasm ABI, in order of severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `TRACE` (0).
    Trace,
    /// `DEBUG` (1).
    Debug,
    /// `INFO` (2).
    Info,
    /// `WARN` (3).
    Warn,
    /// `ERROR` (4).
    Error,
    /// `CRITICAL` (5).
    Critical,
}

impl LogLevel {
    /// The level for an ABI value, if it is one.
    pub fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The ABI value of this level.
    pub fn to_abi(self) -> u32 {
        self as u32
    }

    fn to_log_crate(self) -> log::Level {
        match self {
            LogLevel::Trace => log::Level::Trace,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info => log::Level::Info,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Error | LogLevel::Critical => log::Level::Error,
        }
    }
}

/// Where a log record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The guest called `proxy_log`.
    ProxyLog,
    /// A line the guest wrote to stdout.
    Stdout,
    /// A line the guest wrote to stderr.
    Stderr,
    /// The host, about this VM (a trap, a reload, a call that had no effect).
    Host,
}

/// One captured log message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The message text (invalid UTF-8 replaced).
    pub message: String,
    /// Where it came from.
    pub source: LogSource,
}

impl std::fmt::Display for LogRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:?}] {}", self.level, self.message)
    }
}

/// Longest stdout/stderr line kept; a longer line is cut so a guest cannot grow the buffer without bound.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// A VM's captured records, shared between the `proxy_log` host call and the guest's stdio streams.
#[derive(Clone, Debug)]
pub(crate) struct LogCapture {
    inner: Arc<Shared>,
    vm_label: Arc<str>,
}

#[derive(Debug)]
struct Shared {
    buffer: Mutex<LogBuffer>,
    /// The buffer's [`LogBuffer::position`], kept up to date under its lock so that [`LogCapture::mark`],
    /// taken before every callback, reads it without locking.
    position: AtomicU64,
}

#[derive(Debug)]
struct LogBuffer {
    records: VecDeque<LogRecord>,
    capacity: usize,
    dropped: u64,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

/// A buffer of records locked for a change; dropping it publishes the buffer's new position.
struct Locked<'a> {
    buffer: MutexGuard<'a, LogBuffer>,
    position: &'a AtomicU64,
}

impl std::ops::Deref for Locked<'_> {
    type Target = LogBuffer;

    fn deref(&self) -> &LogBuffer {
        &self.buffer
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut LogBuffer {
        &mut self.buffer
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.position
            .store(self.buffer.position(), Ordering::Release);
    }
}

impl LogCapture {
    pub(crate) fn new(capacity: usize, vm_label: &str) -> Self {
        let buffer = LogBuffer {
            records: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        };
        Self {
            inner: Arc::new(Shared {
                buffer: Mutex::new(buffer),
                position: AtomicU64::new(0),
            }),
            vm_label: Arc::from(vm_label),
        }
    }

    fn lock(&self) -> Locked<'_> {
        // A poisoned lock only means another thread panicked mid-push; the records are still usable.
        let buffer = self
            .inner
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Locked {
            buffer,
            position: &self.inner.position,
        }
    }

    pub(crate) fn push(&self, level: LogLevel, message: String, source: LogSource) {
        let level_for_log = level.to_log_crate();
        if log::log_enabled!(target: "wasm", level_for_log) {
            log::log!(target: "wasm", level_for_log, "{}: {}", self.vm_label, message);
        }
        self.lock().push(LogRecord {
            level,
            message,
            source,
        });
    }

    /// Pushes `text` as a record (invalid UTF-8 replaced). Once the buffer is full, the message goes into
    /// the string of the record it pushes out, so a steady stream of messages allocates nothing.
    pub(crate) fn push_text(&self, level: LogLevel, text: &[u8], source: LogSource) {
        if log::log_enabled!(target: "wasm", level.to_log_crate()) {
            self.push(level, lossy_text(text), source);
            return;
        }
        let mut buffer = self.lock();
        let mut message = match buffer.make_room() {
            Some(record) => {
                let mut reused = record.message;
                reused.clear();
                reused
            }
            // Until the buffer is full, each message gets a string of its size at once, where an
            // empty one would go through the growth path to reach it.
            None => String::with_capacity(text.len()),
        };
        push_lossy(&mut message, text);
        buffer.records.push_back(LogRecord {
            level,
            message,
            source,
        });
    }

    pub(crate) fn snapshot(&self) -> Vec<LogRecord> {
        self.lock().records.iter().cloned().collect()
    }

    pub(crate) fn take(&self) -> Vec<LogRecord> {
        self.lock().records.drain(..).collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// The position of the next record, used to find what a callback logged.
    pub(crate) fn mark(&self) -> u64 {
        self.inner.position.load(Ordering::Acquire)
    }

    /// Records pushed since `mark` that are still held.
    pub(crate) fn since(&self, mark: u64) -> Vec<LogRecord> {
        let buffer = self.lock();
        let skip = mark.saturating_sub(buffer.dropped);
        buffer
            .records
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Flushes a partial stdout/stderr line (one without a trailing newline) as a record.
    pub(crate) fn flush_partial_lines(&self) {
        let mut buffer = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let partial = std::mem::take(buffer.partial(source));
            if !partial.is_empty() {
                let record = output_record(source, &partial);
                buffer.push(record);
            }
        }
    }

    /// Appends guest stdout/stderr bytes; each completed line becomes a record.
    pub(crate) fn write_output(&self, source: LogSource, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut buffer = self.lock();
            for &byte in bytes {
                if byte == b'\n' {
                    lines.push(std::mem::take(buffer.partial(source)));
                } else {
                    let partial = buffer.partial(source);
                    if partial.len() < MAX_LINE_BYTES {
                        partial.push(byte);
                    }
                }
            }
        }
        for line in lines {
            let record = output_record(source, &line);
            self.push(record.level, record.message, source);
        }
    }
}

impl LogBuffer {
    fn push(&mut self, record: LogRecord) {
        self.make_room();
        self.records.push_back(record);
    }

    /// Pushes out the oldest record when the buffer is full, counting it as dropped, and returns it.
    fn make_room(&mut self) -> Option<LogRecord> {
        if self.records.len() < self.capacity {
            return None;
        }
        self.dropped = self.dropped.saturating_add(1);
        self.records.pop_front()
    }

    /// How many records were ever pushed, as far as this buffer knows: those dropped plus those held.
    fn position(&self) -> u64 {
        self.dropped.saturating_add(self.records.len() as u64)
    }

    fn partial(&mut self, source: LogSource) -> &mut Vec<u8> {
        match source {
            LogSource::Stderr => &mut self.partial_stderr,
            LogSource::Stdout | LogSource::ProxyLog | LogSource::Host => &mut self.partial_stdout,
        }
    }
}

/// `bytes` as text, invalid UTF-8 replaced. Valid text (nearly every message) is checked by the word-at-a-time
/// validator and copied, where the lossy decoder alone walks it byte by byte.
pub(crate) fn lossy_text(bytes: &[u8]) -> String {
    let mut text = String::new();
    push_lossy(&mut text, bytes);
    text
}

/// Appends `bytes` to `out` as text (see [`lossy_text`]).
fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

fn output_record(source: LogSource, line: &[u8]) -> LogRecord {
    let level = if source == LogSource::Stderr {
        LogLevel::Error
    } else {
        LogLevel::Info
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    LogRecord {
        level,
        message: lossy_text(line),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_become_records_and_partial_lines_wait_for_a_newline() {
        let capture = LogCapture::new(10, "vm");
        capture.write_output(LogSource::Stderr, b"panicked at x\nsecond ");
        assert_eq!(capture.snapshot().len(), 1);
        capture.write_output(LogSource::Stderr, b"half\n");
        let records = capture.snapshot();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].message, "second half");
        assert_eq!(records[1].level, LogLevel::Error);
    }

    #[test]
    fn the_buffer_keeps_only_the_newest_records() {
        let capture = LogCapture::new(2, "vm");
        let mark = capture.mark();
        for n in 0..5 {
            capture.push(LogLevel::Info, format!("m{n}"), LogSource::ProxyLog);
        }
        let messages: Vec<_> = capture
            .snapshot()
            .into_iter()
            .map(|record| record.message)
            .collect();
        assert_eq!(messages, vec!["m3", "m4"]);
        assert_eq!(capture.dropped(), 3);
        assert_eq!(capture.since(mark).len(), 2);
    }
}
