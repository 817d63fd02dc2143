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
    native = native_blocks(s, ddl)
    failures += sum(1 for ok in native if not ok)
    total = len(ddl) + len(checks) + len(reports) + len(native)
    print(f"ClickHouse {version}: {len(ddl)} DDL statements (twice), {len(checks)} rollup checks, {len(reports)} report queries, "
          f"{len(native)} Native blocks")
    print(f"sql_compat: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


# What the golden Native blocks (tests/native/, written by Gantry's encoder; a unit test in
# gantry-clickhouse checks the encoder still writes them byte for byte) must read as, table by
# table, and what the rollups make of them. The same blocks read the same on 18.16.
NATIVE_EXPECTED = {
    "settlements": """\
G0001-A	2026-11-06 21:20:01	2026-11-07	G0001	G0015320030010	32010000000000000042	OBU7		P1	CU42	3201	1	22	1	0	2	1209	31	1178	\\N	32-20261101-001	8822	1	2	11	2	7
G0001-B	2026-11-06 21:20:00	2026-11-07	G0001	G0015320030010	32010000000000000042	OBU7	苏A12345_0	P1	CU42	3201	1	22	1	0	2	620	31	589	589	32-20261101-001	9411	1	2	10	2	7""",
    "settlement_splits": """\
G0001-A	2026-11-07	2026-11-06 21:20:01	G0015320030010	OP1	3201	1	1	1209	31	1178	2	7
G0001-B	2026-11-07	2026-11-06 21:20:00	G0015320030010	OP1	3201	1	1	620	31	589	2	7""",
    "ledger": """\
32010000000000000042	CU42	G0001-A	debit	-1178	8822	2026-11-06 21:20:01	2026-11-07	2	11	2	7
32010000000000000042	CU42	G0001-B	debit	-589	9411	2026-11-06 21:20:00	2026-11-07	2	10	2	7
32010000000000000042	CU42	TU1	topup	5000	13233	2026-11-06 21:20:02	2026-11-07	2	3	2	8""",
    "rejects": """\
gantry.lane-tx/2/12	not_json		{"tradeId":	2026-11-06 21:20:00	gantry.lane-tx	2	12	2	7""",
    "duplicates": """\
G0001-A	trade	gantry.lane-tx/2/13	2026-11-06 21:20:01	2	8""",
    "status_list": """\
32010000000000000042	1	insufficient_balance	2026-11-06 21:20:02	2	8""",
    "clearing_daily": """\
2026-11-07	OP1	3201	1	1	2	1829	62	1767""",
    "customer_usage_daily": """\
2026-11-07	CU42	32010000000000000042	0	0	0	1	5000
2026-11-07	CU42	32010000000000000042	2	1767	62	0	0""",
}


def native_blocks(s, ddl):
    """Inserts each golden Native block into a fresh copy of the schema, as Gantry does
    (columns named, types as the block declares them), and compares every table."""
    s.query("CREATE DATABASE IF NOT EXISTS native")
    s.query("USE native")
    s.query("SET session_timezone = 'UTC'")
    for stmt in ddl:
        s.query(stmt)
    results = []
    for table in ["settlements", "settlement_splits", "ledger", "rejects", "duplicates", "status_list"]:
        path = ROOT / "tests/native" / f"{table}.native"
        block = [l.split("\t")[:2] for l in s.query(f"DESCRIBE file('{path}', Native)", "TSV").bytes().decode().splitlines()]
        schema = [l.split("\t") for l in s.query(
            f"SELECT name, type FROM system.columns WHERE database = 'native' AND table = '{table}'", "TSV").bytes().decode().splitlines()]
        if sorted(block) != sorted(schema):
            print(f"FAIL Native block of {table}: columns {block} differ from the table's {schema}")
            results.append(False)
            continue
        names = ", ".join(n for n, _ in block)
        s.query(f"INSERT INTO {table} ({names}) SELECT {names} FROM file('{path}', Native)")
    for table, want in NATIVE_EXPECTED.items():
        got = s.query(f"SELECT * FROM {table} ORDER BY ALL", "TSV").bytes().decode().strip()
        if got != want:
            print(f"FAIL Native block of {table}: got\n{got}\nwant\n{want}")
        results.append(got == want)
    s.query("USE compat")
    return results


if __name__ == "__main__":
    sys.exit(main())
