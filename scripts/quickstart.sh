#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the quickstart experiment
# (experiments/quickstart.toml: the four families on Sort-of-CLEVR), writing results/quickstart.h5
# and printing a summary table, then writes its report (results/quickstart/report.md and figures).
# Extra arguments go to `vlmlab run` (e.g. --threads 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release >/dev/null
# Only the vlmlab executable and what it links (not the tests, benchmarks or fuzz targets:
# scripts/test.sh builds those), so a fresh clone reaches its results in the README's time.
ninja -C build experiments/vlmlab
# A failed run is recorded in the file with its error (exit 1); the report lists it, so write the
# report either way and exit with the run's status. An invalid config (exit 2) writes no file.
status=0
# With MPI (the build links it and mpirun is there) the four runs go to one rank per core, up to four,
# one thread each: independent runs use small models' cores better than one run on two threads.
cmd=(build/experiments/vlmlab)
ranks=$(( $(nproc) < 4 ? $(nproc) : 4 ))
# (ldd's output matched without a pipe: under pipefail, `ldd | grep -q` fails when grep exits before
# ldd has written everything, which a loaded machine makes likely, and the runs then went unspread.)
if [ "$ranks" -ge 2 ] && command -v mpirun >/dev/null && [[ "$(ldd build/experiments/vlmlab)" == *libmpi* ]]; then
  cmd=(mpirun --oversubscribe --allow-run-as-root -n "$ranks" build/experiments/vlmlab)
  [[ " $* " == *" --threads"* ]] || set -- --threads 1 "$@"
fi
"${cmd[@]}" run experiments/quickstart.toml --out results/quickstart.h5 --overwrite "$@" || status=$?
[ "$status" -le 1 ] && build/experiments/vlmlab report results/quickstart.h5
exit "$status"
