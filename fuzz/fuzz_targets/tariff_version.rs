//! Any bytes as a tariff version (`tariff.toml`, a 0 byte, `intervals.csv`): loaded or
//! refused with an error, never a panic; a version that loads prices a record.
#![no_main]

use std::path::Path;

use gantry_core::tariff::TariffVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == gantry_fuzz::SEPARATOR).unwrap_or(data.len());
    let (toml, csv) = (&data[..cut], data.get(cut + 1..).unwrap_or_default());
    let (Ok(toml), Ok(csv)) = (std::str::from_utf8(toml), std::str::from_utf8(csv)) else {
        return;
    };
    let loaded = TariffVersion::from_sources(
        Path::new("tariff.toml"),
        toml,
        Path::new("intervals.csv"),
        csv,
        gantry_fuzz::OFFSET_MIN,
    );
    if let Ok(v) = loaded {
        let _ = v.source_hash();
        let _ = gantry_core::TariffSet::default().with(v);
    }
});
