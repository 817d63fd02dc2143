#!/usr/bin/env python3
"""Every DDL statement and every query the project ships must run on current ClickHouse too.

Runs the schema (twice: it must be idempotent), inserts a few rows through the tables the
materialized views read, checks the rollups, and runs the report queries, all in chdb
(an in-process ClickHouse of the current release). The same statements run against the
local 18.16 server in the Rust integration tests and `gantry schema apply`.
"""
import pathlib
import sys

from chdb import session

ROOT = pathlib.Path(__file__).resolve().parent.parent


def statements(text):
    body = "\n".join(l for l in text.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def main():
    s = session.Session()
    version = s.query("SELECT version()", "CSV").bytes().decode().strip()
    s.query("CREATE DATABASE IF NOT EXISTS compat")
    s.query("USE compat")
    ddl = statements((ROOT / "crates/gantry-clickhouse/src/schema.sql").read_text())
    for _ in range(2):
        for stmt in ddl:
            s.query(stmt)
    s.query("INSERT INTO settlement_splits (trade_id, trade_date, owner_id, issuer_id, vehicle_type, media_type, pay_fee, discount_fee, fee) "
            "VALUES ('T1', '2026-11-10', 'OP1', '3201', 1, 1, 620, 31, 589), ('T2', '2026-11-10', 'OP1', '3201', 1, 1, 620, 31, 589)")
    s.query("INSERT INTO settlements (trade_id, trade_date, card_id, customer_id, fee, discount_fee) VALUES ('T1', '2026-11-10', 'C1', 'CU1', 589, 31)")
    s.query("INSERT INTO ledger (card_id, customer_id, entry_id, kind, amount, entry_date) VALUES ('C1', 'CU1', 'TU1', 'topup', 10000, '2026-11-10')")
    checks = [
        ("SELECT sum(n), sum(fee) FROM clearing_daily", "2,1178"),
        ("SELECT sum(trips), sum(fee), sum(topups), sum(topup_amount) FROM customer_usage_daily", "1,589,1,10000"),
    ]
    failures = 0
    for q, want in checks:
        got = s.query(q, "CSV").bytes().decode().strip()
        if got != want:
            print(f"FAIL {q}: got {got}, want {want}")
            failures += 1
    reports = [q.replace("{db}", "compat") for q in (ROOT / "deploy/local/report.sql").read_text().split("\n;\n")]
    for q in reports:
        q = "\n".join(l for l in q.splitlines() if not l.strip().startswith("--")).strip()
        if q:
            s.query(q, "CSV")
    total = len(ddl) + len(checks) + len(reports)
    print(f"ClickHouse {version}: {len(ddl)} DDL statements (twice), {len(checks)} rollup checks, {len(reports)} report queries")
    print(f"sql_compat: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
