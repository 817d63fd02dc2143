//! The golden Native blocks (`tests/native/*.native`, which a unit test in gantry-clickhouse
//! pins Gantry's encoder to) read back on the ClickHouse the tests run against — 18.16 on
//! this project's machines — as exactly the golden rows (`tests/native/*.tsv`), rollups
//! included (Gantry writes them too). `tests/sql_compat.py` checks the same blocks against the same rows on current
//! ClickHouse, so both ends of the supported range read Gantry's bytes the same way.

#![forbid(unsafe_code)]

use std::path::Path;

use gantry_tests::Env;

/// The rows of a table as the golden files list them, whatever the server's time zone:
/// columns in schema order with `DateTime` as seconds, sorted by all of them (the same query
/// as `readable` in `tests/sql_compat.py`).
fn readable(env: &Env, table: &str) -> String {
    let exprs: Vec<String> = env
        .text(&format!("DESCRIBE TABLE {table}"))
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let (name, ty) = (f.next().expect("name"), f.next().expect("type"));
            if ty == "DateTime" {
                format!("toUnixTimestamp({name})")
            } else {
                name.to_string()
            }
        })
        .collect();
    let exprs = exprs.join(", ");
    env.text(&format!("SELECT {exprs} FROM {table} ORDER BY {exprs}"))
}

#[test]
fn native_blocks_read_back_as_the_golden_rows() {
    let env = Env::new("native", 1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("native");
    for (table, columns) in gantry_clickhouse::OUTPUT_TABLES {
        let body = std::fs::read(dir.join(format!("{table}.native"))).expect("golden block");
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        env.insert_body(&format!("INSERT INTO {table} ({}) FORMAT Native", names.join(", ")), body);
    }
    // `GANTRY_BLESS_NATIVE=1` (after a deliberate change of the blocks) rewrites the rows:
    // then read the diff, value by value, before committing it.
    let bless = std::env::var_os("GANTRY_BLESS_NATIVE").is_some();
    for table in gantry_clickhouse::OUTPUT_TABLES.map(|(t, _)| t) {
        if bless {
            std::fs::write(dir.join(format!("{table}.tsv")), readable(&env, table)).unwrap();
        }
        let want = std::fs::read_to_string(dir.join(format!("{table}.tsv"))).expect("golden rows");
        assert_eq!(readable(&env, table).trim(), want.trim(), "{table}");
    }
}
