//! Giving the heap's free pages back to the system.
//!
//! glibc's allocator returns memory to the system only from the top of an arena. A burst of
//! requests (hundreds of connections with their buffers at once) leaves free blocks below
//! blocks still in use, and those pages stay resident for the life of the process: each
//! arena keeps its high-water mark, and the resident size climbs a step with every burst.
//! `malloc_trim(0)` hands back every whole free page of every arena (`MADV_DONTNEED`; the
//! blocks stay in the allocator's lists and are faulted in again when reused). A thread of
//! its own calls it at the interval the service is configured with (`MEMORY_TRIM_SECS`).
//!
//! Only where the allocator is glibc's; elsewhere [`start_trimming`] does nothing.

use std::time::Duration;

/// Starts a thread that trims the heap every `every`; `Duration::ZERO` starts nothing.
/// The thread runs for the life of the process. Whether it started.
pub fn start_trimming(every: Duration) -> bool {
    if every.is_zero() || !SUPPORTED {
        return false;
    }
    let started = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(move || {
            loop {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "a thread of its own, outside the async runtime"
                )]
                std::thread::sleep(every);
                trim();
            }
        });
    match started {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not start the heap trimming thread; freed memory stays resident");
            false
        }
    }
}

/// Whether this build can trim (glibc on Linux).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Returns the free pages of every arena to the system; whether any were returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "malloc_trim is a C function; it has no safe binding"
)]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers; it locks each arena while it walks it.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Returns the free pages of every arena to the system; whether any were returned.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of this process (`VmRSS` in `/proc/self/status`).
    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_blocks_below_a_live_one_leave_the_resident_set_only_when_trimmed() {
        // On a thread of its own, so the blocks come from one arena and nothing else of the
        // test harness allocates between them.
        std::thread::spawn(|| {
            // 4,000 blocks of 16 KiB (below the mmap threshold: they come from the arena),
            // written so they are resident, then all freed but the last: the arena's top is
            // still in use, so glibc's own trimming at free cannot return the 62 MiB below it.
            let mut blocks: Vec<Vec<u8>> = (0..4_000)
                .map(|i| vec![(i % 255 + 1) as u8; 16 * 1024])
                .collect();
            let last = blocks.pop().expect("a block");
            let before_free = resident_kib();
            drop(blocks);
            let after_free = resident_kib();
            assert!(trim(), "malloc_trim found nothing to return");
            let after_trim = resident_kib();
            let returned_kib = after_free.saturating_sub(after_trim);
            assert!(
                after_free + 4_000 > before_free,
                "freeing alone returned {} KiB",
                before_free - after_free
            );
            assert!(
                returned_kib > 48 * 1024,
                "trimming returned only {returned_kib} KiB"
            );
            drop(last);
        })
        .join()
        .expect("the trimming thread");
    }

    #[test]
    fn zero_starts_no_thread() {
        assert!(!start_trimming(Duration::ZERO));
    }
}
