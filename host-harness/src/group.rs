//! Several VMs of one plugin advanced together on one manual clock, as Envoy runs one VM per worker.

use std::time::Duration;

use crate::clock::duration_nanos;
use crate::error::HarnessError;
use crate::plugin::Plugin;
use crate::vm::{MAX_TIMER_ROUNDS, Vm};

/// VMs of one plugin sharing its clock, metrics, shared data and queues; timers fire across all of them
/// in time order.
#[derive(Debug)]
pub struct VmGroup {
    vms: Vec<Vm>,
}

impl VmGroup {
    /// Starts `count` VMs of `plugin`.
    ///
    /// # Errors
    /// Whatever [`Plugin::start_vm`] fails with.
    pub fn start(plugin: &Plugin, count: usize) -> Result<Self, HarnessError> {
        let vms = (0..count)
            .map(|_| plugin.start_vm())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { vms })
    }

    /// The VMs.
    pub fn vms(&mut self) -> &mut [Vm] {
        &mut self.vms
    }

    /// One VM by index.
    pub fn vm(&mut self, index: usize) -> Option<&mut Vm> {
        self.vms.get_mut(index)
    }

    /// Moves the shared manual clock forward, firing every VM's due timers at their own times, in order.
    ///
    /// # Errors
    /// [`HarnessError::NotManualClock`] when the plugin runs on the system clock.
    pub fn advance(&mut self, by: Duration) -> Result<(), HarnessError> {
        let Some(first) = self.vms.first() else {
            return Ok(());
        };
        let manual = first
            .plugin()
            .clock()
            .as_manual()
            .cloned()
            .ok_or(HarnessError::NotManualClock("VmGroup::advance"))?;
        let target = manual.now_nanos().saturating_add(duration_nanos(by));
        for _ in 0..MAX_TIMER_ROUNDS {
            let next = self
                .vms
                .iter()
                .enumerate()
                .filter_map(|(index, vm)| vm.next_due_nanos().map(|due| (due, index)))
                .filter(|(due, _)| *due <= target)
                .min();
            let Some((due, index)) = next else { break };
            manual.set_nanos(due);
            let now = manual.now_nanos();
            let fired = self.vms.get_mut(index).is_some_and(|vm| vm.fire_due(now));
            if !fired {
                break;
            }
        }
        manual.set_nanos(target);
        for vm in &mut self.vms {
            vm.fire_due(target);
        }
        Ok(())
    }
}
