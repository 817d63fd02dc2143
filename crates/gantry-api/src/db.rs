//! The API's reads from ClickHouse: one SQL file per query under `sql/` (each runs on 18.16
//! and on current ClickHouse: `tests/sql_compat.py` runs every file with the arguments its
//! first line gives), parameters bound by the client (`?`, escaped), rows typed.
//!
//! Times are read as `UInt32` seconds and dates as text, and a `date` parameter becomes a
//! range of seconds in the network's zone here: no query depends on the server's time zone.

use clickhouse::Row;
use serde::Deserialize;

/// Every query the API runs, by file name.
pub mod sql {
    macro_rules! queries {
        ($($name:ident = $file:literal;)*) => {
            $(pub const $name: &str = include_str!(concat!("sql/", $file));)*
            /// (file, text) of every query, for the test that checks each is used and valid.
            pub const ALL: &[(&str, &str)] = &[$(($file, $name)),*];
        };
    }
    queries! {
        SETTLEMENTS_DAILY = "settlements_daily.sql";
        SETTLEMENTS_DAILY_TOTAL = "settlements_daily_total.sql";
        CLEARING = "clearing.sql";
        RECONCILIATION_JOURNAL = "reconciliation_journal.sql";
        RECONCILIATION_TABLES = "reconciliation_tables.sql";
        ARREARS = "arrears.sql";
        ARREARS_KNOWN = "arrears_known.sql";
        USAGE_DAYS = "usage_days.sql";
        CUSTOMER_LEDGER_DAYS = "customer_ledger_days.sql";
        TRADE = "trade.sql";
        STATEMENT_LEDGER = "statement_ledger.sql";
        STATEMENT_TRIPS = "statement_trips.sql";
        CARD_OWNER = "card_owner.sql";
        CARD_STATE = "card_state.sql";
        CUSTOMER_CARDS = "customer_cards.sql";
        SEGMENTS = "segments.sql";
        CUSTOMERS = "customers.sql";
        CHURN = "churn.sql";
        ADJUSTMENT = "adjustment.sql";
        ADJUSTED = "adjusted.sql";
        LEDGER_ENTRY = "ledger_entry.sql";
        ERASE_SETTLEMENTS = "erase_settlements.sql";
        ERASE_REJECTS = "erase_rejects.sql";
        ERASE_LEDGER = "erase_ledger.sql";
        ERASE_CARD_ACTIVITY = "erase_card_activity.sql";
        MUTATIONS_PENDING = "mutations_pending.sql";
        ERASED_CHECK = "erased_check.sql";
        PLATE_CARDS = "plate_cards.sql";
    }
}

/// The API's ClickHouse client: uncompressed (as 18.16 needs for queries), every query
/// bounded by `max_execution_time`.
#[derive(Clone)]
pub struct Db {
    client: clickhouse::Client,
    timeout_s: String,
}

impl Db {
    pub fn new(url: &str, database: &str, query_timeout_ms: u64) -> Db {
        let client = gantry_clickhouse::http_client()
            .with_url(url)
            .with_database(database)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        // Whole seconds, at least one: the setting's unit.
        Db { client, timeout_s: query_timeout_ms.div_ceil(1000).max(1).to_string() }
    }

    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// A query with the time limit set.
    pub fn query(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(sql).with_option("max_execution_time", &self.timeout_s)
    }

    /// A lookup by a table's key (a few granules), on one server thread: splitting so
    /// little work across threads only adds their start-up, which under 16 concurrent
    /// clients is all cost (measured: +8% lookups a second with one thread).
    pub fn lookup(&self, sql: &str) -> clickhouse::query::Query {
        self.query(sql).with_option("max_threads", "1")
    }
}

/// `settlements_daily.sql`
#[derive(Debug, Row, Deserialize)]
pub struct OwnerDay {
    pub owner_id: String,
    pub transactions: u64,
    pub unit_passages: u64,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
}

/// `clearing.sql`
#[derive(Debug, Row, Deserialize)]
pub struct ClearingCell {
    pub issuer_id: String,
    pub owner_id: String,
    pub media_type: u8,
    pub unit_passages: u64,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
}

/// `reconciliation_tables.sql`: rows of one table written by one batch.
#[derive(Debug, Row, Deserialize)]
pub struct BatchTableCount {
    pub gantry_partition: u16,
    pub batch_seq: u64,
    pub table: String,
    pub n: u64,
}

/// Rows of one table for one partition's batches.
#[derive(Debug)]
pub struct TableCount {
    pub gantry_partition: u16,
    pub table: String,
    pub n: u64,
}

/// `arrears.sql`
#[derive(Debug, Row, Deserialize)]
pub struct ArrearsRow {
    pub card_id: String,
    pub trade_id: String,
    pub time: u32,
    pub gantry_id: String,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub tariff_version: String,
}

/// `usage_days.sql`
#[derive(Debug, Row, Deserialize)]
pub struct UsageDay {
    pub day: String,
    pub card_id: String,
    pub trips: u64,
    pub fee: i64,
    pub discount_fee: i64,
    pub topups: u64,
    pub topup_amount: i64,
}

/// `customer_ledger_days.sql`: a card's balance at the end of each day it moved.
#[derive(Debug, Row, Deserialize)]
pub struct LedgerDay {
    pub card_id: String,
    pub day: String,
    pub balance: i64,
    pub last_debit_time: u32,
    pub last_debit: String,
    /// The last debit's trip (empty on rows written before the ledger carried it).
    pub last_gantry_id: String,
    pub last_units: String,
    pub last_amount: i64,
    pub last_plate_enc: String,
}

/// `trade.sql`, `statement_trips.sql`
#[derive(Debug, Clone, Row, Deserialize)]
pub struct Trip {
    pub trade_id: String,
    pub time: u32,
    pub gantry_id: String,
    pub toll_interval_id: String,
    /// The plate sealed (`gantry_pii`): opened only on the way out.
    pub plate_enc: String,
    pub card_type: u8,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
}

/// `statement_ledger.sql`: a ledger entry with the time its batch was committed, and a
/// debit's trip (empty on rows written before the ledger carried it).
#[derive(Debug, Row, Deserialize)]
pub struct Entry {
    pub card_id: String,
    pub entry_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub time: u32,
    pub batch_seq: u64,
    pub batch_row: u32,
    pub booked: u32,
    pub gantry_id: String,
    pub toll_interval_id: String,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub plate_enc: String,
}

/// `card_state.sql`: a card's newest state from its `card_activity` rows (an empty
/// `customer_id`: no row, the card was never opened). Read by position: the query's
/// aliases differ from the columns, as 18.16 takes an alias named like a column for the
/// column inside another aggregate.
#[derive(Debug, Row, Deserialize)]
pub struct CardState {
    pub customer_id: String,
    pub balance: i64,
    pub entries: u64,
    pub last_debit_time: u32,
    pub last_debit: String,
    pub last_gantry_id: String,
    pub last_units: String,
    pub last_amount: i64,
    pub last_plate_enc: String,
    pub has_listing: u8,
    pub listed: u8,
    pub list_reason: String,
    pub listed_at: u32,
}

/// `segments.sql`
#[derive(Debug, Row, Deserialize)]
pub struct Rfm {
    pub customer_id: String,
    pub last_trip: String,
    pub trips: u64,
    pub spend: i64,
}

/// `churn.sql`
#[derive(Debug, Row, Deserialize)]
pub struct ChurnRow {
    pub customer_id: String,
    pub recent: u64,
    pub baseline: u64,
    pub last_trip: String,
    pub last_topup: String,
    pub topups: u64,
}

/// `adjustment.sql`, and a row of `api_adjustments`.
#[derive(Debug, Clone, Row, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct AdjustmentRecord {
    pub adjust_id: String,
    pub card_id: String,
    pub trade_id: String,
    pub amount: i64,
    pub reason: String,
}

/// `plate_cards.sql`
#[derive(Debug, Row, Deserialize)]
pub struct PlateCard {
    pub card_id: String,
    pub customer_id: String,
    pub trips: u64,
    pub first_seen: u32,
    pub last_seen: u32,
    pub last_gantry_id: String,
}

/// `ledger_entry.sql`
#[derive(Debug, Row, Deserialize)]
pub struct LedgerEntry {
    pub kind: String,
    pub amount: i64,
    pub time: u32,
}

/// A date text from ClickHouse, `None` for the zero date an empty `maxIf` gives (18.16
/// prints `0000-00-00`, current releases `1970-01-01`).
pub fn some_date(d: &str) -> Option<&str> {
    (d != "0000-00-00" && d != "1970-01-01" && !d.is_empty()).then_some(d)
}

#[cfg(test)]
mod tests {
    /// Each query's first line gives example arguments for the compatibility test, one per
    /// `?` (the test substitutes them in order).
    #[test]
    fn every_query_names_an_example_argument_per_placeholder() {
        for (file, text) in super::sql::ALL {
            let (first, body) = text.split_once('\n').unwrap();
            let example = first
                .strip_prefix("-- example:")
                .unwrap_or_else(|| panic!("{file}: no example line"));
            let args = example.split(',').filter(|a| !a.trim().is_empty()).count();
            assert_eq!(args, body.matches('?').count(), "{file}");
        }
        let files: Vec<_> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/sql")).unwrap().collect();
        assert_eq!(files.len(), super::sql::ALL.len(), "every file under sql/ is listed");
    }
}
