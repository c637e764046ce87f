#!/usr/bin/env bash
# The contract suite: installs the Solidity toolchain into .tools/ (scripts/setup-foundry.sh),
# then runs every forge test in contracts/ (unit tests, fuzz tests and invariant tests with the
# runs set in contracts/foundry.toml: 10 000 each) with a gas report for ConclaveTraining. The
# output is printed and kept in contracts/out/test-report.txt (ignored by git). When the tests
# pass, contracts/abi/ConclaveTraining.json (ABI and bytecode for the chain client's bindings) is
# rewritten from the build; it says whether that changed it. Extra arguments go to `forge test`
# (e.g. --match-contract JobsTest); FOUNDRY_FUZZ_RUNS, FOUNDRY_INVARIANT_RUNS and
# FOUNDRY_INVARIANT_DEPTH override the configured runs. Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-foundry.sh
cd contracts
mkdir -p out
start=$(date +%s)
../.tools/bin/forge test --gas-report "$@" 2>&1 | tee out/test-report.txt
node tools/export-abi.js
echo "test-contracts: passed in $(($(date +%s) - start)) s; report in contracts/out/test-report.txt"
