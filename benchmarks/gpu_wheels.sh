#!/usr/bin/env bash
# Download the wheels the device machine lacks (Python 3.12, manylinux x86_64 or pure Python) into wheels/,
# at the versions installed here, for the device tool's `carry` (benchmarks/gpu_check.sh installs them).
#
#   benchmarks/gpu_wheels.sh [--with-data] [--with-duckdb] [DIR]
#
# Always: pydantic and its needs (survey.spec, the engine's worker), PyWavelets (the reference solver's
# filters), typing-extensions (pydantic needs a recent one). --with-data: nibabel, nilearn (the brain
# template) and pydicom (the DICOM samples); the check itself uses ellipse phantoms and does not need them.
# --with-duckdb: duckdb (25 MB; no step of the check needs it). Ray does not fit (the check runs tasks in
# process). Prints the size of what would travel (the working tree plus DIR) against the tool's 64 MiB
# limit and exits 1 when it is over.

set -euo pipefail
cd "$(dirname "$0")/.."

DIR=wheels WITH_DATA=0 WITH_DUCKDB=0
for arg in "$@"; do
  case "$arg" in
    --with-data) WITH_DATA=1 ;;
    --with-duckdb) WITH_DUCKDB=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
    *) DIR=$arg ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

# distribution names as pip knows them; versions read from this project's environment
names=(pydantic pydantic_core annotated-types typing-inspection typing_extensions PyWavelets)
[ "$WITH_DATA" = 1 ] && names+=(nibabel nilearn pydicom)
[ "$WITH_DUCKDB" = 1 ] && names+=(duckdb)
pins=()
for name in "${names[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) \
    || { echo "gpu_wheels.sh: $name is not installed in $PY, so there is no version to pin" >&2; exit 2; }
  pins+=("$name==$version")
done

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
echo "gpu_wheels.sh: downloading ${pins[*]} into $DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${pins[@]}"

git check-ignore -q "$DIR" || echo "gpu_wheels.sh: warning: $DIR is not ignored by git; add it to .gitignore"
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
wheels=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
total=$((tree + wheels))
limit=$((64 * 1024 * 1024))
printf 'gpu_wheels.sh: working tree %.1f MiB + wheels %.1f MiB = %.1f MiB of the 64 MiB that can travel\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
ls -1 "$DIR"
if [ "$total" -gt "$limit" ]; then
  echo "gpu_wheels.sh: over the limit: leave out --with-data / --with-duckdb" >&2
  exit 1
fi
