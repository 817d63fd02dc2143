//! What the fuzz targets share: a fixed tariff set (the generator's network), built once.

use std::sync::OnceLock;

use gantry_core::tariff::{TariffSet, TariffVersion};

/// The generator's network and tariff: seed, units and owners of the seed corpus.
pub const NETWORK: (u64, usize, usize) = (7, 40, 4);

/// The network's zone (China Standard Time), minutes east of UTC.
pub const OFFSET_MIN: i32 = 480;

/// Splits `data` at the first `SEPARATOR` into a tariff's `tariff.toml` and
/// `intervals.csv` texts (the tariff target's input format; the seed is written so).
pub const SEPARATOR: u8 = 0;

/// The seed corpus's tariff set, for targets that settle records.
pub fn tariffs() -> &'static TariffSet {
    static SET: OnceLock<TariffSet> = OnceLock::new();
    SET.get_or_init(|| {
        let net = gantry_gen::Network::new(NETWORK.0, NETWORK.1, NETWORK.2);
        let v = TariffVersion::from_sources(
            std::path::Path::new("tariff.toml"),
            &net.tariff_toml(),
            std::path::Path::new("intervals.csv"),
            &net.intervals_csv(),
            OFFSET_MIN,
        )
        .expect("the generator's tariff loads");
        TariffSet::default().with(v).expect("one version is a set")
    })
}
