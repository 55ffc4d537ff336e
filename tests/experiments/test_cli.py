"""End-to-end tests of `vlmlab run / check / list` and the results file (HDF5 schema 1).

Run by meson (tests/meson.build) with Debian's /usr/bin/python3 (h5py, pandas):
    test_cli.py VLMLAB_BINARY
Prints a Catch2-style summary line ("test cases: N | P passed | F failed") that
scripts/count_tests.py counts, and exits non-zero if anything failed.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import TINY, kill, numbers, run_tests, same_numbers  # noqa: E402

VLMLAB = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="vlmlab_cli_")



def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def vlmlab(*args, timeout=600):
    return subprocess.run([VLMLAB, *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------

def test_config_errors():
    """Every kind of config error stops with file:line:col: key.path: expected..., exit 2."""
    # (old, new, the line the error must point at (a snippet of it), expected text after "line:col: ")
    cases = [
        ("steps = 6", "steps = 6\nstepz = 3", "stepz = 3", "train.stepz: unknown key; expected one of:"),
        ("steps = 6", 'steps = "six"', 'steps = "six"', "train.steps: expected an integer in [0, "),
        ("lr = 2e-3", "lr = -1.0", "lr = -1.0", "train.lr: expected a number in [0, 10], got -1"),
        ("image_size = 30", "image_size = 2", "image_size = 2", "task.image_size: expected an integer in ["),
        ('name = "sort_of_clevr"', 'name = "sort_of_clever"', "sort_of_clever", 'task.name: expected one of "sort_of_clevr"'),
        ('family = "fuyu"', 'family = "fuyuu"', "fuyuu", 'variant[1].family: expected one of "llava"'),
        ("num_attention_heads = 2\n\n[model.vision]", "num_attention_heads = 3\n\n[model.vision]",
         "num_attention_heads = 3", "model.text.num_attention_heads: must divide hidden_size (32)"),
        ("patch_size = 15", "patch_size = 15\nimage_size = 10", "image_size = 10",
         "model.vision.image_size: the image (10 px) is smaller than a patch (15 px)"),
        ('family = "llava"', 'family = "llava"\nprojector_hiden_act = "relu"', "projector_hiden_act",
         'variant[0].projector_hiden_act: unknown key "projector_hiden_act"'),
        ('family = "llava"', 'family = "llava"\nprojector_hidden_act = 7', "projector_hidden_act = 7",
         'variant[0].projector_hidden_act: expected a value like "gelu"'),
        ('family = "llava"', 'family = "llava"\nprojector_hidden_act = "swish2"', "swish2",
         'variant[0] (llava, train.lr=0.001): llava config: projector_hidden_act: unknown activation "swish2"'),
        ("[experiment]", "[experimnt]", "[experimnt]", "experimnt: unknown table"),
        ("seeds = [3]", "seeds = [3, 3]", "seeds = [3, 3]", "experiment.seeds: lists a seed twice"),
        ('"train.lr" = [1e-3, 3e-3]', '"train.lr" = [1e-3, 30.0]', '"train.lr"',
         "sweep point train.lr=30: "),
        ("steps = 6", "steps = = 6", "steps = = 6", "(syntax)"),
        ('name = "tiny"', 'name = "ti/ny"', 'name = "ti/ny"', "experiment.name: use letters, digits"),
        # [[train.phase]]: a curriculum's steps, its task overrides (typed by the task), the combination
        ("[eval]", "[[train.phase]]\nsteps = 4\n[[train.phase]]\nsteps = 3\n\n[eval]", "steps = 3",
         "train.phase[1].steps: the phases' steps add up to 7, more than train.steps (6)"),
        ("[eval]", "[[train.phase]]\nsteps = 2\ntask = { num_object = 2 }\n\n[eval]", "num_object = 2",
         "train.phase[0].task.num_object: unknown key; expected one of:"),
        ("[eval]", "[[train.phase]]\nsteps = 2\ntask = { questions = \"left\" }\n\n[eval]", "questions",
         'train.phase[0].task: sort_of_clevr: questions: unknown subtype "left"'),
        ("[eval]", "[[train.phase]]\ntask = { num_objects = 2 }\n\n[eval]", "[[train.phase]]",
         "train.phase[0].steps: is required"),
        # init_std: a table of "glob" = std; each glob must name parameters of the variant's family
        ('family = "llava"', 'family = "llava"\ninit_std = 0.5', "init_std = 0.5",
         'variant[0].init_std: expected a table of "glob" = std, got a float'),
        ('family = "llava"', 'family = "llava"\ninit_std = { "*position_embedding*" = "big" }', "init_std",
         "variant[0].init_std.*position_embedding*: expected a number, got a string"),
        ('family = "llava"', 'family = "llava"\ninit_std = { "*position_embedding*" = -1.0 }', "init_std",
         "variant[0].init_std.*position_embedding*: expected a standard deviation in [0, 100]"),
        ('family = "llava"', 'family = "llava"\ninit_std = { "*perceiver*" = 1.0 }', "init_std",
         'init_std: "*perceiver*" matches no parameter of llava'),
    ]
    cases = [(TINY.replace(old, new), locate, expect) for old, new, locate, expect in cases]
    for text, locate, expect in cases:
        line = next(i for i, l in enumerate(text.splitlines(), 1) if locate in l)
        path = write("bad.toml", text)
        r = vlmlab("check", path)
        assert r.returncode == 2, (expect, r.returncode, r.stderr)
        prefix = f"vlmlab check: {path}:{line}:"
        assert r.stderr.startswith(prefix), f"expected {prefix!r} at the start of: {r.stderr}"
        col_and_rest = r.stderr[len(prefix):]
        assert col_and_rest.split(":", 1)[0].isdigit(), r.stderr
        assert expect in r.stderr, f"expected {expect!r} in: {r.stderr}"
        r = vlmlab("run", path, "--out", os.path.join(TMP, "never.h5"))
        assert r.returncode == 2 and expect in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(TMP, "never.h5"))
    r = vlmlab("check", os.path.join(TMP, "missing.toml"))
    assert r.returncode == 2 and "cannot open" in r.stderr, r.stderr


def test_check_and_list():
    path = write("tiny.toml", TINY)
    r = vlmlab("check", path)
    assert r.returncode == 0, r.stderr
    for run in ["llava-lr=0.001-s3", "llava-lr=0.003-s3", "fuyu-lr=0.001-s3", "fuyu-lr=0.003-s3"]:
        assert run in r.stdout, r.stdout
    assert "4 run(s)" in r.stdout
    # The committed experiments are valid.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for exp in sorted(os.listdir(os.path.join(root, "experiments"))):
        if exp.endswith(".toml"):
            r = vlmlab("check", os.path.join(root, "experiments", exp))
            assert r.returncode == 0, (exp, r.stderr)
    # So are the reference study's, except that one taking weights from another study experiment's
    # kept models says which run to make first (from the repository root, as scripts/study.sh runs them).
    for exp in sorted(os.listdir(os.path.join(root, "experiments", "study"))):
        if exp.endswith(".toml"):
            r = subprocess.run([VLMLAB, "check", os.path.join("experiments", "study", exp)], cwd=root,
                               capture_output=True, text=True)
            needs = re.search(r'no model kept for run "[^"]+" of (results/study/\w+\.h5)', r.stderr)
            assert r.returncode == 0 or (r.returncode == 2 and needs and not os.path.exists(
                os.path.join(root, needs.group(1)))), (exp, r.stderr)
    # The quickstart is the reference experiment's seed 0: the same task, training, sizes and
    # variants (so its runs train as the reference's seed-0 runs), only fewer seeds and threads.
    with open(os.path.join(root, "experiments", "quickstart.toml"), "rb") as fq, \
            open(os.path.join(root, "experiments", "sort_of_clevr.toml"), "rb") as fr:
        quick, ref = tomllib.load(fq), tomllib.load(fr)
    for table in ("task", "train", "model", "variant"):
        assert quick[table] == ref[table], (table, quick[table], ref[table])
    assert quick["experiment"]["seeds"] == [0] and 0 in ref["experiment"]["seeds"]
    # --params lists each run's parameters by HF name (what init_std globs match), shape and component.
    r = vlmlab("check", path, "--params")
    assert r.returncode == 0, r.stderr
    assert re.search(r"vision_tower\.embeddings\.position_embedding\.weight +\[\d+, 32\] +vision", r.stdout), r.stdout
    assert re.search(r"vision_embed_tokens\.weight +\[32, \d+\] +connector", r.stdout), r.stdout
    r = vlmlab("list")
    assert r.returncode == 0
    for word in ["llava", "flamingo", "fuyu", "qwen2vl", "sort_of_clevr", "counting", "ocr", "multi_image"]:
        assert word in r.stdout, word
    for cmd in ["run", "check", "list"]:
        r = vlmlab(cmd, "--help")
        assert r.returncode == 0 and "vlmlab " + cmd in r.stdout, r.stdout


def test_results_schema_and_pandas():
    path = write("tiny.toml", TINY)
    out = os.path.join(TMP, "a.h5")
    r = vlmlab("run", path, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        for a in ["schema_version", "vlmlab_version", "git_commit", "created_utc", "cpu", "cores", "threads",
                  "blas", "compiler", "experiment_name", "experiment_toml"]:
            assert a in f.attrs, a
        assert f.attrs["schema_version"] == 1
        assert f.attrs["experiment_toml"] == TINY
        assert f.attrs["threads"] == 1
        summary = pd.DataFrame(f["/summary"][()])
        assert list(summary.columns) == ["run_id", "family", "variant", "seed", "status", "accuracy", "params",
                                         "visual_tokens", "prefill_ms", "decode_ms_per_token", "train_step_ms",
                                         "peak_bytes", "metric", "score", "score_baseline"], list(summary.columns)
        assert len(summary) == 4
        ids = [x.decode() for x in summary["run_id"]]
        assert sorted(ids) == sorted(f["/runs"].keys())
        assert (summary["status"] == b"complete").all()
        tables = {
            "params": ["component", "count"],
            "train": ["step", "stage", "loss", "lr", "grad_norm", "step_ms"],
            "stages": ["stage", "name", "task", "status", "reason", "first_step", "steps", "train", "freeze",
                       "lr_scale", "init_from", "trained_params", "frozen_params"],
            "eval": ["subtype", "n", "correct", "accuracy", "chance", "majority"],
            "latency": ["phase", "resolution", "median_ms", "p10_ms", "p90_ms", "repeats"],
            "memory": ["phase", "params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                       "kv_cache_bytes", "peak_bytes", "peak_rss_bytes"],
            "cost": ["resolution", "visual_tokens", "lm_tokens", "prefill_flops", "decode_flops_per_token"],
            "samples": ["question", "answer", "prediction", "correct", "index"],
            "metrics": ["subtype", "metric", "n", "value", "baseline", "baseline_name", "lower_is_better"],
        }
        for rid in ids:
            g = f["/runs/" + rid]
            for a in ["family", "variant", "seed", "status", "error", "resolved_config", "started_utc",
                      "finished_utc", "wall_s", "threads", "train_flops_per_step", "train_flops_per_sample"]:
                assert a in g.attrs, (rid, a)
            assert "[[variant]]" in g.attrs["resolved_config"]
            for name, cols in tables.items():
                df = pd.DataFrame(g[name][()])
                assert list(df.columns) == cols, (rid, name, list(df.columns))
            train = pd.DataFrame(g["train"][()])
            assert len(train) == 6 and train["step"].tolist() == list(range(6))
            ev = pd.DataFrame(g["eval"][()])
            assert ev["subtype"].iloc[-1] == b"all" and ev["n"].iloc[-1] == 12
            assert ev["correct"].iloc[-1] == ev["correct"].iloc[:-1].sum()
            params = pd.DataFrame(g["params"][()]).set_index("component")["count"]
            assert params[b"total"] == params[b"vision"] + params[b"connector"] + params[b"lm"]
            row = summary[summary["run_id"] == rid.encode()].iloc[0]
            assert row["params"] == params[b"total"]
            assert abs(row["accuracy"] - ev["accuracy"].iloc[-1]) < 1e-12
            lat = pd.DataFrame(g["latency"][()])
            phases = set(x.decode() for x in lat["phase"])
            assert {"preprocess", "prefill", "lm_prefill", "connector", "decode", "train_step"} <= phases, phases
            assert set(lat[lat["phase"] == b"prefill"]["resolution"]) == {30, 45}
            for _, l in lat.iterrows():
                samples = g["latency_samples/%s@%d" % (l["phase"].decode(), l["resolution"])][()]
                assert len(samples) == l["repeats"]
                assert abs(np.median(samples) - l["median_ms"]) < 1e-9
            cost = pd.DataFrame(g["cost"][()])
            assert cost["resolution"].tolist() == [30, 45]
            if g.attrs["family"] == "fuyu":  # native resolution: more patches at 45 px
                assert cost["visual_tokens"].tolist() == [4, 9]
            else:  # llava resizes to its tower's 30 px
                assert cost["visual_tokens"].tolist() == [4, 4]
            assert len(pd.DataFrame(g["samples"][()])) == 4


def test_reproducible():
    path = write("tiny.toml", TINY)
    a, b = os.path.join(TMP, "r1.h5"), os.path.join(TMP, "r2.h5")
    for out in (a, b):
        r = vlmlab("run", path, "--out", out, "--quiet", "--only", "llava")
        assert r.returncode == 0, r.stderr
    same_numbers(a, b)
    # An existing file is neither overwritten nor mixed without being asked.
    r = vlmlab("run", path, "--out", a, "--quiet")
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr


def run_until_paused(args, point):
    """common.run_until_paused on this file's vlmlab and temporary folder."""
    return common.run_until_paused(VLMLAB, args, point, TMP)


def test_sigkill_then_resume():
    path = write("tiny.toml", TINY)
    full = os.path.join(TMP, "full.h5")
    r = vlmlab("run", path, "--out", full, "--quiet")
    assert r.returncode == 0, r.stderr
    killed = os.path.join(TMP, "killed.h5")
    # Killed right after its first run is durable in the file.
    kill(run_until_paused(["run", path, "--out", killed, "--quiet"], "run-recorded:1"))
    with h5py.File(killed, "r") as f:  # opens, and holds every completed run
        n = len(f["/summary"])
        assert n == 1, n
        before = {}
        for rid in f["/summary"]["run_id"]:
            assert "train" in f["/runs/" + rid.decode()]
            before[rid.decode()] = f["/runs/" + rid.decode()].attrs["started_utc"]
        created = f.attrs["created_utc"]
    time.sleep(1.1)  # so a re-run would carry a later started_utc
    r = vlmlab("run", path, "--out", killed, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{4 - n} run(s) to do" in r.stderr, r.stderr  # the completed runs are not run again
    with h5py.File(killed, "r") as f:
        for rid, started in before.items():
            assert f["/runs/" + rid].attrs["started_utc"] == started, rid
        assert f.attrs["created_utc"] == created  # the file's creation time survives --resume
    with h5py.File(killed, "r") as f, h5py.File(full, "r") as g:
        assert sorted(f["/runs"].keys()) == sorted(g["/runs"].keys())
        assert len(f["/summary"]) == 4
    # Same numbers as the uninterrupted run, run by run (summary order may differ).
    nk, nf = numbers(killed), numbers(full)
    for k in nf:
        if k.startswith("summary:"):
            continue
        assert nk[k] == nf[k], k
    # Resuming a finished file does nothing and keeps it byte for byte.
    with open(killed, "rb") as fh:
        content = fh.read()
    r = vlmlab("run", path, "--out", killed, "--resume")
    assert r.returncode == 0 and "0 run(s) to do" in r.stderr, r.stderr
    with open(killed, "rb") as fh:
        assert fh.read() == content
    # Resuming with a changed config is refused.
    changed = write("changed.toml", TINY.replace("steps = 6", "steps = 7"))
    r = vlmlab("run", changed, "--out", killed, "--resume")
    assert r.returncode == 2 and "different version" in r.stderr, r.stderr


# TINY with longer training, checkpoints every 4 steps and a validation curve every 4.
LONG = (TINY.replace("steps = 6", "steps = 12\ncheckpoint_every = 4\ncheckpoint_keep = 1")
        .replace("gallery = 4", "gallery = 4\nval_samples = 6\nevery = 4")
        .replace('"train.lr" = [1e-3, 3e-3]', '"train.lr" = [1e-3]'))


def test_kill_mid_training_then_resume():
    """SIGKILL in the middle of a run's training, and in the middle of a checkpoint write; --resume
    continues from the last whole checkpoint and ends with the uninterrupted run's numbers."""
    path = write("long.toml", LONG)
    full = os.path.join(TMP, "long_full.h5")
    r = vlmlab("run", path, "--out", full, "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(full, "r") as f:
        for rid in f["/runs"]:
            curve = pd.DataFrame(f["/runs/" + rid + "/curve"][()])
            assert curve["step"].tolist() == [0, 4, 8, 12], curve  # before training, every 4, after the last
            assert curve["samples"].tolist() == [0, 16, 32, 48]
            assert (np.diff(curve["train_flops"]) > 0).all()
            assert f["/runs/" + rid + "/curve"].attrs["split"] == b"validation" or \
                f["/runs/" + rid + "/curve"].attrs["split"] == "validation"
            assert f["/runs/" + rid].attrs["resumed_from_step"] == 0
    ckpt_dir = os.path.join(TMP, "long_full", "checkpoints")
    assert not os.path.exists(ckpt_dir) or not any(os.scandir(ckpt_dir)), "a completed run's checkpoints are removed"

    for point, resumed_at in [("after-step:7", 4), ("checkpoint-write:8", 4)]:
        out = os.path.join(TMP, "long_%s.h5" % point.replace(":", "_"))
        kill(run_until_paused(["run", path, "--out", out, "--quiet"], point))
        assert not os.path.exists(out)  # killed inside the first run: nothing recorded yet
        run_dir = os.path.join(TMP, os.path.splitext(os.path.basename(out))[0], "checkpoints", "llava-lr=0.001-s3")
        names = sorted(os.listdir(run_dir))
        assert "step-000000004.ckpt" in names, names
        if point.startswith("checkpoint-write"):  # the half-written one is a temporary, never a checkpoint
            assert any(n.endswith(".tmp") for n in names) and "step-000000008.ckpt" not in names, names
        # Without --resume the interrupted run is neither lost nor silently restarted.
        r = vlmlab("run", path, "--out", out)
        assert r.returncode == 2 and "--resume" in r.stderr and "checkpoints" in r.stderr, r.stderr
        r = vlmlab("run", path, "--out", out, "--resume")
        assert r.returncode == 0, r.stderr
        assert f"from its checkpoint at step {resumed_at}" in r.stderr, r.stderr
        with h5py.File(out, "r") as f:
            assert f["/runs/llava-lr=0.001-s3"].attrs["resumed_from_step"] == resumed_at
        nk, nf = numbers(out), numbers(full)
        assert nk.keys() == nf.keys()
        for k in nf:
            assert nk[k] == nf[k], (k, nk[k], nf[k])
        assert not any(os.scandir(run_dir)) if os.path.exists(run_dir) else True


def test_kept_models_rescore():
    """Every completed run keeps its model; `vlmlab eval` on it gives the run's test numbers exactly."""
    path = write("long2.toml", LONG)
    out = os.path.join(TMP, "kept.h5")
    r = vlmlab("run", path, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        for rid in f["/runs"]:
            g = f["/runs/" + rid]
            rel = g.attrs["model_dir"]
            rel = rel.decode() if isinstance(rel, bytes) else rel
            model = os.path.join(TMP, rel)
            for name in ["config.json", "model.safetensors", "vlmlab.json"]:
                assert os.path.isfile(os.path.join(model, name)), (model, name)
            assert g["eval"].attrs["split"] in (b"test", "test")
            scored = vlmlab("eval", model, "--json")
            assert scored.returncode == 0, scored.stderr
            got = {s["subtype"]: (s["n"], s["correct"]) for s in json.loads(scored.stdout)["scores"]}
            want = pd.DataFrame(g["eval"][()])
            want = {st.decode(): (n, c) for st, n, c in zip(want["subtype"], want["n"], want["correct"])}
            assert got == want, (rid, got, want)
            val = json.loads(vlmlab("eval", model, "--json", "--split", "validation", "--samples", "6").stdout)
            curve = pd.DataFrame(g["curve"][()])
            assert val["scores"][-1]["accuracy"] == curve["accuracy"].iloc[-1]  # the curve's last point
    r = vlmlab("eval", os.path.join(TMP, "nowhere"))
    assert r.returncode == 2 and "not a folder" in r.stderr, r.stderr
    r = vlmlab("eval", model, "--split", "train")
    assert r.returncode == 2 and "--split must be test or validation" in r.stderr, r.stderr


def test_one_writer_per_results_file():
    """A second writer of the same results file is refused at start (exit 2) while the first holds it, the
    first then finishes with every run; a symbolic link at a temporary's name is never followed."""
    path = write("tiny_lock.toml", TINY)
    out = os.path.join(TMP, "locked.h5")
    first = run_until_paused(["run", path, "--out", out, "--quiet"], "run-recorded:1")
    with open(out, "rb") as fh:
        before = fh.read()
    for flags in ([], ["--resume"], ["--overwrite"]):
        r = vlmlab("run", path, "--out", out, "--quiet", *flags)
        assert r.returncode == 2 and "is being written by another vlmlab (pid %d" % first.pid in r.stderr, r.stderr
    with open(out, "rb") as fh:
        assert fh.read() == before  # untouched by the refused writers
    kill(first)
    # The lock dies with its holder: the file can be finished now.
    r = vlmlab("run", path, "--out", out, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        assert len(f["/summary"]) == 4
    # Symbolic links where temporaries go (the old fixed name, and a guess of a new one) are not followed.
    victim = write("victim.txt", "precious")
    out2 = os.path.join(TMP, "linked.h5")
    os.symlink(victim, out2 + ".tmp")
    os.symlink(victim, out2 + ".%d.0.tmp" % (os.getpid() + 1))
    r = vlmlab("run", path, "--out", out2, "--quiet", "--only", "llava-lr=0.001")
    assert r.returncode == 0, r.stderr
    with open(victim) as fh:
        assert fh.read() == "precious"
    assert os.path.isfile(out2) and not os.path.islink(out2)
    h5py.File(out2, "r").close()
    # --out naming a folder is refused before anything trains.
    r = vlmlab("run", path, "--out", TMP, "--overwrite", "--quiet")
    assert r.returncode == 2 and "is a folder" in r.stderr, r.stderr


def test_full_disk():
    """A disk that fills up mid-experiment: an error naming the file and the cause (exit 1, no signal), the
    results file as it was before, no temporary left behind. On a small tmpfs of its own (needs unshare -m)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        print("  skipped: needs unshare -m (root with CAP_SYS_ADMIN) for a tmpfs of its own")
        return
    path = write("tiny_disk.toml", TINY.replace("[measure]", "[measure]\nenabled = false"))
    mnt = os.path.join(TMP, "small_disk")
    os.makedirs(mnt)
    script = write("full_disk.sh", f"""set -e
mount -t tmpfs -o size=4m none {mnt}
{VLMLAB} run {path} --out {mnt}/r.h5 --quiet --only llava-lr=0.001
cp {mnt}/r.h5 {mnt}/../before.h5
# Fill the disk to the last byte, then ask for the other runs.
dd if=/dev/zero of={mnt}/filler bs=64k 2>/dev/null || true
set +e
{VLMLAB} run {path} --out {mnt}/r.h5 --resume --quiet 2>{mnt}/../err.txt
echo $? > {mnt}/../rc.txt
ls -a {mnt} > {mnt}/../listing.txt
cmp {mnt}/r.h5 {mnt}/../before.h5 && echo same > {mnt}/../same.txt
""")
    r = subprocess.run(["unshare", "-m", "sh", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rc = int(open(os.path.join(TMP, "rc.txt")).read())
    err = open(os.path.join(TMP, "err.txt")).read()
    listing = open(os.path.join(TMP, "listing.txt")).read().split()
    assert rc == 1, (rc, err)  # a failure, reported: not a crash (139) and not a success
    assert "No space left on device" in err, err
    assert os.path.exists(os.path.join(TMP, "same.txt")), "the results file changed"
    assert not [n for n in listing if n.endswith(".tmp")], listing


def test_bench_model():
    """`vlmlab bench-model`: its export reads back (`vlmlab parity` on it) and agrees with the plain-torch
    models of bench/torch_reference.py; its timings come as JSON; a bad size is a clear error."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "bench"))
    import torch_reference  # noqa: E402 (torch: only this test needs it)
    for family in ["llava", "qwen2vl"]:
        out = os.path.join(TMP, "bench_" + family)
        r = vlmlab("bench-model", "--family", family, "--size", "small", "--batch", "4", "--export", out,
                   "--decode-tokens", "5")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["export"] == out
        r = vlmlab("parity", out)
        assert r.returncode == 0 and "parity OK" in r.stdout, r.stdout
        agree = torch_reference.TorchBench(family, out).agreement(5)
        assert agree["train_logits"] <= 1e-4 and agree["prompt_logits"] <= 1e-4, agree
        assert agree["loss"] <= 1e-5 and agree["decode_tokens_equal"], agree
    r = vlmlab("bench-model", "--family", "qwen2vl", "--time", "train,decode", "--batch", "2", "--warmup", "0",
               "--repeats", "2", "--decode-tokens", "3")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for what in ["train", "decode"]:
        assert len(d[what]["ms"]) == 2 and d[what]["flops"] > 0, d
    # The step computes only the answer positions' logits and last-layer rows: less work than HF's full
    # forward (flops_full, torch's work in bench/torch_reference.py).
    assert d["train"]["flops_full"] > d["train"]["flops"], d
    assert "prefill" not in d
    # The step's matrix products alone, replayed: every FLOP they count is one of the step's.
    r = vlmlab("bench-model", "--family", "llava", "--time", "train,train_gemms", "--batch", "2", "--warmup", "0",
               "--repeats", "2")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    g = d["train_gemms"]
    assert len(g["ms"]) == 2 and g["calls"] > 0 and 0 < g["flops"] < d["train"]["flops"], d
    r = vlmlab("bench-model", "--size", "huge")
    assert r.returncode == 2 and "--size must be small or large" in r.stderr, r.stderr
    r = vlmlab("bench-model", "--time", "train,eval")
    assert r.returncode == 2 and "--time takes train, train_gemms, prefill, decode" in r.stderr, r.stderr


def text_table(dataset):
    """docs/results.md's one-line reader: a table as a DataFrame with its strings as str."""
    return pd.DataFrame(dataset[()]).apply(lambda c: c.str.decode("utf-8") if c.dtype == object else c)


def test_strict_cli():
    """No abbreviations; an unknown command, flag or config key is refused with the nearest valid one."""
    path = write("tiny.toml", TINY)
    r = vlmlab("run", path, "--thread", "1", "--out", os.path.join(TMP, "never.h5"))
    assert r.returncode == 2, r.stderr
    assert "unrecognised option '--thread'" in r.stderr and 'did you mean "--threads"?' in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(TMP, "never.h5"))
    r = vlmlab("check", path, "--param")  # a prefix of --params: not taken for it
    assert r.returncode == 2 and 'did you mean "--params"?' in r.stderr, r.stderr
    r = vlmlab("check", path, "--zzzzzz")  # nothing near: no suggestion
    assert r.returncode == 2 and "unrecognised option '--zzzzzz'" in r.stderr and "did you mean" not in r.stderr
    r = vlmlab("rnu", path)
    assert r.returncode == 2 and 'vlmlab: unknown command "rnu"; did you mean "run"?' in r.stderr, r.stderr
    r = vlmlab("--version")
    assert r.returncode == 0 and re.fullmatch(r"vlmlab \d+\.\d+\.\d+ \(commit \S+\)\n", r.stdout), r.stdout
    for old, new, want in [
            ("steps = 6", "stesp = 6", 'train.stesp: unknown key; expected one of:'),
            ("[experiment]", "[experimnt]", 'did you mean "experiment"?'),
            ("image_size = 30", "image_size = 30\nnum_object = 2", 'did you mean "num_objects"?'),
            ('family = "llava"', 'family = "llava"\nprojector_hiden_act = "relu"',
             'did you mean "projector_hidden_act"?'),
            ("[model.text]", "[model.txt]", 'did you mean "text"?')]:
        r = vlmlab("check", write("typo.toml", TINY.replace(old, new)))
        assert r.returncode == 2 and want in r.stderr, (new, r.stderr)
    r = vlmlab("check", write("typo.toml", TINY.replace("steps = 6", "stesp = 6")))
    assert 'did you mean "steps"?' in r.stderr, r.stderr


def check_warnings(text, name):
    r = vlmlab("check", write(name, text))
    assert r.returncode == 0, r.stderr  # warned, not refused
    return [l for l in r.stderr.splitlines() if l.startswith("vlmlab check: warning: ")]


def test_check_warnings():
    """`check` names what a processor does to the task's images that a user would not expect."""
    # 30 px scenes, 15 px patches, measured at 30 px: nothing to say.
    assert check_warnings(TINY, "quiet.toml") == []
    # 40 px: llava's tower tiles 30 of them; fuyu pads to whole patches and drops nothing.
    t40 = TINY.replace("image_size = 30", "image_size = 40").replace("resolutions = [30, 45]", "resolutions = [40]")
    w = check_warnings(t40, "w40.toml")
    assert w == ["vlmlab check: warning: llava's 40x40 input is not a multiple of patch_size 15: the patches cover "
                 "30x30 and the last 10 rows / 10 columns of pixels are never seen "
                 "(llava-lr=0.001-s3, llava-lr=0.003-s3)"], w
    # qwen2vl with HF's default min_pixels: 40 px rounds to 30 (2x2 merged 15 px patches), under 3136
    # pixels, so it is upscaled to ceil(40 * sqrt(3136 / 1600) / 30) * 30 = 60 px: 4 tokens instead of 1.
    qw = t40.replace('family = "fuyu"', 'family = "qwen2vl"')
    w = check_warnings(qw, "qwen.toml")
    assert ("vlmlab check: warning: qwen2vl upscales a 40x40 image to 60x60 (4 visual tokens) because it has fewer "
            "pixels than min_pixels 3136 (HF's default is 56x56 = 3136); [variant.processor] min_pixels = 900 keeps "
            "it at 30x30 (1 visual tokens), its size rounded to multiples of 30 (qwen2vl-lr=0.001-s3, "
            "qwen2vl-lr=0.003-s3)") in w, w
    w = check_warnings(qw.replace('family = "qwen2vl"', 'family = "qwen2vl"\n[variant.processor]\nmin_pixels = 900'),
                       "qwen900.toml")
    assert not any("qwen2vl upscales" in x for x in w), w
    # ocr's canvases up to 1:8 (32 x 256): llava keeps the middle square, flamingo squeezes them, and the
    # measured square images do not represent them.
    ocr = (TINY.replace('name = "sort_of_clevr"\nimage_size = 30', 'name = "ocr"')
           .replace("resolutions = [30, 45]", "resolutions = [32]").replace('family = "fuyu"', 'family = "flamingo"'))
    w = "\n".join(check_warnings(ocr, "ocr.toml"))
    assert ("llava resizes a 32x256 image to 32x256 (shortest edge) and centre-crops it to 32x32: only the middle "
            "13% of it is seen, its left and right ends are cut (llava-lr=0.001-s3, llava-lr=0.003-s3)") in w, w
    assert "flamingo resizes a 32x256 image to 32x32 without keeping its aspect ratio: it is squeezed 8.0 times " \
           "along its width" in w, w
    assert "ocr's images are up to 32x256" in w and "measured on 32x32 images" in w, w


def levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def majority_string(answers):
    lengths = {}
    for a in answers:
        lengths[len(a)] = lengths.get(len(a), 0) + 1
    n = max(sorted(lengths), key=lambda k: (lengths[k], -k))
    out = []
    for i in range(n):
        freq = {}
        for a in answers:
            if len(a) > i:
                freq[a[i]] = freq.get(a[i], 0) + 1
        out.append(min(freq, key=lambda c: (-freq[c], c)))
    return out


OCR = (TINY.replace('name = "sort_of_clevr"\nimage_size = 30', 'name = "ocr"\nmax_aspect = 4')
       .replace('name = "tiny"', 'name = "tiny_ocr"').replace("gallery = 4", "gallery = 4\nkeep_items = true")
       .replace('"train.lr" = [1e-3, 3e-3]', '"train.lr" = [3e-3]').replace("resolutions = [30, 45]",
                                                                         "resolutions = [32]"))


def test_ocr_metrics_items_and_text_tables():
    """An ocr run reports character error rate and per-character accuracy beside exact match, with their
    baselines, recomputed here from every test item's answer (kept by [eval] keep_items); the summary's
    headline says it is cer; `check` prints the visual tokens the summary holds; tables read as text."""
    path = write("ocr.toml", OCR)
    out = os.path.join(TMP, "ocr.h5")
    r = vlmlab("run", path, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "headline" in r.stdout and " cer " in r.stdout, r.stdout
    with h5py.File(out, "r") as f:
        summary = text_table(f["/summary"])
        assert isinstance(summary["run_id"][0], str) and isinstance(summary["family"][0], str)
        assert (summary["status"] == "complete").all() and (summary["metric"] == "cer").all(), summary
        for _, row in summary.iterrows():
            g = f["/runs/" + row["run_id"]]
            items = text_table(g["items"])
            assert len(items) == 12 and items["index"].tolist() == list(range(12))
            ev = text_table(g["eval"])
            assert (ev["n"] > 0).all(), ev  # no row for a subtype never asked
            metrics = text_table(g["metrics"])
            assert g["metrics"].attrs["headline"] == "cer"
            got = {(m["metric"], m["subtype"]): (m["value"], m["baseline"], m["n"]) for _, m in metrics.iterrows()}
            tot = {"cer": [0, 0, 0], "char_accuracy": [0, 0, 0]}
            for sub in ev["subtype"]:
                if sub == "all":
                    continue
                mine = items[items["subtype"] == sub]
                answers = [a.split(" ") for a in mine["answer"]]
                preds = [p.split(" ") if p else [] for p in mine["prediction"]]
                base = majority_string(answers)
                chars = sum(len(a) for a in answers)
                edits = sum(levenshtein(p, a) for p, a in zip(preds, answers))
                base_edits = sum(levenshtein(base, a) for a in answers)
                hits = sum(sum(1 for x, y in zip(p, a) if x == y) for p, a in zip(preds, answers))
                base_hits = sum(sum(1 for x, y in zip(base, a) if x == y) for a in answers)
                for name, num, bnum in (("cer", edits, base_edits), ("char_accuracy", hits, base_hits)):
                    v, b, n = got[(name, sub)]
                    assert abs(v - num / chars) < 1e-12 and abs(b - bnum / chars) < 1e-12 and n == len(mine), \
                        (name, sub, v, num / chars, b, bnum / chars)
                    tot[name][0] += num
                    tot[name][1] += bnum
                    tot[name][2] += chars
                # exact match agrees with the items too
                e = ev[ev["subtype"] == sub].iloc[0]
                assert e["correct"] == (mine["answer"] == mine["prediction"]).sum() == mine["correct"].sum()
            for name, (num, bnum, chars) in tot.items():
                v, b, _ = got[(name, "all")]
                assert abs(v - num / chars) < 1e-12 and abs(b - bnum / chars) < 1e-12
            assert row["score"] == got[("cer", "all")][0] and row["score_baseline"] == got[("cer", "all")][1]
        # `vlmlab eval` on a kept model gives the same metrics and names the headline.
        rid = summary["run_id"][0]
        r = vlmlab("eval", os.path.join(TMP, f["/runs/" + rid].attrs["model_dir"]), "--json")
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        want = text_table(f["/runs/" + rid + "/metrics"])
        assert j["headline"] == "cer"
        assert [(m["metric"], m["subtype"], m["value"], m["baseline"]) for m in j["metrics"]] == \
            [(m["metric"], m["subtype"], m["value"], m["baseline"]) for _, m in want.iterrows()], (j, want)
        # `check` counts visual tokens as the summary does.
        r = vlmlab("check", path)
        for _, row in summary.iterrows():
            line = next(l for l in r.stdout.splitlines() if l.strip().startswith(row["run_id"]))
            assert int(line.split()[-1]) == row["visual_tokens"], (line, row["visual_tokens"])


def test_progress_readable_while_running():
    """A run's training rows and validation points can be read from its progress file while it trains
    (here paused by the test hook after step 9 of 12, validation every 4 steps); once the run is
    recorded the progress file is gone and the results file holds the run, with no row for a subtype
    the task was not asked."""
    text = (TINY.replace("steps = 6", "steps = 12").replace("gallery = 4", "gallery = 4\nval_samples = 6\nevery = 4")
            .replace("image_size = 30", 'image_size = 30\nquestions = "horizontal,vertical"')
            .replace('name = "tiny"', 'name = "progress"'))
    path = write("progress.toml", text)
    out = os.path.join(TMP, "progress.h5")
    progress = os.path.join(TMP, "progress", "progress", "llava-lr=0.001-s3.h5")
    p = run_until_paused(["run", path, "--out", out, "--quiet", "--only", "llava-lr=0.001"], "after-step:9")
    try:
        with h5py.File(progress, "r") as f:
            assert f.attrs["steps_done"] == 9 and f.attrs["steps"] == 12
            g = f["/runs/llava-lr=0.001-s3"]
            assert g.attrs["status"] == "running"
            train = text_table(g["train"])
            assert train["step"].tolist() == list(range(9)), train
            curve = text_table(g["curve"])
            assert curve["step"].tolist() == [0, 4, 8], curve
            assert list(curve.columns)[-2:] == ["accuracy_horizontal", "accuracy_vertical"], list(curve.columns)
        assert not os.path.exists(out)  # nothing recorded yet
    finally:
        kill(p)
    r = vlmlab("run", path, "--out", out, "--quiet", "--only", "llava-lr=0.001", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(progress) and not os.path.exists(os.path.dirname(progress))  # no empty folder left
    with h5py.File(out, "r") as f:
        ev = text_table(f["/runs/llava-lr=0.001-s3/eval"])
        assert ev["subtype"].tolist() == ["horizontal", "vertical", "all"], ev
        assert (ev["n"] > 0).all()


TESTS = [test_config_errors, test_check_and_list, test_results_schema_and_pandas, test_reproducible,
         test_sigkill_then_resume, test_kill_mid_training_then_resume, test_kept_models_rescore,
         test_one_writer_per_results_file, test_full_disk, test_bench_model, test_strict_cli, test_check_warnings,
         test_ocr_metrics_items_and_text_tables, test_progress_readable_while_running]

if __name__ == "__main__":
    run_tests(TESTS, TMP, sys.argv[2:])
