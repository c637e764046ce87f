#!/usr/bin/env bash
# Creates the project's Python environment in .venv (ignored by git):
#   - torch 2.13.0: the libtorch that tch 0.26 builds against (LIBTORCH_USE_PYTORCH=1)
#   - detonation 0.5.2 (+ einops, mltiming): the DeMo reference TransformDCT/CompressDCT
#   - toploc 0.1.6, compiled from source against torch 2.13 (its wheel targets torch 2.6)
#   - sev-snp-measure 0.0.13: an independent SNP launch-digest implementation (images tests)
#   - schemathesis 4.32.5: property-based tests of the host API from its OpenAPI document
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CONCLAVE_VENV:-$PWD/.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-python: creating $VENV"
    "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

have() { "$VENV/bin/python" - "$1" "$2" <<'PY' 2>/dev/null
import sys, importlib.metadata as m
sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
PY
}

if ! have torch 2.13.0; then
    echo "setup-python: installing torch 2.13.0 (about 4.7 GB)"
    pip install torch==2.13.0
fi
if ! have detonation 0.5.2 || ! have einops "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("einops"))' 2>/dev/null || echo none)"; then
    echo "setup-python: installing detonation 0.5.2, einops, mltiming"
    pip install detonation==0.5.2 einops mltiming setuptools wheel ninja numpy safetensors
fi
if ! have sev-snp-measure 0.0.13; then
    echo "setup-python: installing sev-snp-measure 0.0.13 (independent SNP launch-digest oracle)"
    pip install sev-snp-measure==0.0.13
fi
if ! have schemathesis 4.32.5; then
    echo "setup-python: installing schemathesis 4.32.5 (API tests)"
    pip install schemathesis==4.32.5
fi
if ! have toploc 0.1.6; then
    echo "setup-python: building toploc 0.1.6 from source (about 2.5 minutes)"
    pip install setuptools wheel ninja
    MAX_JOBS=${MAX_JOBS:-2} pip install --no-build-isolation --no-binary toploc toploc==0.1.6
fi
"$VENV/bin/python" - <<'PY'
import torch, toploc, detonation, einops, sevsnpmeasure
print(f"setup-python: torch {torch.__version__}, toploc and detonation import")
PY
