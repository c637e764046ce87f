#!/usr/bin/env bash
# The project's test command (README): sets up the Python venv (libtorch for tch, and the
# reference oracles detonation and toploc), then every crate's unit, integration and doc tests.
# Real attestation vectors are read from ../shared/vectors (override with CONCLAVE_VECTORS).
set -euo pipefail
cd "$(dirname "$0")/.."
vectors=${CONCLAVE_VECTORS:-../shared/vectors}
if [ ! -f "$vectors/README.md" ]; then
  echo "test: the shared vectors are missing at $vectors (clone ../shared beside the project, or set CONCLAVE_VECTORS)" >&2
  exit 2
fi
export CONCLAVE_VECTORS=$(cd "$vectors" && pwd)
bash scripts/setup-python.sh
bash scripts/setup-corpus.sh
# The contract suite (forge: unit, fuzz and invariant tests) also installs anvil for the chain
# client's integration test.
bash scripts/test-contracts.sh
# The guest image's inputs (pinned Debian trixie packages) and tools (mksquashfs, qemu for the
# TCG boot test).
bash scripts/setup-image.sh
source scripts/env.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
# The host API against its own OpenAPI document (schemathesis, property-based).
bash scripts/test-api.sh
