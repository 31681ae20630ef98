#!/usr/bin/env bash
# One entry point for developers and CI:
#   ./dev.sh setup      create .venv and install continuum-mcp with the CPU build of torch
#   ./dev.sh demo       set up, then run the end-to-end demo (memory + federation)
#   ./dev.sh test       set up, then run the whole test suite (what CI runs)
#   ./dev.sh test-fast  set up, then run the tests not marked slow (the inner loop, < 3 min)
#   ./dev.sh bench      set up, then run the benchmarks
# Extra arguments go to pytest / the memory benchmark. pip's output goes to $VENV/setup.log.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${CONTINUUM_VENV:-.venv}
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

step() {  # step "what" command...: one progress line; the command's output goes to the log
  printf '%s ... ' "$1" >&2
  shift
  if "$@" >>"$LOG" 2>&1; then
    echo "ok" >&2
  else
    echo "FAILED (last lines of $LOG:)" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
}

setup() {
  if [ ! -x "$PY" ]; then
    mkdir -p "$VENV"
    : >"$LOG"
    step "creating $VENV" python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.continuum-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  # CPU-only torch first, so that sentence-transformers does not pull the CUDA build.
  # Here `torch==2.13.0` resolves to a local CPU wheel; elsewhere set
  # TORCH_INDEX_URL to PyTorch's CPU wheel index (see README).
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    step "installing torch (CPU)" "$PY" -m pip install -q torch --index-url "$TORCH_INDEX_URL"
  else
    step "installing torch (CPU)" "$PY" -m pip install -q "torch==2.13.0"
  fi
  step "installing continuum-memory-mcp (editable) and its test tools" "$PY" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
}

case "${1:-}" in
  setup)     setup ;;
  demo)      setup; shift; exec "$PY" examples/demo.py "$@" ;;
  test)      setup; shift; exec "$PY" -m pytest -q -p no:cacheprovider "$@" ;;
  test-fast) setup; shift; exec "$PY" -m pytest -q -p no:cacheprovider -m "not slow" "$@" ;;
  bench) setup; shift
         "$PY" benchmarks/bench_memory.py "$@"
         "$PY" benchmarks/bench_locomo.py
         "$PY" benchmarks/bench_scrub.py
         "$PY" benchmarks/bench_secagg.py
         "$PY" benchmarks/bench_federation_load.py
         "$PY" benchmarks/bench_privacy_utility.py ;;
  *) echo "usage: ./dev.sh setup|demo|test|test-fast|bench [args]" >&2; exit 2 ;;
esac
