"""`mpirun -n 2 vlmlab run` against the single-process run (issue 8): a sweep spread over ranks, data-parallel
training, and a rank killed mid-sweep then --resume.

Run by meson (tests/meson.build) with Debian's /usr/bin/python3 (h5py, numpy):
    test_mpi.py VLMLAB_BINARY MPIRUN enabled|disabled
Exits 77 (meson: skipped) when the build has MPI disabled. Otherwise prints a Catch2-style summary line
("test cases: N | P passed | F failed") that scripts/count_tests.py counts, and exits non-zero if
anything failed.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TINY, Skip, numbers, run_tests, same_numbers  # noqa: E402

VLMLAB = os.path.abspath(sys.argv[1])
MPIRUN = sys.argv[2] if len(sys.argv) > 2 else "mpirun"
MPI = len(sys.argv) > 3 and sys.argv[3] == "enabled"
TMP = tempfile.mkdtemp(prefix="vlmlab_mpi_")
RANKS = 2

# 2 families x 2 learning rates = 4 runs of a few steps each.
SWEEP = TINY

# Every family, trained data-parallel: each rank computes half of every batch of 4. fuyu rotates all of
# each head (HF's Persimmon rotates half): with partial rotary, k_layernorm.bias's components on the
# unrotated dims shift every score of a query alike, which softmax ignores, so their true gradient is 0
# and the computed one is rounding noise that AdamW normalises into real steps; one process and two ranks
# round differently, so those components part by 1e-4 after one step (everything else agrees within
# 1e-6) and the runs' grad norms by 1e-5 after three. With full rotary fuyu agrees within 4e-8, like the
# other families: the comparison then measures data parallelism, not that noise.
DATA_PARALLEL = (SWEEP.replace("lr = 2e-3\n", "lr = 2e-3\ndata_parallel = true\n")
                 .replace('family = "fuyu"\n', 'family = "fuyu"\n"text_config.rope_parameters.partial_rotary_factor" = 1.0\n')
                 .replace('[sweep]\n"train.lr" = [1e-3, 3e-3]\n', "")
                 + '\n[[variant]]\nfamily = "flamingo"\nresampler_n_latents = 4\n'
                 + '\n[[variant]]\nfamily = "qwen2vl"\nspatial_merge_size = 1\n')

# 6 longer runs (3 per rank), so that a rank can be caught in the middle of one.
KILL = SWEEP.replace("steps = 6", "steps = 150").replace('"train.lr" = [1e-3, 3e-3]', '"train.lr" = [1e-3, 2e-3, 3e-3]')


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def vlmlab(*args, timeout=600):
    return subprocess.run([VLMLAB, *args], capture_output=True, text=True, timeout=timeout)


def mpi_cmd(*args, ranks=RANKS):
    return [MPIRUN, "--oversubscribe", "--allow-run-as-root", "-n", str(ranks), VLMLAB, *args]


def mpi_vlmlab(*args, ranks=RANKS, timeout=600):
    return subprocess.run(mpi_cmd(*args, ranks=ranks), capture_output=True, text=True, timeout=timeout)


def parts_of(path):
    d, base = os.path.split(path)
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith(os.path.basename(base) + ".part"))


def single_and_ranks(text, name):
    """The experiment run by one process and by RANKS ranks: (one.h5, many.h5, mpirun's stderr)."""
    path = write(name + ".toml", text)
    one, many = os.path.join(TMP, name + "-1.h5"), os.path.join(TMP, name + "-n.h5")
    r = vlmlab("run", path, "--out", one, "--quiet")
    assert r.returncode == 0, r.stderr
    r = mpi_vlmlab("run", path, "--out", many)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not parts_of(many), parts_of(many)  # folded into the one file and removed
    return one, many, r.stderr


# ---------------------------------------------------------------------------------------------

def test_sweep_matches_single_process():
    """Runs spread over 2 ranks make the file one process makes, but for timings and rank/host."""
    one, many, err = single_and_ranks(SWEEP, "sweep")
    same_numbers(one, many)  # summary order included
    with h5py.File(many, "r") as f:
        ranks = {f["/runs/" + k].attrs["rank"] for k in f["/runs"]}
        assert ranks == set(range(RANKS)), ranks  # both ranks got runs
        for k in f["/runs"]:
            g = f["/runs/" + k]
            assert g.attrs["ranks"] == 1 and g.attrs["host"], dict(g.attrs)
    with h5py.File(one, "r") as f:
        assert {f["/runs/" + k].attrs["rank"] for k in f["/runs"]} == {0}
    # Output: the plan from the root, progress prefixed by rank.
    assert "4 run(s) to do" in err and "rank 1 on " in err and "rank 1: [run" in err, err


def test_data_parallel_matches_single_process():
    """2 ranks each computing half of every batch train the model one process trains on whole batches,
    within fp32 rounding; two such runs agree bit for bit; evaluation and costs are the same."""
    one, many, err = single_and_ranks(DATA_PARALLEL, "dp")
    assert "4 run(s) data-parallel over all 2 ranks" in err, err
    again = os.path.join(TMP, "dp-n2.h5")
    r = mpi_vlmlab("run", os.path.join(TMP, "dp.toml"), "--out", again, "--quiet")
    assert r.returncode == 0, r.stderr
    same_numbers(many, again)  # the gradient sums have a fixed order
    a, b = numbers(one), numbers(many)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    checked_train = 0
    for k in a:
        va, vb = a[k], b[k]
        if k.endswith("@ranks"):
            assert (va, vb) == (1, RANKS), (k, va, vb)
        elif "/memory:" in k or k == "summary:peak_bytes":
            pass  # each rank holds half the training batch's activations
        elif k.endswith("@train_flops_per_step") or k.endswith("@train_flops_per_sample"):
            assert abs(va - vb) <= 0.05 * va, (k, va, vb)  # the halves are padded to their own longest row
        elif k.endswith("/curve:train_flops"):  # the same, summed up to each validation point
            np.testing.assert_allclose(vb, va, rtol=0.05, err_msg=k)
        elif "/train:" in k and isinstance(va, list) and va and isinstance(va[0], float):
            np.testing.assert_allclose(vb, va, rtol=1e-5, atol=1e-7, err_msg=k)
            checked_train += 1
        else:
            assert va == vb, f"{k}: {va!r} != {vb!r}"
    assert checked_train == 4 * 3, checked_train  # loss, lr, grad_norm of each of the 4 runs


def test_data_parallel_batch_must_divide():
    """A global batch the ranks cannot share is a config error at train.batch_size, before anything runs."""
    text = DATA_PARALLEL.replace("batch_size = 4\n", "batch_size = 3\n", 1)
    path = write("dp3.toml", text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l == "batch_size = 3")
    out = os.path.join(TMP, "never.h5")
    r = mpi_vlmlab("run", path, "--out", out)
    assert r.returncode != 0 and not os.path.exists(out), (r.returncode, r.stderr)
    expect = f"{path}:{line}:"
    msg = "train.batch_size: data_parallel splits each batch over the 2 ranks of this job, but 3 does not divide by 2"
    assert expect in r.stderr and msg in r.stderr, r.stderr
    assert r.stderr.count(msg) == 1, r.stderr  # said once, by the root
    r = vlmlab("check", path, "--ranks", "2")
    assert r.returncode == 2 and r.stderr.startswith("vlmlab check: " + expect) and msg in r.stderr, r.stderr
    assert vlmlab("check", path).returncode == 0  # one process takes any batch


def rank_pid(tag, rank):
    """The pid of the vlmlab process of `rank` started with VLMLAB_TEST_TAG=tag in its environment."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"VLMLAB_TEST_TAG={tag}".encode() in env and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


def completed(path):
    """Run ids complete in a results file (or a rank's part), none if it does not exist yet."""
    if not os.path.exists(path):
        return set()
    try:
        with h5py.File(path, "r") as f:
            s = f["/summary"][()]
    except (OSError, KeyError):
        return set()
    return {rid.decode() for rid, st in zip(s["run_id"], s["status"]) if st == b"complete"}


def test_kill_a_rank_then_resume():
    """SIGKILL rank 1 mid-sweep: mpirun ends the job, every run completed by either rank is on disk (the
    root's file and rank 1's part), and --resume (2 ranks, or one process) finishes the same file."""
    path = write("kill.toml", KILL)
    full = os.path.join(TMP, "kill-full.h5")
    r = vlmlab("run", path, "--out", full, "--quiet")
    assert r.returncode == 0, r.stderr

    killed = os.path.join(TMP, "killed.h5")
    tag = uuid.uuid4().hex
    p = subprocess.Popen(mpi_cmd("run", path, "--out", killed, "--quiet"), env={**os.environ, "VLMLAB_TEST_TAG": tag},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = killed + ".part1"
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and p.poll() is None:
        victim = victim or rank_pid(tag, 1)
        if victim and completed(part):  # rank 1 finished a run and is in the next one
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert victim and completed(part), ("rank 1 finished no run before the job ended", p.communicate())
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0, (out, err)
    done_root, done_part = completed(killed), completed(part)
    done = done_root | done_part
    assert 1 <= len(done) < 6, done
    assert len(done_part) < 3, done_part  # rank 1 died inside a run
    started = {}
    for f_path, ids in ((killed, done_root), (part, done_part)):
        if not ids:
            continue  # the root may not have finished a run yet
        with h5py.File(f_path, "r") as f:  # both open and hold their completed runs
            for rid in ids:
                started[rid] = f["/runs/" + rid].attrs["started_utc"]

    # Without --resume the leftovers are not silently dropped or mixed.
    r = mpi_vlmlab("run", path, "--out", killed)
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr
    backup = os.path.join(TMP, "killed-copy.h5")
    for src in [killed] + parts_of(killed):
        if os.path.exists(src):
            shutil.copy(src, backup + src[len(killed):])

    time.sleep(1.1)  # so a re-run would carry a later started_utc
    for resume, target in ((mpi_vlmlab, killed), (vlmlab, backup)):  # 2 ranks, then one process
        r = resume("run", path, "--out", target, "--resume")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{6 - len(done)} run(s) to do" in r.stderr, r.stderr  # completed runs are not redone
        assert not parts_of(target), parts_of(target)
        same_numbers(full, target)
        with h5py.File(target, "r") as f:
            for rid, t in started.items():
                assert f["/runs/" + rid].attrs["started_utc"] == t, rid


def test_results_dir_not_shared():
    """Rank 1 sees its own private results directory (a host without the shared filesystem): its part
    reaches the root over MPI at the end, and the file is still complete."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        raise Skip("needs unshare -m (root with CAP_SYS_ADMIN) to give rank 1 a private directory")
    path = write("sweep.toml", SWEEP)
    one = os.path.join(TMP, "private-1.h5")
    r = vlmlab("run", path, "--out", one, "--quiet")
    assert r.returncode == 0, r.stderr
    res = os.path.join(TMP, "private")
    os.makedirs(res)
    wrap = write("private.sh", f"""#!/bin/sh
if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
  exec unshare -m sh -c 'mount -t tmpfs none {res} && exec "$@"' sh "$@"
fi
exec "$@"
""")
    os.chmod(wrap, 0o755)
    many = os.path.join(res, "many.h5")
    cmd = [MPIRUN, "--oversubscribe", "--allow-run-as-root", "-n", str(RANKS), wrap, VLMLAB, "run", path, "--out",
           many, "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # The results file, its lock and the models the root's runs kept (rank 1's stay on its own disk); no
    # part file, no temporary.
    assert sorted(os.listdir(res)) == ["many", "many.h5", "many.h5.lock"], os.listdir(res)
    same_numbers(one, many)
    with h5py.File(many, "r") as f:
        assert {f["/runs/" + k].attrs["rank"] for k in f["/runs"]} == {0, 1}
        for k in f["/runs"]:
            kept = os.path.isdir(os.path.join(res, "many", "models", k))
            assert kept == (f["/runs/" + k].attrs["rank"] == 0), k


TESTS = [test_sweep_matches_single_process, test_data_parallel_matches_single_process,
         test_data_parallel_batch_must_divide, test_kill_a_rank_then_resume, test_results_dir_not_shared]

if __name__ == "__main__":
    if not MPI:
        print("vlmlab was built without MPI (-Dmpi=disabled or OpenMPI not found): skipped")
        sys.exit(77)
    run_tests(TESTS, TMP)
