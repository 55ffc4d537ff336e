#!/usr/bin/env bash
# One experiment of the reference study (docs/study.md), from its TOML to its report:
#   scripts/study.sh NAME [vlmlab run options]
# runs experiments/study/NAME.toml into results/study/NAME.h5 (one MPI rank per core, one thread each,
# where the build has MPI; --resume continues an interrupted file) and writes its report to
# results/reference/study/NAME/, over the committed copy (`git diff` then shows what a rerun changed).
# Builds vlmlab first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/study.sh NAME [vlmlab run options]  (NAME: $(cd experiments/study && ls *.toml | sed 's/\.toml$//' | tr '\n' ' '))" >&2; exit 2; }
name=$1
shift
toml=experiments/study/$name.toml
[ -f "$toml" ] || { echo "scripts/study.sh: no $toml" >&2; exit 2; }
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release >/dev/null
ninja -C build experiments/vlmlab >/dev/null
cmd=(build/experiments/vlmlab)
ranks=$(nproc)
if [ "$ranks" -ge 2 ] && command -v mpirun >/dev/null && [[ "$(ldd build/experiments/vlmlab)" == *libmpi* ]]; then
  cmd=(mpirun --oversubscribe --allow-run-as-root -n "$ranks" build/experiments/vlmlab)
  [[ " $* " == *" --threads"* ]] || set -- --threads 1 "$@"
fi
mkdir -p results/study
status=0
"${cmd[@]}" run "$toml" --out "results/study/$name.h5" "$@" || status=$?
[ "$status" -le 1 ] && build/experiments/vlmlab report "results/study/$name.h5" --out "results/reference/study/$name"
exit "$status"
