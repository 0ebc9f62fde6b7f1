//! The host's TSC frequency, for a guest kernel under TCG. TCG passes the host's TSC through, but
//! a small test kernel (no HPET, no ACPI PM timer) calibrates it against the PIT, which fails when
//! the host is busy; with tsc_khz 0, KVM inside the guest never enters its own guests (KVM_RUN
//! spins). `tsc_early_khz=` on the kernel command line tells it the frequency instead.

use std::time::{Duration, Instant};

const SAMPLE: Duration = Duration::from_millis(15);

/// The TSC frequency in kHz, measured against the monotonic clock: the median of three samples.
pub fn host_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut samples: Vec<f64> = (0..3)
            .map(|_| {
                // SAFETY: rdtsc has no preconditions on x86-64.
                let (t0, c0) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
                std::thread::sleep(SAMPLE);
                // SAFETY: as above.
                let (c1, t1) = (unsafe { core::arch::x86_64::_rdtsc() }, Instant::now());
                c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64() / 1000.0
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        let khz = samples[1].round();
        (khz > 0.0 && khz.is_finite()).then_some(khz as u64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_measured_frequency_is_plausible() {
        let khz = super::host_tsc_khz().expect("x86-64 has a TSC");
        // Any x86-64 TSC of the last two decades ticks between 500 MHz and 10 GHz.
        assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
