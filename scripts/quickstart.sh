#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the quickstart experiment
# (experiments/quickstart.toml: the four families on Sort-of-CLEVR), writing results/quickstart.h5
# and printing a summary table. Extra arguments go to `vlmlab run` (e.g. --threads 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release >/dev/null
ninja -C build
exec build/experiments/vlmlab run experiments/quickstart.toml --out results/quickstart.h5 --overwrite "$@"
