#!/usr/bin/env bash
# Two training runs side by side against one alone (issue 24): the throughput of two single-thread
# processes at once (what `mpirun -n 2 vlmlab run` does with one thread per rank) over one process
# alone, from `vlmlab bench-model`'s training-step times (medians), ROUNDS interleaved rounds (alone,
# then the pair). Run it on a quiet machine: anything else running takes a core from the pair.
#   bench/side_by_side.sh [VLMLAB] [FAMILY] [SIZE] [ROUNDS]
set -euo pipefail
exe=${1:-build/experiments/vlmlab}
family=${2:-llava}
size=${3:-large}
rounds=${4:-5}
args=(bench-model --family "$family" --size "$size" --threads 1 --time train --repeats 20)
median() { /usr/bin/python3 -c "import json,statistics,sys; print('%.2f' % statistics.median(json.loads(sys.stdin.read().strip().splitlines()[-1])['train']['ms']))"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
alone=() pair=()
for r in $(seq "$rounds"); do
  a=$("$exe" "${args[@]}" | median)
  "$exe" "${args[@]}" > "$tmp/p1" &
  p1=$!
  "$exe" "${args[@]}" > "$tmp/p2" &
  p2=$!
  wait "$p1" "$p2"
  b1=$(median < "$tmp/p1")
  b2=$(median < "$tmp/p2")
  echo "round $r: alone $a ms/step; side by side $b1 and $b2 ms/step"
  alone+=("$a") pair+=("$b1" "$b2")
done
/usr/bin/python3 - "${alone[*]}" "${pair[*]}" <<'PY'
import statistics, sys
alone = [float(x) for x in sys.argv[1].split()]
pair = [float(x) for x in sys.argv[2].split()]
a, p = statistics.median(alone), statistics.median(pair)
print(f"median step: alone {a:.2f} ms, side by side {p:.2f} ms (each {p / a:.2f}x slower)")
print(f"throughput of two side by side over one alone: {2 * a / p:.2f}x (target >= 1.8x)")
PY
