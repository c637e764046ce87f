#!/usr/bin/env bash
# The convergence benchmark: the same small GPT, data and token budget trained by 4 replicas
# with the AdamW all-reduce baseline, DeMo (k=32 f32; k=4 1-bit) and SparseLoCo (H=10, k=64,
# 2-bit). Writes runs/convergence/<method>/ and the table benchmarks/convergence.md.
# Usage: scripts/convergence.sh [EXTRA TRAIN FLAGS...]   (e.g. --device cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh >/dev/null
bash scripts/setup-corpus.sh
source scripts/env.sh
cargo build --release -q -p conclave-enclave
E=target/release/conclave-enclave
runs=()
for m in adamw demo-k32 demo-k4-1bit sparseloco; do
    echo "== $m"
    "$E" train --config "configs/convergence/$m.toml" "$@"
    runs+=("runs/convergence/$m")
done
mkdir -p benchmarks
"$E" report "${runs[@]}" --out benchmarks/convergence.md
