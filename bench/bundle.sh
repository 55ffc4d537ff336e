#!/usr/bin/env bash
# A vlmlab build as one folder that runs on another x86-64 Linux machine without installing anything
# (the GPU host of docs/performance.md, which has no Eigen, HDF5, OpenBLAS, toml++ or Boost): the
# executables, every shared library they load except the C library's own (libc, libm, libpthread,
# libdl, librt, libresolv, the loader), and for each executable a wrapper of the same name that
# sets LD_LIBRARY_PATH to the folder's lib/ for it alone (a Python process beside it, such as
# bench/torch_gpu.py's torch, keeps its own libraries). The target's glibc must be at least the build
# machine's (Debian 12: 2.36); the wrappers check that before running anything. Then the folder is
# packed into DIR.tar.gz (the copies are large; packed they travel in a third of the space).
#   bench/bundle.sh BUILD_DIR OUT_DIR [executable paths inside BUILD_DIR...]
#   (default: experiments/vlmlab bench/bench_families bench/bench_ops, those that exist)
set -euo pipefail
build=${1:?build dir}
out=${2:?output dir}
shift 2
exes=("$@")
[ ${#exes[@]} -gt 0 ] || exes=(experiments/vlmlab bench/bench_families bench/bench_ops)
rm -rf "$out" "$out.tar.gz"
mkdir -p "$out/lib" "$out/bin"
glibc=$(ldd --version | head -1 | grep -o '[0-9]*\.[0-9]*$')
for e in "${exes[@]}"; do
  [ -x "$build/$e" ] || continue
  name=$(basename "$e")
  cp "$build/$e" "$out/bin/$name"
  ldd "$build/$e" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case $(basename "$lib") in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
      *) cp -L -n "$lib" "$out/lib/" ;;
    esac
  done
  cat > "$out/$name" <<WRAP
#!/bin/sh
# $name from $(cd "$build" && pwd) (commit $(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo ?)), built against glibc $glibc.
here=\$(dirname "\$(readlink -f "\$0")")
have=\$(ldd --version 2>/dev/null | head -1 | grep -o '[0-9]*\.[0-9]*\$')
if [ -n "\$have" ] && [ "\$(printf '%s\n%s\n' "$glibc" "\$have" | sort -V | head -1)" != "$glibc" ]; then
  echo "$name: this machine's glibc \$have is older than the build's $glibc" >&2; exit 127
fi
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/bin/$name" "\$@"
WRAP
  chmod +x "$out/$name"
done
tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
du -sh "$out" "$out.tar.gz"
