//! Waiting, with a deadline, for something observable that another thread or process brings about: a
//! condition such as a token refresh or a state file written in the background, a value that settles, or
//! a log line on a child's output.
//!
//! Tests wait here instead of sleeping: a fixed sleep is either too short on a loaded machine or slower
//! than needed everywhere else. Every wait is bounded and its failure names what was awaited. An assertion
//! that something did *not* happen first waits for a later event that proves the window has passed.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How often [`until`] and [`until_some`] check: short against the seconds the awaited work takes.
const POLL: Duration = Duration::from_millis(50);

/// Checks `done` every 50 ms until it holds.
///
/// # Errors
/// When `timeout` passes first; the message names `what` was awaited.
pub fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    until_some(what, timeout, || done().then_some(()))
}

/// Calls `probe` every 50 ms until it returns a value, and returns that value.
///
/// # Errors
/// When `timeout` passes first; the message names `what` was awaited.
pub fn until_some<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// The next line from `lines` (a child's output, read on another thread) that contains `needle`;
/// earlier lines are consumed.
///
/// # Errors
/// When `timeout` passes first or the output ends; the message names the awaited text.
pub fn line(lines: &Receiver<String>, needle: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(_) => {}
            Err(err) => anyhow::bail!("no line containing {needle:?} within {timeout:?}: {err}"),
        }
    }
}
