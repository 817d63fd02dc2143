//! The DDL of `schema.sql`, split into statements.

pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// Every statement of the schema, in order, comments removed.
pub fn statements() -> Vec<String> {
    let text: String = SCHEMA_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}
