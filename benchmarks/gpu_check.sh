#!/usr/bin/env bash
# The GPU check in one call: CUDA-marked tests, every task's contract example on the device against the CPU
# at a fixed seed, and throughput device / CPU at the batch that fills the device; figures into $OUT.
#
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--small] [--out DIR] [--budget SECONDS]
#                           [--wheels DIR] [--without mod1,mod2] [--cpu-threads N]
#
# --device   cuda (default) or cpu (a dry run: the same steps, the CPU standing in for the device)
# --small    tiny batches and iterations (the dry run of tests/test_gpu_check.py)
# --out      where the figures go (default: $OUT when set, else ./gpu_out)
# --budget   seconds for the whole check (default 480); each step gets a share and stops in time
# --wheels   folder of wheels to install first (default: wheels/, made by benchmarks/gpu_wheels.sh)
# --without  modules to make unimportable (a dry run that sees what the device lacks: ray,duckdb)
# --cpu-threads  torch threads of the CPU side of the throughput ratios (default 2, the README's machine)
#
# Runs with the repository's code in place (no install: a folder of links maps survey.tasks to tasks/,
# as pyproject.toml does); Python is $PYTHON, else .venv/bin/python when present, else python3.
# Writes gpu_check.log, gpu_check.json, gpu_check.md, gpu_tests.json, gpu_agree.json, gpu_speed.json and
# gpu_pytest.txt into the output folder. Exit 0 when every check passed, 1 when one failed, 2 on bad input.
# benchmarks/README.md ("GPU") has the one-line call for the device tool.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

DEVICE=cuda SMALL=0 OUT_DIR=${OUT:-./gpu_out} BUDGET=480 WHEELS=wheels WITHOUT="" CPU_THREADS=2
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=${2:-}; shift 2 || { echo "gpu_check.sh: --device needs a value (cuda or cpu)" >&2; exit 2; } ;;
    --small) SMALL=1; shift ;;
    --out) OUT_DIR=${2:-}; shift 2 || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; } ;;
    --budget) BUDGET=${2:-}; shift 2 || { echo "gpu_check.sh: --budget needs seconds" >&2; exit 2; } ;;
    --wheels) WHEELS=${2:-}; shift 2 || { echo "gpu_check.sh: --wheels needs a folder" >&2; exit 2; } ;;
    --without) WITHOUT=${2:-}; shift 2 || { echo "gpu_check.sh: --without needs module names" >&2; exit 2; } ;;
    --cpu-threads) CPU_THREADS=${2:-}; shift 2 || { echo "gpu_check.sh: --cpu-threads needs a number" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac
case "$CPU_THREADS" in ''|*[!0-9]*|0) echo "gpu_check.sh: --cpu-threads must be a positive integer, got '$CPU_THREADS'" >&2; exit 2 ;; esac
[ "$BUDGET" -ge 60 ] || { echo "gpu_check.sh: --budget must be at least 60 seconds, got $BUDGET" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT_DIR" || { echo "gpu_check.sh: cannot create the output folder '$OUT_DIR'" >&2; exit 2; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR"/gpu_*.json "$OUT_DIR"/gpu_check.md "$OUT_DIR"/gpu_pytest.txt

START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
share() {  # share PERCENT CAP: seconds for the next step, PERCENT of what is left, at most CAP
  local s=$(( $(left) * $1 / 100 )); [ "$s" -gt "$2" ] && s=$2; [ "$s" -lt 20 ] && s=20; echo "$s"; }

main() {
  echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), device $DEVICE$([ $SMALL = 1 ] && echo ' (small)'), budget ${BUDGET}s, python $PYTHON"
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || return 2
  trap 'rm -rf "$SITE"' RETURN

  # 1. wheels the machine lacks (carried in $WHEELS): pure-Python ones always, compiled ones for this Python only
  case "$WHEELS" in /*) ;; *) WHEELS=$ROOT/$WHEELS ;; esac
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    local tag picked=()
    tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    for w in "$WHEELS"/*.whl; do
      case "$(basename "$w")" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl|*-"$tag"-*) picked+=("$w") ;;
        *) echo "gpu_check: wheel $(basename "$w") is not for $tag: left out" ;;
      esac
    done
    if [ ${#picked[@]} -gt 0 ]; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${picked[@]}" || { echo "gpu_check: installing the wheels from $WHEELS failed" >&2; return 2; }
      echo "gpu_check: installed ${#picked[@]} wheels from $WHEELS into $SITE"
    fi
  else
    echo "gpu_check: no wheels in '$WHEELS' (benchmarks/gpu_wheels.sh makes them); using what is installed"
  fi

  # 2. the package in place: survey/* plus tasks/ and analysis/ as survey.tasks and survey.analysis
  mkdir -p "$SITE/survey"
  for entry in "$ROOT"/survey/*; do ln -s "$entry" "$SITE/survey/$(basename "$entry")"; done
  ln -s "$ROOT/tasks" "$SITE/survey/tasks"
  ln -s "$ROOT/analysis" "$SITE/survey/analysis"
  if [ -n "$WITHOUT" ]; then
    cp "$ROOT/benchmarks/gpu_without.py" "$SITE/sitecustomize.py"
    echo "gpu_check: leaving out the modules $WITHOUT (as on the device machine)"
  fi
  # Python puts its working folder first on sys.path: run from $SITE, so the links, not the checkout's own
  # survey/ (which has no tasks/ inside), are the package; the checkout comes second (benchmarks, tests).
  cd "$SITE" || return 2
  export PYTHONPATH="$SITE:$ROOT" PYTHONUNBUFFERED=1 GPU_CHECK_WITHOUT="$WITHOUT" PYTHONDONTWRITEBYTECODE=1
  "$PYTHON" - <<'EOF' || { echo "gpu_check: the package does not import (see above)" >&2; return 2; }
import importlib, torch, survey.tasks
print(f"gpu_check: torch {torch.__version__}, cuda available {torch.cuda.is_available()}, survey.tasks from {survey.tasks.__file__}")
for name in ("pydantic", "pywt", "ray", "duckdb", "pydicom", "nibabel", "nilearn"):
    try:
        importlib.import_module(name)
        print(f"gpu_check: module {name}: present")
    except ImportError as err:
        print(f"gpu_check: module {name}: missing ({err})")
EOF
  local small_flag="" threads="$CPU_THREADS" s
  [ "$SMALL" = 1 ] && small_flag="--small"
  if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
      || { echo "gpu_check: --device cuda but torch sees no CUDA device (use --device cpu for a dry run)" >&2; return 2; }
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi

  # 3. the steps, each with its share of the budget (and a hard stop a little later)
  s=$(share 25 150); echo "gpu_check: step 1, CUDA-marked tests (${s}s)"
  timeout $((s + 30)) "$PYTHON" -m benchmarks.gpu_tests --device "$DEVICE" --out "$OUT_DIR" --seconds "$s"
  s=$(share 40 180); echo "gpu_check: step 2, device against CPU (${s}s)"
  timeout $((s + 30)) "$PYTHON" -m benchmarks.gpu_agree --device "$DEVICE" --out "$OUT_DIR" --seconds "$s" $small_flag
  s=$(( $(left) - 25 )); [ "$s" -lt 30 ] && s=30; echo "gpu_check: step 3, throughput (${s}s)"
  timeout $((s + 30)) "$PYTHON" -m benchmarks.gpu_speed --device "$DEVICE" --out "$OUT_DIR" --seconds "$s" \
    --cpu-threads "$threads" $small_flag
  "$PYTHON" -m benchmarks.gpu_report --out "$OUT_DIR" --device "$DEVICE" $small_flag --seconds $(( $(date +%s) - START ))
  local status=$?
  echo "gpu_check: done in $(( $(date +%s) - START ))s; $OUT_DIR/gpu_check.md"
  return $status
}

main 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
