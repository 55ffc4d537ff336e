#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test suite twice,
# in the optimised build (build/) and in the AddressSanitizer + UBSan build (build-asan/), then a
# short run of each libFuzzer target (build-fuzz/, clang). Ends with one line "N passed, N failed"
# counting Catch2 test cases over both builds and one case per fuzz target.
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --fast     the optimised build only (no sanitizer build, no fuzzing)
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

# The libFuzzer targets (fuzz/, clang's; built in build-fuzz/ with ASan + UBSan): each parser fuzzed
# for FUZZ_SECONDS (default 15) from its seed corpus, one test case per target in the count below (a
# target that finds anything fails). Only the targets and what they link are built.
if [ "$fast" -eq 0 ]; then
  if [ ! -f build-fuzz/build.ninja ]; then
    CXX=clang++ meson setup build-fuzz -Dfuzz=enabled -Dbuildtype=plain -Dcpp_args='-O0 -gline-tables-only' \
      -Dtests=disabled -Dbench=disabled -Dmpi=disabled >/dev/null
  fi
  ninja -C build-fuzz fuzz/fuzz_safetensors fuzz/fuzz_config_json fuzz/fuzz_experiment_toml
  meson test -C build-fuzz --suite fuzz --no-rebuild --print-errorlogs || true
  logs+=("build-fuzz/meson-logs/testlog.json")
fi

/usr/bin/python3 scripts/count_tests.py "${logs[@]}"
