//! Deliberate breaks of the protocol, for proving that the simulator catches them
//! (`crates/gantry-sim/MUTATIONS.md`, `scripts/mutations`).
//!
//! Only a build with the `mutations` feature has them (`cargo build -p gantry-sim
//! --features gantry-pipeline/mutations`), selected at run time by `GANTRY_MUTATION`;
//! every other build — production's — compiles [`on`] to `false`, so no switch is there.

/// Whether mutation `name` is in force.
#[cfg(feature = "mutations")]
pub fn on(name: &str) -> bool {
    static SELECTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SELECTED.get_or_init(|| std::env::var("GANTRY_MUTATION").ok()).as_deref() == Some(name)
}

/// Whether mutation `name` is in force: never, in a build without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub fn on(_name: &str) -> bool {
    false
}
