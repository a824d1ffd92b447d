//! Time as the host and its guests see it: the system clock in production, a manual clock in tests.
//!
//! One time scale serves everything: nanoseconds since the Unix epoch. `proxy_get_current_time_nanoseconds`,
//! WASI `clock_time_get`, tick periods and http-call timeouts all read the same [`Clock`], so a test that
//! advances a [`ManualClock`] moves the filter's idea of "now" and fires its timers in one step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a plugin's VMs read the time from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The host's wall clock.
    #[default]
    System,
    /// A clock that moves only when told to; shared by every clone.
    Manual(ManualClock),
}

impl Clock {
    /// Nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        match self {
            Clock::System => system_nanos(),
            Clock::Manual(manual) => manual.now_nanos(),
        }
    }

    /// The current time as a [`SystemTime`].
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.now_nanos())
    }

    /// The manual clock behind this clock, if it is one.
    pub fn as_manual(&self) -> Option<&ManualClock> {
        match self {
            Clock::Manual(manual) => Some(manual),
            Clock::System => None,
        }
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Clock::Manual(manual)
    }
}

/// A clock tests advance by hand. Clones share one time, so a test keeps a clone and moves every VM's clock.
///
/// It never goes backwards: [`ManualClock::set_nanos`] to an earlier time leaves it where it is.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Where a new manual clock starts: 2023-11-14T22:13:20Z, a fixed and recognisable instant.
    pub const DEFAULT_START_NANOS: u64 = 1_700_000_000_000_000_000;

    /// A manual clock at [`ManualClock::DEFAULT_START_NANOS`].
    pub fn new() -> Self {
        Self::at_nanos(Self::DEFAULT_START_NANOS)
    }

    /// A manual clock at the given time (times before the epoch count as the epoch).
    pub fn starting_at(time: SystemTime) -> Self {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .map(duration_nanos)
            .unwrap_or(0);
        Self::at_nanos(nanos)
    }

    fn at_nanos(nanos: u64) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(nanos)),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }

    /// The current time as a [`SystemTime`].
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.now_nanos())
    }

    /// Moves the clock forward. This alone fires no timers: use `Vm::advance` or `VmGroup::advance` for that.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::AcqRel);
    }

    /// Moves the clock to `nanos` since the epoch, unless it is already later.
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::AcqRel);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn system_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_nanos)
        .unwrap_or(0)
}
