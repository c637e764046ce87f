#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI, in .venv) generates requests from the live
# server's /openapi.json and checks every answer (no 5xx, status codes and bodies as
# documented). A job's config is TOML whose content (replicas, optimizer) the schema cannot
# express, so schema-valid bodies may get a documented 422: the check that every schema-valid
# body is accepted is left out. POST /v1/jobs needs the API token (`conclave serve` creates it
# in the storage folder): every request carries it, and schemathesis's ignored_auth check
# confirms that the route refuses requests without it. Runs after `cargo test` has built
# target/debug/conclave and conclave-enclave.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bin=${CARGO_TARGET_DIR:-target}/debug
[ -x "$bin/conclave" ] || { echo "test-api: build first (cargo build --workspace)" >&2; exit 2; }
work=$(mktemp -d)
cat > "$work/operator.toml" <<TOML
[enclave]
kind = "sim"
program = "$PWD/$bin/conclave-enclave"
corpus = "$PWD/.data/moby-dick/package"
cache = "$work/cache"
threads = 1
[storage]
dir = "$work/store"
[api]
listen = "127.0.0.1:0"
TOML
"$bin/conclave" serve --config "$work/operator.toml" > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    grep -q "http://" "$work/serve.out" 2>/dev/null && break
    sleep 0.1
done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -1)
[ -n "$url" ] || { echo "test-api: the server did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
token_file="$work/store/api-token"
[ -s "$token_file" ] || { echo "test-api: no API token in $token_file" >&2; exit 1; }
echo "test-api: schemathesis against $url"
"$CONCLAVE_VENV/bin/schemathesis" run "$url/openapi.json" \
    --header "Authorization: Bearer $(cat "$token_file")" \
    --checks all --exclude-checks positive_data_acceptance --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" --seed 1 \
    --suppress-health-check all --request-timeout 30
