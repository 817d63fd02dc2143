//! Tariff versions (contract §2): loading, validation, selection by `transTime`, and the
//! lock-free snapshot readers price with.
//!
//! A version is a directory with `tariff.toml` and `intervals.csv`. Validation errors name
//! the file, the line and the field. Several versions are held at once in a [`TariffSet`];
//! a record is priced by the version whose `effective_from` is the latest at or before its
//! `transTime`, so pricing depends only on the data. The set is an immutable value published
//! through a [`TariffStore`] (`arc-swap`): adding a version builds a new set and swaps it in;
//! readers take a snapshot without locking and never wait for the loader.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use serde::Deserialize;
use toml::Spanned;

use crate::record::vehicle_type_index;
use crate::time::parse_timestamp_ms;

/// Most `time_discount` rules in one version: each unit keeps a 64-bit mask of the rules
/// that name it, so matching a unit is a few bit operations.
pub const TIME_DISCOUNT_RULES_MAX: usize = 64;
/// 100% in basis points.
pub const BP_MAX: u32 = 10_000;

/// A fee cell that is empty in `intervals.csv`: the class is not tolled there, and a record of
/// that class on that unit is rejected.
const FEE_MISSING: i32 = -1;

#[derive(Debug, thiserror::Error)]
pub enum TariffError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, message: String },
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Invalid { file: PathBuf, line: usize, field: String, message: String },
    #[error("version {version}: {message}")]
    Conflict { version: String, message: String },
}

/// One tolling unit (收费单元) of a version.
#[derive(Debug, Clone)]
pub struct Unit {
    pub id: Box<str>,
    /// Index into [`TariffVersion::owners`].
    pub owner: u32,
    pub length_m: u32,
    /// Fee in fen per class, in the order of [`crate::record::VEHICLE_TYPES`]; `FEE_MISSING` if not tolled.
    fees: [i32; 16],
    /// Bit r set: `time_discount` rule r names this unit (or `*`).
    time_rules: u64,
}

impl Unit {
    /// The unit's fee for a class, `None` where the version has none.
    #[inline]
    pub fn fee(&self, vehicle_type: u8) -> Option<i64> {
        let f = self.fees[vehicle_type_index(vehicle_type)?];
        (f != FEE_MISSING).then_some(f as i64)
    }
}

#[derive(Debug, Clone)]
pub struct HolidayFree {
    pub start_ms: i64,
    /// Exclusive.
    pub end_ms: i64,
    /// Bit per class index of [`crate::record::VEHICLE_TYPES`].
    pub vehicle_types: u16,
    /// Records without `vehicleSeat` qualify.
    pub max_seats: Option<u16>,
}

impl HolidayFree {
    /// Whether the window frees a passage at `time_ms` of a vehicle of class bit `class_bit`
    /// with `seats` (a record without seats counts as eligible).
    #[inline]
    pub fn frees(&self, time_ms: i64, class_bit: u16, seats: Option<u16>) -> bool {
        self.start_ms <= time_ms
            && time_ms < self.end_ms
            && self.vehicle_types & class_bit != 0
            && match (self.max_seats, seats) {
                (Some(max), Some(seats)) => seats <= max,
                _ => true,
            }
    }
}

/// The classes the axle surcharge applies to (contract §2): class 16 (the largest truck)
/// and class 26 (the largest special-purpose vehicle), whose fee it is computed from.
pub const SURCHARGE_VEHICLE_TYPES: [u8; 2] = [16, 26];
/// Axles included in a class 16 / 26 fee; each axle above is surcharged.
pub const SURCHARGE_FREE_AXLES: u8 = 6;

#[derive(Debug, Clone)]
pub struct TimeDiscount {
    pub vehicle_types: u16,
    /// Local minute of day, `[from, to)`; `from > to` wraps past midnight.
    pub from_min: u32,
    pub to_min: u32,
    pub discount_bp: u32,
}

impl TimeDiscount {
    #[inline]
    pub fn holds(&self, minute_of_day: u32) -> bool {
        if self.from_min <= self.to_min {
            self.from_min <= minute_of_day && minute_of_day < self.to_min
        } else {
            minute_of_day >= self.from_min || minute_of_day < self.to_min
        }
    }
}

/// Unit id → unit index, for the lookup every record makes per unit it passed: open
/// addressing with linear probing at most half full, each slot the id's 32-bit fingerprint
/// and its unit index + 1 (0: empty). A lookup is a short hash, a fingerprint compare and one
/// inline compare of the id against the unit's own (no string hashing through `Hasher`, no
/// `memcmp` call); ~2× cheaper than the general map on the ~15-byte ids of a network.
#[derive(Debug, Clone)]
struct UnitIndex {
    slots: Vec<(u32, u32)>,
    mask: usize,
}

impl UnitIndex {
    fn new(units: &[Unit]) -> UnitIndex {
        let size = (units.len() * 2).next_power_of_two().max(16);
        let mut ix = UnitIndex { slots: vec![(0, 0); size], mask: size - 1 };
        for (u, unit) in units.iter().enumerate() {
            let h = id_hash(unit.id.as_bytes());
            let mut i = h as usize & ix.mask;
            while ix.slots[i].1 != 0 {
                i = (i + 1) & ix.mask;
            }
            ix.slots[i] = ((h >> 32) as u32, u as u32 + 1);
        }
        ix
    }

    #[inline]
    fn get(&self, id: &[u8], units: &[Unit]) -> Option<u32> {
        let h = id_hash(id);
        let fingerprint = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            let (f, u) = self.slots[i];
            if u == 0 {
                return None;
            }
            if f == fingerprint && bytes_eq(units[u as usize - 1].id.as_bytes(), id) {
                return Some(u - 1);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// The first and last 8 bytes of `b` (overlapping when shorter than 16; zero-extended below
/// 8): together with the length they are all of `b` up to 16 bytes.
#[inline(always)]
fn ends(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 8 {
        (
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[n - 8..].try_into().expect("8 bytes")),
        )
    } else {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(b);
        (u64::from_le_bytes(w), 0)
    }
}

/// A hash of a unit id: a multiply-mix of its ends and length (all of it up to 16 bytes);
/// longer ids mix in XXH3. Ids come from the operator's own tariff, not from adversaries.
#[inline(always)]
fn id_hash(b: &[u8]) -> u64 {
    let (a, z) = ends(b);
    let mut h = (a ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ z.rotate_left(31)
        ^ b.len() as u64;
    if b.len() > 16 {
        h ^= xxhash_rust::xxh3::xxh3_64(b);
    }
    h = (h ^ (h >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 29)
}

/// `a == b`, inline for ids up to 16 bytes.
#[inline(always)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && if a.len() <= 16 { ends(a) == ends(b) } else { a == b }
}

/// One immutable tariff version.
#[derive(Debug, Clone)]
pub struct TariffVersion {
    pub version: Box<str>,
    pub effective_from_ms: i64,
    pub etc_discount_bp: u32,
    /// Bit per `vehicleClass` value 0..=255.
    exempt_classes: [u64; 4],
    pub holiday_free: Vec<HolidayFree>,
    pub time_discounts: Vec<TimeDiscount>,
    pub per_extra_axle_bp: u32,
    pub units: Vec<Unit>,
    pub owners: Vec<Box<str>>,
    index: UnitIndex,
    /// Unique to this loaded version in this process (a clone shares it: same content), so
    /// caches of its texts are keyed by what they were made from, not by an address.
    instance: u64,
    /// The two files it was built from, kept so the version can be made durable (a replay
    /// rebuilds exactly this version from them, whatever the tariff directory holds then).
    sources: Arc<TariffSources>,
    /// `sources.hash()`, taken once: set ids and every directory scan compare it.
    source_hash: u64,
}

/// A version's two files as text: what Gantry stores in ClickHouse (`gantry_tariffs`) for
/// replay. Building a version from the same sources gives the same version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffSources {
    pub tariff_toml: String,
    pub intervals_csv: String,
}

impl TariffSources {
    /// Reads `tariff.toml` and `intervals.csv` of a version directory.
    pub fn read_dir(dir: &Path) -> Result<TariffSources, TariffError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TariffError::Io { path, source })
        };
        Ok(TariffSources {
            tariff_toml: read("tariff.toml")?,
            intervals_csv: read("intervals.csv")?,
        })
    }

    /// XXH3 of both files (the first one's length first, so no two pairs of texts collide by
    /// moving bytes from one to the other): names the content, not the directory.
    pub fn hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&(self.tariff_toml.len() as u64).to_le_bytes());
        h.update(self.tariff_toml.as_bytes());
        h.update(self.intervals_csv.as_bytes());
        h.digest()
    }
}

/// Source of [`TariffVersion::instance`] ids.
static NEXT_VERSION_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl TariffVersion {
    /// An id unique to this loaded version within the process.
    #[inline]
    pub fn instance(&self) -> u64 {
        self.instance
    }

    #[inline]
    pub fn unit_index(&self, id: &str) -> Option<u32> {
        self.index.get(id.as_bytes(), &self.units)
    }

    #[inline]
    pub fn unit(&self, idx: u32) -> &Unit {
        &self.units[idx as usize]
    }

    #[inline]
    pub fn owner_of(&self, idx: u32) -> &str {
        &self.owners[self.units[idx as usize].owner as usize]
    }

    /// Axles charged the surcharge (contract §2, `axle_surcharge`): those above
    /// [`SURCHARGE_FREE_AXLES`] of a vehicle of a [`SURCHARGE_VEHICLE_TYPES`] class, when the
    /// version has a surcharge; 0 otherwise.
    #[inline]
    pub fn surcharge_axles(&self, vehicle_type: u8, axle_count: Option<u8>) -> u64 {
        match axle_count {
            Some(a)
                if SURCHARGE_VEHICLE_TYPES.contains(&vehicle_type)
                    && a > SURCHARGE_FREE_AXLES
                    && self.per_extra_axle_bp > 0 =>
            {
                (a - SURCHARGE_FREE_AXLES) as u64
            }
            _ => 0,
        }
    }

    #[inline]
    pub fn is_exempt_class(&self, vehicle_class: u8) -> bool {
        self.exempt_classes[(vehicle_class >> 6) as usize] & (1 << (vehicle_class & 63)) != 0
    }

    /// Loads and validates a version directory (`tariff.toml` + `intervals.csv`).
    pub fn load_dir(dir: &Path, network_utc_offset_min: i32) -> Result<TariffVersion, TariffError> {
        Self::build(dir, &TariffSources::read_dir(dir)?, network_utc_offset_min)
    }

    /// Builds a version from its files' text; `dir` names them in error messages.
    pub fn build(
        dir: &Path,
        sources: &TariffSources,
        network_utc_offset_min: i32,
    ) -> Result<TariffVersion, TariffError> {
        Self::from_sources(
            &dir.join("tariff.toml"),
            &sources.tariff_toml,
            &dir.join("intervals.csv"),
            &sources.intervals_csv,
            network_utc_offset_min,
        )
    }

    /// The files this version was built from.
    pub fn sources(&self) -> &TariffSources {
        &self.sources
    }

    /// [`TariffSources::hash`] of this version's files.
    pub fn source_hash(&self) -> u64 {
        self.source_hash
    }

    /// Builds a version from the two files' text; the paths are for error messages only.
    pub fn from_sources(
        toml_path: &Path,
        toml_text: &str,
        csv_path: &Path,
        csv_text: &str,
        network_utc_offset_min: i32,
    ) -> Result<TariffVersion, TariffError> {
        let check = TomlCheck { file: toml_path, text: toml_text, network_utc_offset_min };
        let spec: TariffToml = toml::from_str(toml_text).map_err(|e| TariffError::Syntax {
            file: toml_path.to_path_buf(),
            line: e.span().map_or(0, |s| check.line_of(s)),
            message: e.message().to_string(),
        })?;
        let version = spec.version.get_ref().trim().to_string();
        if version.is_empty() {
            return Err(check.invalid(spec.version.span(), "version", "empty".into()));
        }
        let effective_from_ms = check.time(&spec.effective_from, "effective_from")?;
        let etc_discount_bp = check.bp(&spec.etc_discount_bp, "etc_discount_bp")?;
        let mut exempt_classes = [0u64; 4];
        for c in spec.exempt_vehicle_classes.get_ref() {
            exempt_classes[(*c >> 6) as usize] |= 1 << (*c & 63);
        }
        let holiday_free = check.holiday_free(&spec.holiday_free)?;
        let time_discounts = check.time_discounts(&spec.time_discount)?;
        let per_extra_axle_bp = match &spec.axle_surcharge {
            Some(a) => check.bp(&a.per_extra_axle_bp, "axle_surcharge.per_extra_axle_bp")?,
            None => 0,
        };
        let sources = TariffSources {
            tariff_toml: toml_text.to_string(),
            intervals_csv: csv_text.to_string(),
        };
        let (mut units, owners) = parse_intervals(csv_path, csv_text)?;
        // Rules only mark units; the ids (what the index reads) do not change after this.
        let index = UnitIndex::new(&units);
        check.mark_time_rules(&spec.time_discount, &index, &mut units, csv_path)?;
        Ok(TariffVersion {
            version: version.into(),
            effective_from_ms,
            etc_discount_bp,
            exempt_classes,
            holiday_free,
            time_discounts,
            per_extra_axle_bp,
            index,
            units,
            owners,
            instance: NEXT_VERSION_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            source_hash: sources.hash(),
            sources: Arc::new(sources),
        })
    }

    /// The first time-discount rule matching a unit, class and local minute of day.
    #[inline]
    pub fn time_discount_for(
        &self,
        unit: &Unit,
        class_bit: u16,
        minute_of_day: u32,
    ) -> Option<&TimeDiscount> {
        let mut rules = unit.time_rules;
        while rules != 0 {
            let r = rules.trailing_zeros() as usize;
            rules &= rules - 1;
            let rule = &self.time_discounts[r];
            if rule.vehicle_types & class_bit != 0 && rule.holds(minute_of_day) {
                return Some(rule);
            }
        }
        None
    }
}

/// The units of `intervals.csv` and their owners' ids (units hold owner indexes).
type Intervals = (Vec<Unit>, Vec<Box<str>>);

fn parse_intervals(path: &Path, text: &str) -> Result<Intervals, TariffError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let syntax = |line: usize, e: csv::Error| TariffError::Syntax {
        file: path.to_path_buf(),
        line,
        message: e.to_string(),
    };
    let headers = rdr.headers().map_err(|e| syntax(1, e))?.clone();
    let cols = CsvColumns::new(path, &headers)?;
    let mut units = Vec::new();
    let mut owners = Owners::default();
    let mut ids: hashbrown::HashSet<Box<str>> = hashbrown::HashSet::new();
    for row in rdr.records() {
        let row = row.map_err(|e| syntax(e.position().map_or(0, |p| p.line() as usize), e))?;
        units.push(cols.unit(path, &headers, &row, &mut ids, &mut owners)?);
    }
    if units.is_empty() {
        return Err(csv_invalid(path, 2, "interval_id", "no tolling units".into()));
    }
    Ok((units, owners.ids))
}

fn csv_invalid(path: &Path, line: usize, field: &str, message: String) -> TariffError {
    TariffError::Invalid { file: path.to_path_buf(), line, field: field.to_string(), message }
}

/// The owners' ids in order of first appearance, each once; units refer to them by index.
#[derive(Default)]
struct Owners {
    ids: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Owners {
    fn index_of(&mut self, owner: &str) -> u32 {
        if let Some(&o) = self.index.get(owner) {
            return o;
        }
        self.ids.push(owner.into());
        self.index.insert(owner.into(), self.ids.len() as u32 - 1);
        self.ids.len() as u32 - 1
    }
}

/// Where `intervals.csv`'s columns are: id, owner, length, and each fee column's class.
struct CsvColumns {
    id: usize,
    owner: usize,
    length: Option<usize>,
    /// (column, class index)
    fees: Vec<(usize, usize)>,
}

impl CsvColumns {
    fn new(path: &Path, headers: &csv::StringRecord) -> Result<CsvColumns, TariffError> {
        let invalid = |field: &str, message: &str| csv_invalid(path, 1, field, message.into());
        let (mut id, mut owner, mut length) = (None, None, None);
        let mut fees: Vec<(usize, usize)> = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            match h {
                "interval_id" => id = Some(i),
                "owner_id" => owner = Some(i),
                "length_m" => length = Some(i),
                _ => {
                    let class = h
                        .strip_prefix("fee_")
                        .and_then(|c| c.parse::<u8>().ok())
                        .and_then(vehicle_type_index)
                        .ok_or_else(|| invalid(h, "unknown column (expected interval_id, owner_id, length_m, fee_<class>)"))?;
                    if fees.iter().any(|&(_, c)| c == class) {
                        return Err(invalid(h, "column appears twice"));
                    }
                    fees.push((i, class));
                }
            }
        }
        let id = id.ok_or_else(|| invalid("interval_id", "missing column"))?;
        let owner = owner.ok_or_else(|| invalid("owner_id", "missing column"))?;
        Ok(CsvColumns { id, owner, length, fees })
    }

    /// One row as a unit: its id must be new to `ids`; its owner is looked up in, or added
    /// to, `owners`.
    fn unit(
        &self,
        path: &Path,
        headers: &csv::StringRecord,
        row: &csv::StringRecord,
        ids: &mut hashbrown::HashSet<Box<str>>,
        owners: &mut Owners,
    ) -> Result<Unit, TariffError> {
        let line = row.position().map_or(0, |p| p.line() as usize);
        let invalid = |field: &str, message: String| csv_invalid(path, line, field, message);
        let id = row.get(self.id).unwrap_or("");
        if id.is_empty() || id.contains('|') {
            return Err(invalid("interval_id", format!("`{id}` is not a unit id")));
        }
        if !ids.insert(id.into()) {
            return Err(invalid("interval_id", format!("unit `{id}` appears twice")));
        }
        let owner = row.get(self.owner).unwrap_or("");
        if owner.is_empty() {
            return Err(invalid("owner_id", "empty".into()));
        }
        let length_m = match self.length.and_then(|c| row.get(c)) {
            None | Some("") => 0,
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| invalid("length_m", format!("`{v}` is not a length in metres")))?,
        };
        let mut fees = [FEE_MISSING; 16];
        for &(col, class) in &self.fees {
            let v = row.get(col).unwrap_or("");
            if v.is_empty() {
                continue;
            }
            let field = &headers[col];
            let fee = v
                .parse::<i32>()
                .map_err(|_| invalid(field, format!("`{v}` is not a fee in whole fen")))?;
            if fee < 0 {
                return Err(invalid(field, format!("negative fee {fee}")));
            }
            fees[class] = fee;
        }
        Ok(Unit { id: id.into(), owner: owners.index_of(owner), length_m, fees, time_rules: 0 })
    }
}

/// Validation of `tariff.toml`'s values: each error names the file, the line and the field.
struct TomlCheck<'a> {
    file: &'a Path,
    text: &'a str,
    network_utc_offset_min: i32,
}

impl TomlCheck<'_> {
    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }

    fn invalid(&self, span: std::ops::Range<usize>, field: &str, message: String) -> TariffError {
        TariffError::Invalid {
            file: self.file.to_path_buf(),
            line: self.line_of(span),
            field: field.to_string(),
            message,
        }
    }

    fn time(&self, v: &Spanned<String>, field: &str) -> Result<i64, TariffError> {
        parse_timestamp_ms(v.get_ref(), self.network_utc_offset_min).ok_or_else(|| {
            let message = format!("`{}` is not a time like 2026-11-01T00:00:00+08:00", v.get_ref());
            self.invalid(v.span(), field, message)
        })
    }

    fn bp(&self, v: &Spanned<u32>, field: &str) -> Result<u32, TariffError> {
        if *v.get_ref() > BP_MAX {
            let message = format!("{} basis points is more than 100%", v.get_ref());
            return Err(self.invalid(v.span(), field, message));
        }
        Ok(*v.get_ref())
    }

    /// A list of vehicle classes as a bit per class index.
    fn classes(&self, v: &Spanned<Vec<u8>>, field: &str) -> Result<u16, TariffError> {
        let mut mask = 0u16;
        for t in v.get_ref() {
            let i = vehicle_type_index(*t).ok_or_else(|| {
                self.invalid(v.span(), field, format!("{t} is not a vehicle class of JT/T 489"))
            })?;
            mask |= 1 << i;
        }
        Ok(mask)
    }

    /// `HH:MM` as minutes of the day; `24:00` only where `end` allows it.
    fn hhmm(&self, v: &Spanned<String>, field: &str, end: DayEnd) -> Result<u32, TariffError> {
        let s = v.get_ref();
        let bad = || self.invalid(v.span(), field, format!("`{s}` is not a local time HH:MM"));
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || !b[..2].iter().chain(&b[3..]).all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let h = (b[0] - b'0') as u32 * 10 + (b[1] - b'0') as u32;
        let m = (b[3] - b'0') as u32 * 10 + (b[4] - b'0') as u32;
        if m > 59 || h > 24 || (h == 24 && (m != 0 || end == DayEnd::Excluded)) {
            return Err(bad());
        }
        Ok(h * 60 + m)
    }

    fn holiday_free(&self, rules: &[HolidayToml]) -> Result<Vec<HolidayFree>, TariffError> {
        rules
            .iter()
            .map(|h| {
                let start_ms = self.time(&h.start, "holiday_free.start")?;
                let end_ms = self.time(&h.end, "holiday_free.end")?;
                if end_ms <= start_ms {
                    let after = "must be after start".into();
                    return Err(self.invalid(h.end.span(), "holiday_free.end", after));
                }
                Ok(HolidayFree {
                    start_ms,
                    end_ms,
                    vehicle_types: self.classes(&h.vehicle_types, "holiday_free.vehicle_types")?,
                    max_seats: h.max_seats,
                })
            })
            .collect()
    }

    fn time_discounts(&self, rules: &[TimeDiscountToml]) -> Result<Vec<TimeDiscount>, TariffError> {
        if rules.len() > TIME_DISCOUNT_RULES_MAX {
            let message = format!("more than {TIME_DISCOUNT_RULES_MAX} rules");
            let span = rules[TIME_DISCOUNT_RULES_MAX].from.span();
            return Err(self.invalid(span, "time_discount", message));
        }
        rules
            .iter()
            .map(|r| {
                let from_min = self.hhmm(&r.from, "time_discount.from", DayEnd::Excluded)?;
                let to_min = self.hhmm(&r.to, "time_discount.to", DayEnd::Allowed)?;
                if from_min == to_min {
                    let message = "equals `from`: the window is empty (use 00:00 to 24:00 for the \
                                   whole day)";
                    return Err(self.invalid(r.to.span(), "time_discount.to", message.into()));
                }
                Ok(TimeDiscount {
                    vehicle_types: self.classes(&r.vehicle_types, "time_discount.vehicle_types")?,
                    from_min,
                    to_min,
                    discount_bp: self.bp(&r.discount_bp, "time_discount.discount_bp")?,
                })
            })
            .collect()
    }

    /// Marks on each unit the time-discount rules that name it (or `*`).
    fn mark_time_rules(
        &self,
        rules: &[TimeDiscountToml],
        index: &UnitIndex,
        units: &mut [Unit],
        csv_path: &Path,
    ) -> Result<(), TariffError> {
        for (r, rule) in rules.iter().enumerate() {
            for id in rule.intervals.get_ref() {
                if id == "*" {
                    units.iter_mut().for_each(|u| u.time_rules |= 1 << r);
                    continue;
                }
                let i = index.get(id.as_bytes(), units).ok_or_else(|| {
                    let message = format!("unit `{id}` is not in {}", csv_path.display());
                    self.invalid(rule.intervals.span(), "time_discount.intervals", message)
                })?;
                units[i as usize].time_rules |= 1 << r;
            }
        }
        Ok(())
    }
}

/// Whether a local time may be `24:00` (the end of a window that runs to midnight).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DayEnd {
    Allowed,
    Excluded,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffToml {
    version: Spanned<String>,
    effective_from: Spanned<String>,
    etc_discount_bp: Spanned<u32>,
    #[serde(default = "empty_spanned")]
    exempt_vehicle_classes: Spanned<Vec<u8>>,
    #[serde(default)]
    holiday_free: Vec<HolidayToml>,
    #[serde(default)]
    time_discount: Vec<TimeDiscountToml>,
    axle_surcharge: Option<AxleToml>,
}

fn empty_spanned() -> Spanned<Vec<u8>> {
    Spanned::new(0..0, Vec::new())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayToml {
    start: Spanned<String>,
    end: Spanned<String>,
    vehicle_types: Spanned<Vec<u8>>,
    max_seats: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeDiscountToml {
    intervals: Spanned<Vec<String>>,
    vehicle_types: Spanned<Vec<u8>>,
    from: Spanned<String>,
    to: Spanned<String>,
    discount_bp: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AxleToml {
    per_extra_axle_bp: Spanned<u32>,
}

/// All loaded versions, ordered by `effective_from`. Immutable once published.
#[derive(Clone)]
pub struct TariffSet {
    versions: Vec<Arc<TariffVersion>>,
    /// Names the set's content (see [`TariffSet::id`]).
    id: u64,
}

impl Default for TariffSet {
    fn default() -> Self {
        TariffSet { versions: Vec::new(), id: set_id(&[]) }
    }
}

/// XXH3 of the versions' source hashes in set order: equal for two sets of the same content
/// however they were loaded; never 0 (0 is "no set recorded" in the journal).
fn set_id(versions: &[Arc<TariffVersion>]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for v in versions {
        h.update(&v.source_hash().to_le_bytes());
    }
    h.digest().max(1)
}

impl fmt::Debug for TariffSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.versions.iter().map(|v| (&v.version, v.effective_from_ms)))
            .finish()
    }
}

impl TariffSet {
    /// The version in force at `time_ms`: the latest `effective_from` at or before it.
    #[inline]
    pub fn version_at(&self, time_ms: i64) -> Option<&Arc<TariffVersion>> {
        let n = self.versions.partition_point(|v| v.effective_from_ms <= time_ms);
        n.checked_sub(1).map(|i| &self.versions[i])
    }

    pub fn versions(&self) -> &[Arc<TariffVersion>] {
        &self.versions
    }

    /// The set's identity: a hash of its versions' contents, which a batch journals so a
    /// replay prices with exactly this set. Never 0.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A set of `versions` (in any order), refusing two of one name or one `effective_from`.
    pub fn of(versions: impl IntoIterator<Item = TariffVersion>) -> Result<TariffSet, TariffError> {
        versions.into_iter().try_fold(TariffSet::default(), |set, v| set.with(v))
    }

    /// A new set with `v` added. A published version is immutable, so a second version with
    /// the same name, or another with the same `effective_from`, is refused rather than
    /// letting the same record price two ways.
    pub fn with(&self, v: TariffVersion) -> Result<TariffSet, TariffError> {
        if let Some(old) = self
            .versions
            .iter()
            .find(|o| o.version == v.version || o.effective_from_ms == v.effective_from_ms)
        {
            let message = if old.version == v.version {
                "is already loaded; publish changes as a new version".to_string()
            } else {
                format!("has the same effective_from as version {}", old.version)
            };
            return Err(TariffError::Conflict { version: v.version.to_string(), message });
        }
        let mut versions = self.versions.clone();
        let at = versions.partition_point(|o| o.effective_from_ms < v.effective_from_ms);
        versions.insert(at, Arc::new(v));
        let id = set_id(&versions);
        Ok(TariffSet { versions, id })
    }
}

/// The published tariff set: readers [`snapshot`](TariffStore::snapshot) without locks;
/// [`add`](TariffStore::add) swaps in a new set atomically.
#[derive(Default)]
pub struct TariffStore {
    current: ArcSwap<TariffSet>,
}

impl TariffStore {
    pub fn new(set: TariffSet) -> TariffStore {
        TariffStore { current: ArcSwap::from_pointee(set) }
    }

    /// The set in force now; hold it for a batch, not forever.
    #[inline]
    pub fn snapshot(&self) -> Arc<TariffSet> {
        self.current.load_full()
    }

    /// Adds a version. Concurrent adders retry on the newest set (`rcu`); readers never wait.
    pub fn add(&self, v: TariffVersion) -> Result<(), TariffError> {
        let v = Arc::new(v);
        let mut result = Ok(());
        self.current.rcu(|cur| match cur.with((*v).clone()) {
            Ok(next) => {
                result = Ok(());
                Arc::new(next)
            }
            Err(e) => {
                result = Err(e);
                Arc::clone(cur)
            }
        });
        result
    }

    /// Replaces the whole set (the tariff directory changed: versions added or removed).
    pub fn replace(&self, set: TariffSet) {
        self.current.store(Arc::new(set));
    }

    /// Loads every version directory under `root` (see [`version_dirs`]).
    pub fn load_root(root: &Path, network_utc_offset_min: i32) -> Result<TariffSet, TariffError> {
        let versions = version_dirs(root)?
            .iter()
            .map(|d| TariffVersion::load_dir(d, network_utc_offset_min))
            .collect::<Result<Vec<_>, _>>()?;
        TariffSet::of(versions)
    }
}

/// The version directories under a tariff root, sorted: each subdirectory holding a
/// `tariff.toml`, except those whose name starts with `.` (where a version is written before
/// it is renamed into place, so a half-written version is never read), and `root` itself if
/// it holds one.
pub fn version_dirs(root: &Path) -> Result<Vec<PathBuf>, TariffError> {
    let entries = std::fs::read_dir(root)
        .map_err(|source| TariffError::Io { path: root.to_path_buf(), source })?;
    let hidden = |p: &Path| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !hidden(p) && p.join("tariff.toml").is_file())
        .collect();
    dirs.sort();
    if root.join("tariff.toml").is_file() {
        dirs.push(root.to_path_buf());
    }
    Ok(dirs)
}

/// A class's bit in the `vehicle_types` masks.
pub fn class_bit(vehicle_type: u8) -> u16 {
    vehicle_type_index(vehicle_type).map_or(0, |i| 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(id: &str) -> Unit {
        Unit { id: id.into(), owner: 0, length_m: 0, fees: [FEE_MISSING; 16], time_rules: 0 }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// The inline id compare is `==`, on ids that differ in one byte or in length only.
        #[test]
        fn bytes_eq_is_equality(a in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'A'), any::<u8>()], 0..24),
                                edit in 0usize..26, byte in prop_oneof![Just(0u8), Just(b'A'), any::<u8>()]) {
            let mut b = a.clone();
            match edit {
                24 => b.push(byte),
                25 => { b.pop(); }
                p if p < b.len() => b[p] = byte,
                _ => {}
            }
            prop_assert_eq!(bytes_eq(&a, &b), a == b);
            prop_assert_eq!(bytes_eq(&a, &a), true);
        }
    }

    proptest! {
        /// Every unit is found at its own index, and nothing else is found: ids of every
        /// length around the 8- and 16-byte word boundaries, and near misses of them.
        #[test]
        fn unit_index_finds_exactly_the_units(ids in proptest::collection::hash_set("[A-Z0-9|\u{0}]{0,40}", 1..300),
                                              probes in proptest::collection::vec("[A-Z0-9\u{0}]{0,40}", 0..300)) {
            let ids: Vec<String> = ids.into_iter().collect();
            let units: Vec<Unit> = ids.iter().map(|i| unit(i)).collect();
            let ix = UnitIndex::new(&units);
            for (k, id) in ids.iter().enumerate() {
                prop_assert_eq!(ix.get(id.as_bytes(), &units), Some(k as u32));
                // One byte changed anywhere, or one more or fewer: a different id.
                for p in 0..id.len() {
                    let mut other = id.clone().into_bytes();
                    other[p] = if other[p] == b'Q' { b'R' } else { b'Q' };
                    let want = ids.iter().position(|i| i.as_bytes() == other.as_slice()).map(|k| k as u32);
                    prop_assert_eq!(ix.get(&other, &units), want);
                }
                for other in [format!("{id}A"), id.get(1..).unwrap_or("").to_string()] {
                    let want = ids.iter().position(|i| *i == other).map(|k| k as u32);
                    prop_assert_eq!(ix.get(other.as_bytes(), &units), want);
                }
            }
            for p in &probes {
                let want = ids.iter().position(|i| i == p).map(|k| k as u32);
                prop_assert_eq!(ix.get(p.as_bytes(), &units), want);
            }
        }
    }
}
