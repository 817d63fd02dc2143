#!/usr/bin/env python3
"""Plots bench/results/e2e-latency.csv (HDR percentiles) to bench/results/e2e-latency.png."""
import csv
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
rows = list(csv.DictReader(open(d / "e2e-latency.csv")))
q = [float(r["quantile"]) for r in rows if float(r["quantile"]) < 1.0]
v = [float(r["latency_ms"]) for r in rows if float(r["quantile"]) < 1.0]
x = [1 / (1 - p) for p in q]
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(x, v, marker="o")
ax.set_xscale("log")
ax.set_xticks(x)
ax.set_xticklabels([f"p{p * 100:g}" for p in q], rotation=45)
ax.set_ylabel("lane → ClickHouse latency (ms)")
ax.set_title("Gantry end-to-end latency (Kafka timestamp → batch committed)")
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(d / "e2e-latency.png", dpi=110)
print(f"wrote {d / 'e2e-latency.png'}")
