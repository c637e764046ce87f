# Sourced by the project's scripts: builds link against the libtorch of the project's venv
# (tch 0.26 ↔ PyTorch 2.13.0 from PyPI), and tests find the Python reference oracles there.
_conclave_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONCLAVE_VENV=${CONCLAVE_VENV:-$_conclave_root/.venv}
export CONCLAVE_PYTHON=$CONCLAVE_VENV/bin/python
export LIBTORCH_USE_PYTORCH=1
export PATH="$CONCLAVE_VENV/bin:$PATH"
if [ -x "$CONCLAVE_PYTHON" ]; then
    _torch_lib=$("$CONCLAVE_PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
