#!/usr/bin/env bash
# README command 1: the whole system on this machine. Installs what it needs (the project's
# Python venv with libtorch, the Moby-Dick corpus, anvil/forge from npm), builds, and runs
# `conclave demo`: a local chain with the contract, a customer's job, three operators (each a
# `conclave node` with a sim enclave) that join on chain, train with DeMo, gossip signed
# updates over libp2p, commit signed checkpoints and get paid; then the summary and
# `conclave audit` of the result. Arguments go to `conclave demo` (see --help); with
# `--enclave vm` every operator's enclave boots the measured guest image instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
bash scripts/setup-corpus.sh
bash scripts/setup-foundry.sh
case " $* " in
  *" --enclave vm "*|*" --enclave=vm "*) bash scripts/setup-image.sh ;;   # the guest image's pinned inputs, qemu
esac
source scripts/env.sh
cargo build --release -p conclave-host -p conclave-enclave -p conclave-init
exec target/release/conclave demo "$@"
