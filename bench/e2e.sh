#!/usr/bin/env bash
# End-to-end benchmark on the local stack (Tansu must use memory:// storage, the default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/stack up
cargo build --release -j2 -q -p gantry-bench --bin e2e
./target/release/e2e "$@"
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
python3 bench/plot_latency.py bench/results
