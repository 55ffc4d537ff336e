"""What test_cli.py and test_mpi.py share: the tiny experiment they run, and every number and string
of a results file keyed by object path, except what may differ between two runs of one experiment
(timings, and where a run ran), to compare two files."""
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

import h5py
import numpy as np

# A tiny experiment: 2 families x 2 sweep values x 1 seed = 4 runs of a few steps each.
TINY = """\
[experiment]
name = "tiny"
seeds = [3]
threads = 1

[task]
name = "sort_of_clevr"
image_size = 30

[train]
steps = 6
batch_size = 4
lr = 2e-3

[eval]
samples = 12
batch_size = 6
gallery = 4

[measure]
resolutions = [30, 45]
warmup = 1
repeats = 2
decode_tokens = 2

[model.text]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2

[model.vision]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
patch_size = 15

[[variant]]
family = "llava"

[[variant]]
family = "fuyu"

[sweep]
"train.lr" = [1e-3, 3e-3]
"""

# Columns that hold timings (or wall-clock facts) and may differ between two identical runs.
TIMING_COLUMNS = {"step_ms", "median_ms", "p10_ms", "p90_ms", "prefill_ms", "decode_ms_per_token",
                  "train_step_ms", "peak_rss_bytes", "wall_s"}
TIMING_ATTRS = {"created_utc", "started_utc", "finished_utc", "wall_s"}
# Where a run ran (MPI): the rank and host that wrote it, the folder its model is kept in (named after
# the results file), and the checkpoint step this process continued from.
PLACE_ATTRS = {"rank", "host", "cpu", "cores", "git_commit", "model_dir", "resumed_from_step"}


def numbers(path, skip_attrs=TIMING_ATTRS | PLACE_ATTRS, skip_columns=TIMING_COLUMNS):
    out = {}
    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            if k not in skip_attrs:
                out["/@" + k] = v
        def visit(name, obj):
            for k, v in obj.attrs.items():
                if k not in skip_attrs:
                    out[name + "@" + k] = v
            if isinstance(obj, h5py.Dataset):
                if "latency_samples" in name:
                    return
                data = obj[()]
                if data.dtype.names:
                    for col in data.dtype.names:
                        if col not in skip_columns:
                            out[name + ":" + col] = data[col].tolist()
                else:
                    out[name] = data.tolist()
        f.visititems(visit)
    return out


def same_numbers(a, b):
    """Every number equal (NaN equals NaN), bit for bit."""
    na, nb = numbers(a), numbers(b)
    assert na.keys() == nb.keys(), sorted(set(na) ^ set(nb))
    for k in na:
        va, vb = na[k], nb[k]
        if isinstance(va, float) and isinstance(vb, float) and np.isnan(va) and np.isnan(vb):
            continue
        assert va == vb, f"{k}: {va!r} != {vb!r}"


def run_until_paused(exe, args, point, tmp):
    """Starts `EXE ARGS` with the test hook VLMLAB_TEST_PAUSE=point (lib/core/test_hook.h): the process
    stops at that moment and says so in a file (under `tmp`); returns the process, paused there. No
    timing involved: the kill that follows lands at the same point on a loaded machine as on a quiet one."""
    marker = os.path.join(tmp, "paused-%d" % time.monotonic_ns())
    env = dict(os.environ, VLMLAB_TEST_PAUSE=point, VLMLAB_TEST_PAUSE_FILE=marker)
    p = subprocess.Popen([exe, *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not os.path.exists(marker) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert p.poll() is None and os.path.exists(marker), f"vlmlab never reached the pause point {point}"
    with open(marker) as f:
        assert f.read().strip() == point
    return p


def kill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


class Skip(Exception):
    """Raised by a test that cannot run here (a missing privilege): reported, not counted."""


def run_tests(tests, tmp=None, only=()):
    """Runs each test (or those named in `only`), prints PASS/FAIL (SKIP for a test raising Skip, not
    counted) and the Catch2-style summary line scripts/count_tests.py counts, removes `tmp` (a
    folder, when given), and exits non-zero if anything failed."""
    passed = failed = 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        try:
            t()
            passed += 1
            print(f"PASS {t.__name__}")
        except Skip as why:
            print(f"SKIP {t.__name__}: {why}")
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}")
            traceback.print_exc(file=sys.stdout)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test cases: {passed + failed} | {passed} passed | {failed} failed")
    sys.exit(1 if failed else 0)
