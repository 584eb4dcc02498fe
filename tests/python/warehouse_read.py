"""Reads the warehouse export's Parquet files as a warehouse would, with DuckDB and with
pyarrow, and checks both against the gateway's own usage view.

Env: QM_WAREHOUSE_DIR (the landing zone), QM_EXPECT (JSON: {"total": {...}, "by_day":
{"YYYY-MM-DD": {...}}}, as GET /admin/usage reports them). Prints "N passed, 0 failed".
"""

import json
import math
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

DIR = os.environ["QM_WAREHOUSE_DIR"]
WANT = json.loads(os.environ["QM_EXPECT"])
passed = failed = 0


def check(what, got, want):
    global passed, failed
    ok = math.isclose(float(got or 0), float(want), rel_tol=1e-9, abs_tol=1e-9)
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}: got {got}, want {want}", file=sys.stderr)


FIELDS = ["requests", "tokens_in", "tokens_out", "spend_usd", "savings_usd", "cache_hits"]
con = duckdb.connect()
requests = f"read_parquet('{DIR}/requests/**/*.parquet', hive_partitioning = true)"
usage = f"read_parquet('{DIR}/usage_daily/**/*.parquet', hive_partitioning = true)"

# DuckDB: the request rows, and the daily rollup, against the gateway's totals.
row = con.execute(
    f"SELECT COUNT(*), SUM(tokens_in), SUM(tokens_out), SUM(cost_usd), SUM(saved_usd), "
    f"SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END) FROM {requests}"
).fetchone()
for f, v in zip(FIELDS, row):
    check(f"duckdb requests {f}", v, WANT["total"][f])
row = con.execute(
    f"SELECT SUM(requests), SUM(tokens_in), SUM(tokens_out), SUM(spend_usd), SUM(savings_usd), "
    f"SUM(cache_hits) FROM {usage}"
).fetchone()
for f, v in zip(FIELDS, row):
    check(f"duckdb usage_daily {f}", v, WANT["total"][f])
# Per day: the partition is the UTC day of each row.
for day, want in WANT["by_day"].items():
    got = con.execute(
        f"SELECT COUNT(*), SUM(cost_usd) FROM {requests} "
        f"WHERE CAST(day AS VARCHAR) = '{day}' AND strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%d') = '{day}'"
    ).fetchone()
    check(f"duckdb {day} requests", got[0], want["requests"])
    check(f"duckdb {day} spend", got[1], want["spend_usd"])

# pyarrow: the same through its dataset API, with the schema's types.
table = ds.dataset(f"{DIR}/requests", format="parquet", partitioning="hive").to_table()
check("pyarrow requests", table.num_rows, WANT["total"]["requests"])
check("pyarrow tokens_in", pc.sum(table["tokens_in"]).as_py(), WANT["total"]["tokens_in"])
check("pyarrow spend_usd", pc.sum(table["cost_usd"]).as_py(), WANT["total"]["spend_usd"])
t = table.schema.field("created_at").type
if pa.types.is_timestamp(t) and t.unit == "ms" and t.tz in ("UTC", "+00:00"):
    passed += 1
else:
    failed += 1
    print(f"FAIL created_at type {t}", file=sys.stderr)
daily = ds.dataset(f"{DIR}/usage_daily", format="parquet", partitioning="hive").to_table()
check("pyarrow usage_daily spend", pc.sum(daily["spend_usd"]).as_py(), WANT["total"]["spend_usd"])
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
