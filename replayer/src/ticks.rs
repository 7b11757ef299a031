//! Cheap timing of the time spent inside the backend (`Report::replayed_ioctl_ns`).
//!
//! Two `clock_gettime` calls per replayed ioctl cost ~66 ns on the benchmark machine (a
//! KVM guest), 6–7 % of a replayed call against the in-process emulator. Where the
//! kernel itself times with the TSC (current clocksource `tsc`: it found the counter
//! invariant and synchronised across CPUs), the replay reads the TSC instead (~12 ns per
//! read there) and converts the sum of the ticks spent inside the backend into
//! nanoseconds with the rate measured between [`Ticks::new`] and [`Ticks::ns`] against
//! the monotonic clock. Elsewhere a tick is a nanosecond of [`Instant`].

use std::sync::OnceLock;
use std::time::Instant;

/// An interval clock: [`Ticks::now`] values are only meaningful as differences, and
/// [`Ticks::ns`] converts a sum of such differences to nanoseconds.
#[derive(Debug)]
pub(crate) struct Ticks {
    tsc: bool,
    wall0: Instant,
    ticks0: u64,
}

/// True if the kernel's current clocksource is the TSC (so reading it directly gives the
/// same clock the kernel trusts, on every CPU).
fn kernel_uses_tsc() -> bool {
    static TSC: OnceLock<bool> = OnceLock::new();
    *TSC.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
    })
}

impl Ticks {
    /// Starts the calibration window: TSC if the kernel uses it, else [`Instant`].
    pub(crate) fn new() -> Ticks {
        Ticks::with_tsc(kernel_uses_tsc())
    }

    /// A clock that reads the TSC (`true`, x86-64 only) or [`Instant`] (`false`).
    pub(crate) fn with_tsc(tsc: bool) -> Ticks {
        let tsc = tsc && cfg!(target_arch = "x86_64");
        let mut t = Ticks {
            tsc,
            wall0: Instant::now(),
            ticks0: 0,
        };
        t.ticks0 = t.now();
        t
    }

    /// The current tick count.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // SAFETY: RDTSC has no preconditions; every x86-64 CPU has it.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.wall0.elapsed().as_nanos() as u64
    }

    /// `ticks` (a sum of [`Ticks::now`] differences) in nanoseconds, at the rate measured
    /// since [`Ticks::new`].
    pub(crate) fn ns(&self, ticks: u64) -> u64 {
        if !self.tsc {
            return ticks;
        }
        let wall = self.wall0.elapsed().as_nanos();
        let elapsed = self.now().wrapping_sub(self.ticks0) as u128;
        if elapsed == 0 {
            return 0;
        }
        (ticks as u128 * wall / elapsed).min(u64::MAX as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy-waits `d` of wall time.
    fn spin(d: std::time::Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    /// An interval measured in ticks converts to the wall time it took (within a margin
    /// that wall-clock noise cannot break: the assertion is on the conversion, a factor,
    /// not on a speed).
    #[test]
    fn ticks_convert_to_the_wall_time_they_measured() {
        for tsc in [false, true] {
            let clock = Ticks::with_tsc(tsc);
            let a = clock.now();
            let w = Instant::now();
            spin(std::time::Duration::from_millis(20));
            let b = clock.now();
            let wall = w.elapsed().as_nanos() as u64;
            spin(std::time::Duration::from_millis(20));
            let ns = clock.ns(b.wrapping_sub(a));
            // The interval was half of the calibration window; a wrong rate (ticks taken
            // as ns on a GHz counter, or the ratio inverted) is off by orders of magnitude.
            assert!(
                ns > wall / 2 && ns < wall * 2,
                "tsc={tsc}: {ns} ns measured, {wall} ns of wall time"
            );
        }
    }
}
