//! Waiting for a condition that another thread or process brings about, such as a token refresh or a
//! state file written in the background, where there is no event to block on.

use std::time::{Duration, Instant};

/// How often [`until`] checks the condition: short against the seconds the awaited work takes.
const POLL: Duration = Duration::from_millis(50);

/// Checks `done` every 50 ms until it holds.
///
/// # Errors
/// When `timeout` passes first; the message names `what` was awaited.
pub fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}
