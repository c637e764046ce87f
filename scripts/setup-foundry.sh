#!/usr/bin/env bash
# Installs the Solidity toolchain into .tools/ (ignored by git) from npm, pinned by
# contracts/tools/package-lock.json (exact versions and integrity hashes, checked by `npm ci`):
# Foundry's forge and anvil 1.7.1 (@foundry-rs/*, which ship the real binaries in per-platform
# packages), solc-js 0.8.28 (npm `solc`; forge cannot download a native solc offline, so
# contracts/foundry.toml points at contracts/tools/solc, which makes solc-js answer like native
# solc), forge-std 1.1.2 and @openzeppelin/contracts 5.7.0. Then links the platform binaries
# as .tools/bin/forge and .tools/bin/anvil (the real executables: start anvil from there, not
# through npx, so that the PID you hold is anvil's own), and contracts/lib to the packages.
# Idempotent: does nothing when the lockfile is unchanged since the last complete install.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$PWD/.tools
LOCK=contracts/tools/package-lock.json
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "setup-foundry: node and npm are needed (apt-get install nodejs npm)" >&2; exit 2; }

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) echo "setup-foundry: unsupported OS $(uname -s)" >&2; exit 2 ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "setup-foundry: unsupported CPU $(uname -m)" >&2; exit 2 ;;
esac

stamp=$(cat contracts/tools/package.json "$LOCK" | sha256sum | cut -d' ' -f1)-$os-$arch
if [ -f "$TOOLS/.complete" ] && [ "$(cat "$TOOLS/.complete")" = "$stamp" ] &&
  [ -x "$TOOLS/bin/forge" ] && [ -x "$TOOLS/bin/anvil" ] && [ -d contracts/lib/solc ]; then
  exit 0
fi

echo "setup-foundry: installing forge, anvil, solc-js and Solidity libraries into .tools/"
rm -f "$TOOLS/.complete"
mkdir -p "$TOOLS/bin"
cp contracts/tools/package.json "$LOCK" "$TOOLS/"
# Install scripts stay off: the forge/anvil postinstall would only fetch the platform package
# that npm already installs as an optional dependency.
(cd "$TOOLS" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

for tool in forge anvil; do
  bin=$TOOLS/node_modules/@foundry-rs/$tool-$os-$arch/bin/$tool
  if [ ! -x "$bin" ]; then
    echo "setup-foundry: $bin is missing (npm did not install @foundry-rs/$tool-$os-$arch)" >&2
    exit 2
  fi
  ln -sfn "../node_modules/@foundry-rs/$tool-$os-$arch/bin/$tool" "$TOOLS/bin/$tool"
done
# contracts/lib points at the packages, so that forge sees the libraries inside the project
# (forge coverage's source analysis does not resolve relative imports outside it).
if [ -e contracts/lib ] && [ ! -L contracts/lib ]; then
  echo "setup-foundry: contracts/lib exists and is not a link; move it away" >&2
  exit 2
fi
ln -sfn ../.tools/node_modules contracts/lib
# The launcher foundry.toml names, also on .tools/bin for use by hand or by other tools.
rm -f "$TOOLS/bin/solc"
printf '#!/bin/sh\nexec "%s/contracts/tools/solc" "$@"\n' "$PWD" >"$TOOLS/bin/solc"
chmod +x "$TOOLS/bin/solc"

"$TOOLS/bin/forge" --version | head -1
"$TOOLS/bin/anvil" --version | head -1
"$TOOLS/bin/solc" --version | tail -1
echo "$stamp" >"$TOOLS/.complete"
