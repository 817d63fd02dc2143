//! Gantry's ClickHouse schema (contract §4): one statement per file under `schema/`, listed
//! here in the order they run (tables before the views that read them).
//!
//! Every statement is idempotent and runs on ClickHouse 18.16 as well as current releases
//! (`tests/sql_compat.py` runs the same files, in file-name order, on current ClickHouse).
//! Tables are unpartitioned MergeTrees on purpose: one INSERT is then one part, which is what
//! makes a batch's rows in a table all-or-nothing (see ARCHITECTURE.md, "exactly once").
//! Every output row carries `(gantry_partition, batch_seq)`: the batch that wrote it. The
//! rollups too: Gantry writes them per batch (no materialized views), so a batch is in a
//! rollup wholly or not at all, like in its source; a query sums a rollup's rows.

/// One DDL statement: the table or view it creates, its file and its text.
#[derive(Clone, Copy, Debug)]
pub struct Statement {
    pub object: &'static str,
    pub file: &'static str,
    pub sql: &'static str,
}

macro_rules! statements {
    ($(($object:literal, $file:literal)),* $(,)?) => {
        &[$(Statement { object: $object, file: $file, sql: include_str!(concat!("schema/", $file)) }),*]
    };
}

/// Every statement of the schema, in the order it is applied.
pub const STATEMENTS: &[Statement] = statements![
    ("settlements", "01_settlements.sql"),
    ("settlement_splits", "02_settlement_splits.sql"),
    ("ledger", "03_ledger.sql"),
    ("rejects", "04_rejects.sql"),
    ("duplicates", "05_duplicates.sql"),
    ("status_list", "06_status_list.sql"),
    ("clearing_daily", "07_clearing_daily.sql"),
    ("customer_usage_daily", "09_customer_usage_daily.sql"),
    ("card_activity", "10_card_activity.sql"),
    ("gantry_batches", "12_gantry_batches.sql"),
    ("gantry_checkpoints", "13_gantry_checkpoints.sql"),
    ("gantry_owners", "14_gantry_owners.sql"),
    ("gantry_tariffs", "15_gantry_tariffs.sql"),
    ("gantry_tariff_sets", "16_gantry_tariff_sets.sql"),
    ("api_audit", "17_api_audit.sql"),
    ("api_adjustments", "18_api_adjustments.sql"),
];

/// A column added to a table after its first release: `gantry schema apply` adds it to a
/// table created before (the table's statement already has it, for new databases).
#[derive(Clone, Copy, Debug)]
pub struct AddedColumn {
    pub table: &'static str,
    pub column: &'static str,
    /// Type and default, as in `ALTER TABLE … ADD COLUMN column definition`.
    pub definition: &'static str,
}

/// Every column added since the first release, oldest first.
pub const ADDED_COLUMNS: &[AddedColumn] = &[
    AddedColumn { table: "gantry_batches", column: "clock_ms", definition: "Int64" },
    AddedColumn { table: "clearing_daily", column: "gantry_partition", definition: "UInt16" },
    AddedColumn { table: "clearing_daily", column: "batch_seq", definition: "UInt64" },
    AddedColumn { table: "customer_usage_daily", column: "gantry_partition", definition: "UInt16" },
    AddedColumn { table: "customer_usage_daily", column: "batch_seq", definition: "UInt64" },
    AddedColumn { table: "gantry_batches", column: "tariff_set", definition: "UInt64" },
    AddedColumn { table: "ledger", column: "batch_row", definition: "UInt32" },
    AddedColumn { table: "gantry_batches", column: "journal_format", definition: "UInt8" },
    AddedColumn { table: "gantry_batches", column: "late_known", definition: "Array(UInt32)" },
    AddedColumn { table: "settlements", column: "plate_enc", definition: "String" },
    AddedColumn { table: "settlements", column: "plate_hash", definition: "String" },
    // Rows written before it have 0: `/v1/settlements/daily` counts an owner's transactions
    // from it, so days rolled up before the upgrade show 0 transactions (amounts are whole).
    AddedColumn { table: "clearing_daily", column: "trades", definition: "UInt64" },
    // A debit's trip on its ledger row, so a statement is one read by the ledger's key.
    // Rows from before have them empty; the statement then looks those trips up in
    // `settlements`.
    AddedColumn { table: "ledger", column: "gantry_id", definition: "String" },
    AddedColumn { table: "ledger", column: "toll_interval_id", definition: "String" },
    AddedColumn { table: "ledger", column: "pay_fee", definition: "Int64" },
    AddedColumn { table: "ledger", column: "discount_fee", definition: "Int64" },
    AddedColumn { table: "ledger", column: "plate_enc", definition: "String" },
];

/// A table whose engine or sort key changed since an earlier release: `gantry schema
/// apply` renames a table of the old shape to `legacy`, creates the new one, copies `copy`
/// (a `SELECT` over `legacy`, which names it as `{legacy}`) into it and drops `legacy`.
/// Each step may be run again after a crash in between (the copied rows are the same rows).
#[derive(Clone, Copy, Debug)]
pub struct Rebuilt {
    pub table: &'static str,
    /// What the table has now.
    pub shape: Shape,
    pub legacy: &'static str,
    pub copy: &'static str,
}

/// What tells a table of this release from one of an earlier release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `system.tables.engine`.
    Engine(&'static str),
    /// `system.tables.sorting_key`, as ClickHouse prints it (`a, b, c`).
    SortingKey(&'static str),
}

impl Shape {
    /// Whether a table with `engine` and `sorting_key` has this shape.
    pub fn is(self, engine: &str, sorting_key: &str) -> bool {
        match self {
            Shape::Engine(e) => e == engine,
            Shape::SortingKey(k) => k == sorting_key,
        }
    }
}

/// Every table rebuilt since the first release.
pub const REBUILT: &[Rebuilt] = &[
    // Checkpoints were a MergeTree keyed by (partition, batch): every checkpoint ever
    // written stayed, each with a whole state. Now only the newest per partition survives
    // merges; the copy keeps each partition's newest.
    Rebuilt {
        table: "gantry_checkpoints",
        shape: Shape::Engine("ReplacingMergeTree"),
        legacy: "gantry_checkpoints_v0",
        copy: "SELECT * FROM {legacy} WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, max(batch_seq) FROM {legacy} GROUP BY gantry_partition)",
    },
    // Usage was ordered by day first, so a customer's days were a scan of the whole range;
    // the API reads it by customer (the population-wide questions scan it anyway).
    Rebuilt {
        table: "customer_usage_daily",
        shape: Shape::SortingKey("customer_id, card_id, day, gantry_partition, batch_seq"),
        legacy: "customer_usage_daily_v0",
        copy: "SELECT day, customer_id, card_id, trips, fee, discount_fee, topups, topup_amount, gantry_partition, batch_seq FROM {legacy}",
    },
];

/// A table added since the first release and filled from the tables that existed before:
/// `gantry schema apply` runs `fill` (INSERT … SELECT statements) once, when it creates the
/// table in a database whose `from` table already exists. Crash between create and fill:
/// the table then exists and is left empty; drop it and apply again.
#[derive(Clone, Copy, Debug)]
pub struct Backfilled {
    pub table: &'static str,
    pub from: &'static str,
    pub fill: &'static [&'static str],
}

/// Every table filled from older ones.
pub const BACKFILLED: &[Backfilled] = &[
    // A card's way in for lookups: one row per card and batch from the ledger (trips of
    // rows from before the ledger carried them stay empty; the API then looks the trip up
    // in `settlements`), one per card and batch from the status list.
    Backfilled {
        table: "card_activity",
        from: "ledger",
        fill: &[
            "INSERT INTO card_activity SELECT card_id, any(customer_id), toUInt32(count()), argMax(balance_after, batch_row), max(batch_row), maxIf(time, kind = 'debit'), argMaxIf(batch_row, (time, batch_row), kind = 'debit'), argMaxIf(entry_id, (time, batch_row), kind = 'debit'), argMaxIf(gantry_id, (time, batch_row), kind = 'debit'), argMaxIf(toll_interval_id, (time, batch_row), kind = 'debit'), -argMaxIf(amount, (time, batch_row), kind = 'debit'), argMaxIf(plate_enc, (time, batch_row), kind = 'debit'), toUInt8(0), toUInt8(0), '', toDateTime(0), gantry_partition, batch_seq FROM ledger GROUP BY card_id, gantry_partition, batch_seq",
            "INSERT INTO card_activity SELECT card_id, '', toUInt32(0), toInt64(0), toUInt32(0), toDateTime(0), toUInt32(0), '', '', '', toInt64(0), '', toUInt8(1), argMax(listed, time), argMax(reason, time), max(time), gantry_partition, batch_seq FROM status_list GROUP BY card_id, gantry_partition, batch_seq",
        ],
    },
];

/// Objects of earlier releases that must not exist any more, dropped by `gantry schema
/// apply` before anything else: the materialized views that filled the rollups before
/// Gantry wrote them itself (left in place, they would count every row twice).
pub const DROPPED: &[&str] =
    &["clearing_daily_mv", "customer_usage_trips_mv", "customer_usage_topups_mv"];

/// The statement that creates `object`.
pub fn statement(object: &str) -> Option<&'static Statement> {
    STATEMENTS.iter().find(|s| s.object == object)
}

/// A table's `ORDER BY` columns as its statement declares them.
pub fn order_by(object: &str) -> Option<Vec<&'static str>> {
    let sql = statement(object)?.sql;
    let key = sql[sql.find("ORDER BY")? + "ORDER BY".len()..].trim();
    match key.strip_prefix('(') {
        Some(key) => Some(key[..key.find(')')?].split(',').map(str::trim).collect()),
        None => Some(vec![key.split_whitespace().next()?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list is the directory: every file is listed once, in file-name order (the order
    /// `tests/sql_compat.py` runs them in), and names the object its statement creates.
    #[test]
    fn the_list_is_the_directory_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/schema");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("schema dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8 name"))
            .collect();
        files.sort();
        let listed: Vec<&str> = STATEMENTS.iter().map(|s| s.file).collect();
        assert_eq!(listed, files);
        for s in STATEMENTS {
            let head = format!("IF NOT EXISTS {} ", s.object);
            assert!(s.sql.contains(&head), "{} creates {}", s.file, s.object);
            assert!(!s.sql.trim_end().ends_with(';'), "{}: one statement, no `;`", s.file);
        }
    }

    /// An added column is in its table's statement too, with the same type.
    #[test]
    fn added_columns_are_in_the_statements() {
        for c in ADDED_COLUMNS {
            let sql = statement(c.table).expect("table").sql;
            assert!(sql.contains(&format!("{} {}", c.column, c.definition)), "{c:?}");
        }
    }

    #[test]
    fn order_by_reads_the_key() {
        assert_eq!(order_by("settlements").unwrap(), ["trade_date", "trade_id"]);
        assert_eq!(order_by("ledger").unwrap(), ["customer_id", "card_id", "time"]);
        assert_eq!(order_by("gantry_checkpoints").unwrap(), ["gantry_partition"]);
        assert_eq!(order_by("nope"), None);
    }
}
