#!/usr/bin/env bash
# Runs one libFuzzer target on its seed corpus for a while (meson test's fuzz suite, scripts/test.sh):
#   fuzz/run.sh TARGET_EXE SEED_CORPUS_DIR WORK_DIR [extra libFuzzer flags]
# New inputs go to WORK_DIR/corpus (the seed corpus in the repository is only read), a crashing
# input to WORK_DIR/crash-* (libFuzzer's artifact), and the exit status is libFuzzer's: non-zero on
# a crash, a sanitizer report, a leak, an input slower than -timeout or more memory than -rss_limit_mb.
# FUZZ_SECONDS (default 15) bounds the run.
set -euo pipefail
exe=$1 seeds=$2 work=$3
shift 3
mkdir -p "$work/corpus"
exec "$exe" "$work/corpus" "$seeds" -max_total_time="${FUZZ_SECONDS:-15}" -timeout=30 -rss_limit_mb=2048 \
  -artifact_prefix="$work/" -print_final_stats=1 "$@"
