#!/usr/bin/env python3
"""Every DDL statement and every query the project ships must run on current ClickHouse too.

Runs the schema (twice: it must be idempotent), reads the golden Native blocks of every
table back as the golden rows, and runs the report queries, all in chdb
(an in-process ClickHouse of the current release). The same statements run against the
local 18.16 server in the Rust integration tests and `gantry schema apply`.
"""
import pathlib
import sys

from chdb import session

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    s = session.Session()
    version = s.query("SELECT version()", "CSV").bytes().decode().strip()
    s.query("CREATE DATABASE IF NOT EXISTS compat")
    s.query("USE compat")
    # One statement per file, applied in file-name order (as `schema::STATEMENTS` lists them).
    ddl = [f.read_text().strip() for f in sorted((ROOT / "crates/gantry-clickhouse/src/schema").glob("*.sql"))]
    for _ in range(2):
        for stmt in ddl:
            s.query(stmt)
    failures = 0
    reports = [q.replace("{db}", "compat") for q in (ROOT / "deploy/local/report.sql").read_text().split("\n;\n")]
    for q in reports:
        q = "\n".join(l for l in q.splitlines() if not l.strip().startswith("--")).strip()
        if q:
            s.query(q, "CSV")
    native = native_blocks(s, ddl)
    failures += sum(1 for ok in native if not ok)
    api = api_queries(s)
    failures += sum(1 for ok in api if not ok)
    total = len(ddl) + len(reports) + len(native) + len(api)
    print(f"ClickHouse {version}: {len(ddl)} DDL statements (twice), {len(reports)} report queries, "
          f"{len(native)} Native blocks, {len(api)} API queries")
    print(f"sql_compat: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


# Gantry writes every table, the rollups included (no materialized views).
NATIVE_TABLES = ["settlements", "settlement_splits", "ledger", "rejects", "duplicates", "status_list",
                 "clearing_daily", "customer_usage_daily", "card_activity"]


def readable(s, database, table):
    """A query listing a table's rows as the golden `.tsv` files do, whatever the server's
    time zone: every column in schema order, `DateTime` as seconds, rows sorted by all of
    them. The Rust integration test builds the same query for ClickHouse 18.16."""
    cols = [l.split("\t")[:2] for l in s.query(f"DESCRIBE TABLE {database}.{table}", "TSV").bytes().decode().splitlines()]
    exprs = ", ".join(f"toUnixTimestamp({n})" if t == "DateTime" else n for n, t in cols)
    return f"SELECT {exprs} FROM {database}.{table} ORDER BY {exprs}"


def native_blocks(s, ddl):
    """Inserts each golden Native block (tests/native/*.native, written by Gantry's encoder;
    a unit test in gantry-clickhouse checks the encoder still writes them byte for byte) into
    a fresh copy of the schema, as Gantry does (columns named, types as the block declares
    them), and compares every table and rollup with tests/native/*.tsv. The integration test
    `native_blocks_read_back_as_the_golden_rows` does the same on 18.16."""
    s.query("CREATE DATABASE IF NOT EXISTS native")
    s.query("USE native")
    for stmt in ddl:
        s.query(stmt)
    results = []
    for table in NATIVE_TABLES:
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
    for table in NATIVE_TABLES:
        want = (ROOT / "tests/native" / f"{table}.tsv").read_text().strip()
        got = s.query(readable(s, "native", table), "TSV").bytes().decode().strip()
        if got != want:
            print(f"FAIL Native block of {table}: got\n{got}\nwant\n{want}")
        results.append(got == want)
    s.query("USE compat")
    return results


def api_queries(s):
    """Runs every query of `gantry serve` (crates/gantry-api/src/sql/*.sql) over the golden
    rows, with the example arguments each file's first line gives (one per `?`, in order,
    as the Rust client binds them); the API's integration test runs them on 18.16."""
    results = []
    s.query("USE native")
    for path in sorted((ROOT / "crates/gantry-api/src/sql").glob("*.sql")):
        first, body = path.read_text().split("\n", 1)
        example = first.removeprefix("-- example:").strip()
        args = [a.strip() for a in example.split(",")] if example else []
        parts = body.split("?")
        if len(parts) - 1 != len(args):
            print(f"FAIL {path.name}: {len(parts) - 1} placeholders, {len(args)} example arguments")
            results.append(False)
            continue
        sql = parts[0] + "".join(a + p for a, p in zip(args, parts[1:]))
        try:
            s.query(sql, "CSV")
            results.append(True)
        except Exception as e:  # chdb raises its own error type
            print(f"FAIL {path.name}: {e}")
            results.append(False)
    s.query("USE compat")
    return results


if __name__ == "__main__":
    sys.exit(main())
