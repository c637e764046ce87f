#!/usr/bin/env bash
# The main job on the embedded defaults, until `conclave demo` (the demo issue) joins the chain
# and the gossip network to it: three sim enclaves train three SparseLoCo rounds together through
# the host proxy (`conclave run --config configs/local/operator.toml`), every result signed and
# checked; receipts, evidence and the checkpoint land in runs/local/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
bash scripts/setup-corpus.sh
source scripts/env.sh
cargo build --release -p conclave-host -p conclave-enclave
exec target/release/conclave run --config configs/local/operator.toml "$@"
