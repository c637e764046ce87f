#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 10), seeded from the real
# vectors in ../shared/vectors. Needs a nightly toolchain; installs cargo-fuzz if missing.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(snp_report tdx_quote envelope evidence sparse_update toploc_proof round_receipt gossip_message channel_frame guest_image update_payload canonical sealed key_release)
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain here; skipping (install one with 'rustup toolchain install nightly')"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
vectors=${CONCLAVE_VECTORS:-../shared/vectors}
seed() { # target -> seed corpus folder
  local dir=fuzz/corpus/$1; mkdir -p "$dir"
  case $1 in
    snp_report) cp "$vectors"/snp/go-sev-guest-debug/attestation.bin "$vectors"/snp/dstack-milan-v3/sev_snp_report_extracted.bin "$dir"/ 2>/dev/null || true ;;
    tdx_quote) cp "$vectors"/tdx/dcap-qvl/tdx_quote "$vectors"/tdx/dcap-qvl/tdx_quote_outdated "$dir"/ 2>/dev/null || true ;;
    canonical) # a kind byte (0 TDX, 1 SNP) before the real evidence
      for f in "$vectors"/tdx/dcap-qvl/tdx_quote; do [ -f "$f" ] && { printf '\x00'; cat "$f"; } > "$dir/tdx-$(basename "$f")"; done
      for f in "$vectors"/snp/go-sev-guest-debug/attestation.bin; do [ -f "$f" ] && { printf '\x01'; cat "$f"; } > "$dir/snp-$(basename "$f")"; done
      true ;;
    key_release) # a request of the right shape, a challenge, a sealed-dataset index
      z=0000000000000000000000000000000000000000000000000000000000000000
      printf '{"sealing_id":"%s","nonce":"%s","public_key":"%s","evidence":"Q05WRVYx"}' $z $z $z > "$dir/request.json"
      printf '{"sealing_id":"%s","nonce":"%s","ttl_s":300}' $z $z > "$dir/challenge.json"
      printf '{"version":1,"sealing_id":"%s","key_check":"%s","files":[{"name":"manifest.json","plaintext_sha256":"%s","ciphertext_sha256":"%s","size":2}]}' $z $z $z $z > "$dir/index.json" ;;
  esac
  echo "$dir"
}
for t in "${targets[@]}"; do
  dir=$(seed "$t")
  echo "fuzz: $t for ${secs}s"
  log=$(mktemp)
  rc=0
  cargo +nightly fuzz run "$t" "$dir" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  grep -E "^(Done|==[0-9]+==|SUMMARY|thread .* panicked|error)" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz: $t failed (exit $rc); crashing inputs are in fuzz/artifacts/$t"
    exit 1
  fi
  rm -f "$log"
done
