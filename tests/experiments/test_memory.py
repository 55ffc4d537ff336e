"""The memory budget from the command line (issue 26): `--max-memory` on run, check, parity, eval and
bench-model, and the sizes a TOML asks for (weights, training's gradients and AdamW moments, activations,
measurement resolutions) refused with exit 2 naming the key before anything is allocated. vlmlab runs
under a 4 GB address-space limit (RLIMIT_AS) unless it is built with AddressSanitizer, whose shadow
memory needs more: there --max-memory 2G stands in for it.

Usage: test_memory.py VLMLAB [ASAN]. Prints a Catch2-style summary line that scripts/count_tests.py
counts, and exits non-zero if anything failed.
"""
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import TINY, run_tests  # noqa: E402

VLMLAB = sys.argv[1]
ASAN = len(sys.argv) > 2 and sys.argv[2] == "address"
LIMIT = 4_000_000_000


def vlmlab(*args, limit=True, timeout=60):
    """Runs vlmlab; returns (exit code, stderr + stdout, seconds)."""
    extra = []
    preexec = None
    if limit and ASAN:
        if not any(a.startswith("--max-memory") for a in args):
            extra = ["--max-memory", "2G"]
    elif limit:
        def preexec():
            resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    t0 = time.monotonic()
    p = subprocess.run([VLMLAB, *args, *extra], capture_output=True, text=True, timeout=timeout,
                       preexec_fn=preexec, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return p.returncode, p.stderr + p.stdout, time.monotonic() - t0


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def tiny(tmp, *, drop=(), add=""):
    """TINY with one variant (llava), no sweep, lines in `drop` removed and `add` appended."""
    text = TINY.split("[[variant]]")[0] + '[[variant]]\nfamily = "llava"\n'
    lines = [l for l in text.splitlines() if not any(l.startswith(d) for d in drop)]
    return write(tmp, "exp.toml", "\n".join(lines) + "\n" + add)


def set_key(text, table, key, value):
    """`key = value` in [table], replacing the key if it is there."""
    out, in_table, done = [], False, False
    for line in text.splitlines():
        if line.startswith("["):
            if in_table and not done:
                out.append(f"{key} = {value}")
                done = True
            in_table = line.strip() == f"[{table}]"
        if in_table and re.match(rf"{re.escape(key)}\s*=", line):
            line, done = f"{key} = {value}", True
        out.append(line)
    if not done:
        out += ([] if in_table else [f"[{table}]"]) + [f"{key} = {value}"]
    return "\n".join(out) + "\n"


def tiny_with(tmp, *settings):
    text = open(tiny(tmp)).read()
    for table, key, value in settings:
        text = set_key(text, table, key, value)
    return write(tmp, "exp.toml", text)


def expect_refused(rc, out, secs, key):
    assert rc == 2, f"exit {rc}, expected 2:\n{out[-3000:]}"
    assert key in out, f"the message does not name {key}:\n{out[-3000:]}"
    assert "memory budget" in out, out[-3000:]
    assert secs < 30, f"took {secs:.1f} s"


def test_max_memory_values_refused():
    with tempfile.TemporaryDirectory() as tmp:
        exp = tiny(tmp)
        commands = [["run", exp, "--out", os.path.join(tmp, "r.h5")], ["check", exp], ["parity", tmp],
                    ["eval", tmp], ["bench-model"]]
        for cmd in commands:
            for bad in ["0", "-1", "abc", "4X", "1.2.3G", "0.1", "99999999999T"]:
                rc, out, _ = vlmlab(*cmd, "--max-memory=" + bad, limit=False)
                assert rc == 2, f"{cmd[0]} --max-memory {bad!r}: exit {rc}\n{out[-2000:]}"
                assert re.search(r"--max-memory \"[^\"]*\": (not a size|unknown suffix|must be at least|too large)",
                                 out), f"{cmd[0]} --max-memory {bad!r}:\n{out[-2000:]}"
        assert not os.path.exists(os.path.join(tmp, "r.h5"))


def test_max_memory_accepts_and_refuses():
    with tempfile.TemporaryDirectory() as tmp:
        exp = tiny(tmp)
        for ok in ["4G", "512M", "1.5g", "2GiB", "3000000000"]:
            rc, out, _ = vlmlab("check", exp, "--max-memory", ok)
            assert rc == 0, f"--max-memory {ok}: exit {rc}\n{out[-2000:]}"
        # The same experiment refused at 1M: its model's weights fit, training them does not.
        rc, out, secs = vlmlab("check", exp, "--max-memory", "1M", limit=False)
        expect_refused(rc, out, secs, "train.batch_size")
        rc, out, secs = vlmlab("run", exp, "--out", os.path.join(tmp, "r.h5"), "--max-memory", "1M", limit=False)
        expect_refused(rc, out, secs, "train.batch_size")
        assert not os.path.exists(os.path.join(tmp, "r.h5")), "a refused run wrote its results file"


def params_of(exp):
    rc, out, _ = vlmlab("check", exp)
    assert rc == 0, out
    row = next(l for l in out.splitlines() if "llava" in l and "-s3" in l)
    return int(row.split()[5].replace(",", ""))  # run family vision connector lm total


def test_training_counts_gradients_and_moments():
    """Weights that fit 3.5 times over but not four times (weights, gradients, two AdamW moments) are
    refused for training, and accepted when the experiment does not train (and evaluates one item at
    a time, so its activations fit beside them)."""
    with tempfile.TemporaryDirectory() as tmp:
        exp = tiny(tmp)
        n = params_of(exp)
        budget = str(int(3.5 * 4 * n))
        rc, out, secs = vlmlab("check", exp, "--max-memory", budget, limit=False)
        assert rc == 2, out
        assert "for training: weights, gradients and AdamW's two moments" in out, out
        no_train = tiny_with(tmp, ("train", "steps", "0"), ("measure", "enabled", "false"), ("eval", "batch_size", "1"))
        rc, out, _ = vlmlab("check", no_train, "--max-memory", budget, limit=False)
        assert rc == 0, out


def test_issue_sizes_refused_under_4gb():
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ([("model.text", "num_hidden_layers", "1024"), ("model.text", "intermediate_size", "1048576")],
             "intermediate_size"),
            ([("model.vision", "image_size", "16384")], "model.vision.image_size"),
            ([("measure", "resolutions", "[16384]")], "measure.resolutions"),
            ([("train", "batch_size", "65536")], "train.batch_size"),
            ([("eval", "batch_size", "65536")], "eval.batch_size"),
        ]
        for settings, key in cases:
            exp = tiny_with(tmp, *settings)
            for cmd in (["check", exp], ["run", exp, "--out", os.path.join(tmp, "r.h5")]):
                rc, out, secs = vlmlab(*cmd)
                expect_refused(rc, out, secs, key)
            assert not os.path.exists(os.path.join(tmp, "r.h5"))


TESTS = [test_max_memory_values_refused, test_max_memory_accepts_and_refuses,
         test_training_counts_gradients_and_moments, test_issue_sizes_refused_under_4gb]

if __name__ == "__main__":
    run_tests(TESTS)
