//! CPU hints shared by the hot loops (the engine's warm-up, the ClickHouse encoder).

/// Asks the CPU to load the cache line at `p` without waiting for it. A hint only: it never
/// faults, whatever the address, and changes nothing the program can observe.
#[inline(always)]
pub fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            p as *const u8 as *const i8,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
