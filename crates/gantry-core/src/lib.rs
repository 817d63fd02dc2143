//! Gantry's pure core: the contract's records, parsing, tariffs, pricing, deduplication and
//! card accounts (`../shared/spec/CONTRACT.md` §1–3).
//!
//! No async runtime, no Kafka, no ClickHouse, no network; file I/O only to load a tariff
//! directory. Everything here is deterministic: the same inputs in the same order from the
//! same state give the same outputs, which the pipeline relies on for exactly-once replay.

pub mod accounts;
pub mod codec;
pub mod dedup;
mod digits;
pub mod engine;
pub mod hint;
pub mod output;
pub mod parse;
pub mod pricing;
pub mod record;
pub mod reject;
pub mod tariff;
pub mod time;

pub use engine::{Engine, EngineConfig};
pub use output::{Batch, Source, Topic};
pub use tariff::{TariffSet, TariffSources, TariffStore, TariffVersion};
