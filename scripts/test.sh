#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test suite twice,
# in the optimised build (build/) and in the AddressSanitizer + UBSan build (build-asan/).
# Ends with one line "N passed, N failed" counting Catch2 test cases over both builds.
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --fast     the optimised build only
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
[ "${1:-}" = "--fast" ] && fast=1

bash scripts/setup.sh

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

logs=()
run_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
  # meson's exit status is not ours: the counts below decide, and a crashed suite counts as failed.
  meson test -C "$dir" --print-errorlogs --timeout-multiplier 4 || true
  logs+=("$dir/meson-logs/testlog.json")
}

run_build build -Dbuildtype=release
if [ "$fast" -eq 0 ]; then
  run_build build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
    -Dcpp_args=-fno-sanitize-recover=all -Dbench=disabled
fi

/usr/bin/python3 scripts/count_tests.py "${logs[@]}"
