#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job.
# For now the main job is `vlmlab demo` (the core end to end); the quickstart experiment replaces it
# once the experiment runner lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release >/dev/null
ninja -C build
exec build/experiments/vlmlab demo --threads 2 "$@"
