#!/usr/bin/env bash
# One entry point for developers and CI:
#   ./dev.sh setup   create .venv and install continuum-mcp with the CPU build of torch
#   ./dev.sh demo    set up, then run the end-to-end demo (memory + federation)
#   ./dev.sh test    set up, then run the test suite
#   ./dev.sh bench   set up, then run the benchmarks
set -euo pipefail
cd "$(dirname "$0")"
VENV=${CONTINUUM_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.continuum-installed"
  local want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  # CPU-only torch first, so that sentence-transformers does not pull the CUDA build.
  # Here `torch==2.13.0` resolves to a local CPU wheel; elsewhere set
  # TORCH_INDEX_URL to PyTorch's CPU wheel index (see README).
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install --quiet torch --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install --quiet "torch==2.13.0"
  fi
  "$PY" -m pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
}

case "${1:-}" in
  setup) setup ;;
  demo)  setup; shift; exec "$PY" examples/demo.py "$@" ;;
  test)  setup; shift; exec "$PY" -m pytest -q -p no:cacheprovider "$@" ;;
  bench) setup; shift
         "$PY" benchmarks/bench_memory.py "$@"
         "$PY" benchmarks/bench_locomo.py
         "$PY" benchmarks/bench_scrub.py
         "$PY" benchmarks/bench_secagg.py
         "$PY" benchmarks/bench_federation_load.py
         "$PY" benchmarks/bench_privacy_utility.py ;;
  *) echo "usage: ./dev.sh setup|demo|test|bench" >&2; exit 2 ;;
esac
