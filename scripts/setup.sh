#!/usr/bin/env bash
# Installs every Debian 12 package vlmlab's build, tests, benchmarks and reports use.
# Idempotent: packages already present are not touched; apt-get runs only when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain and build
  g++ clang meson ninja-build pkg-config git
  # clang's libFuzzer and sanitizer runtimes and its OpenMP (the fuzz targets' build, fuzz/)
  libclang-rt-dev libomp-dev
  # core libraries
  libeigen3-dev libopenblas-dev libhdf5-dev libtomlplusplus-dev libboost-program-options-dev
  nlohmann-json3-dev libpng-dev
  # tests and benchmarks
  catch2 libbenchmark-dev
  # report figures, results checks and the PyTorch side-by-side (always Debian's /usr/bin/python3)
  python3 python3-numpy python3-h5py python3-pandas python3-matplotlib python3-torch
  # scale-out (MPI)
  openmpi-bin libopenmpi-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
