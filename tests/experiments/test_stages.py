"""Staged training end to end ([[stage]] in an experiment): what each stage trains and freezes, the
results file's record of it, SIGKILL + --resume inside a stage and at a stage boundary, weights taken
from another results file's kept model, and broken stage configs refused before anything trains.

Run by meson (tests/meson.build) with Debian's /usr/bin/python3 (h5py, pandas):
    test_stages.py VLMLAB_BINARY
Prints a Catch2-style summary line that scripts/count_tests.py counts.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import kill, numbers, run_tests  # noqa: E402

VLMLAB = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="vlmlab_stages_")

BASE = """\
[experiment]
name = "staged"
seeds = [3]
threads = 1

[task]
name = "sort_of_clevr"
image_size = 30
questions = "shape,horizontal,vertical"

[train]
batch_size = 4
lr = 2e-3
checkpoint_every = 2
checkpoint_keep = 1

[eval]
samples = 8
batch_size = 4
gallery = 2
val_samples = 4
every = 2

[measure]
enabled = false

[model.text]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2

[model.vision]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
patch_size = 15
"""

VARIANTS = """
[[variant]]
family = "llava"

[[variant]]
family = "fuyu"
"""

# Tower pretraining on descriptions (fuyu has no tower: it skips it), alignment of the connector
# with everything else frozen, then everything with the tower at a tenth of the learning rate.
STAGES = """
[[stage]]
name = "tower"
steps = 4
task = { mode = "describe" }
train = ["vision"]

[[stage]]
name = "align"
steps = 4
lr = 5e-3
train = ["connector"]

[[stage]]
name = "finetune"
steps = 4
lr_scale = { vision = 0.1 }
"""


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def vlmlab(*args):
    return subprocess.run([VLMLAB, *args], capture_output=True, text=True, timeout=900)


def run_until_paused(args, point):
    return common.run_until_paused(VLMLAB, args, point, TMP)


def read_tensors(path):
    """A safetensors file's F32 tensors by name (the format: 8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype="<f4").reshape(t["shape"])
    return out


def same(a, b):
    """Equal bit for bit, NaN equal to NaN (a later stage's curve has no score for an earlier task)."""
    try:
        return np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True)
    except (TypeError, ValueError):
        return a == b


def table(f, path):
    df = pd.DataFrame(f[path][()])
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return df


def test_stages_recorded():
    path = write("staged.toml", BASE + STAGES + VARIANTS)
    # check says what each stage trains for each family, before anything runs.
    r = vlmlab("check", path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"stage tower +skipped: fuyu has no parameters in vision", r.stdout), r.stdout
    assert re.search(r"stage align +4 steps, trains \d+ parameters, \d+ frozen", r.stdout), r.stdout
    out = os.path.join(TMP, "staged.h5")
    r = vlmlab("run", path, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        params = {rid: table(f, f"/runs/{rid}/params").set_index("component")["count"] for rid in f["/runs"]}
        st = table(f, "/runs/llava-s3/stages")
        assert st["name"].tolist() == ["tower", "align", "finetune"]
        assert st["status"].tolist() == ["trained"] * 3
        assert st["first_step"].tolist() == [0, 4, 8] and st["steps"].tolist() == [4, 4, 4]
        p = params["llava-s3"]
        assert st["trained_params"].tolist() == [p["vision"], p["connector"], p["total"]]
        assert st["frozen_params"].tolist() == [p["total"] - p["vision"], p["total"] - p["connector"], 0]
        assert "mode=describe" in st["task"][0]
        fu = table(f, "/runs/fuyu-s3/stages")
        assert fu["status"].tolist() == ["skipped", "trained", "trained"], fu
        assert "vision" in fu["reason"][0]
        assert fu["first_step"].tolist() == [0, 0, 4] and fu["steps"].tolist() == [0, 4, 4]
        # Each step and validation point says its stage; each stage is validated on its own task.
        tr = table(f, "/runs/llava-s3/train")
        assert tr["stage"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
        cu = table(f, "/runs/llava-s3/curve")
        assert list(zip(cu["stage"], cu["step"])) == [(0, 0), (0, 2), (0, 4), (1, 4), (1, 6), (1, 8),
                                                     (2, 8), (2, 10), (2, 12)], cu
        assert "accuracy_describe" in cu.columns and cu["accuracy_describe"][:3].notna().all()
        assert table(f, "/runs/fuyu-s3/curve")["stage"].min() == 1
        # Gradient and optimizer memory exist only for what a stage trains.
        mem = table(f, "/runs/llava-s3/memory").set_index("phase")
        # (A parameter no loss reaches, like the tower's unused post_layernorm, gets none either.)
        for stage, part in [("tower", "vision"), ("align", "connector"), ("finetune", "total")]:
            row = mem.loc["train:" + stage]
            assert 0.95 * 4 * p[part] <= row["grads_bytes"] <= 4 * p[part], (stage, row["grads_bytes"], p[part])
            assert row["optimizer_bytes"] == 2 * row["grads_bytes"], (stage, row["optimizer_bytes"])
        assert mem.loc["train:align"]["grads_bytes"] == 4 * p["connector"]
        assert mem.loc["train"]["grads_bytes"] == mem.loc["train:finetune"]["grads_bytes"]
    # The report lists each variant's stages, fuyu's skipped one with its reason, and draws each stage's curve.
    r = vlmlab("report", out, "--out", os.path.join(TMP, "staged"))
    assert r.returncode == 0, r.stderr
    with open(os.path.join(TMP, "staged", "report.md")) as f:
        md = f.read()
    assert "### Stages" in md and "stage_curves.png" in md, md
    assert re.search(r"\| fuyu \| tower \| [^|]*mode=describe[^|]* \| skipped: fuyu has no parameters in vision", md), md
    assert re.search(r"\| llava \| align \| [^|]* \| connector \|", md), md
    assert "Stages skipped because the family has nothing they train: fuyu: tower." in md
    assert os.path.exists(os.path.join(TMP, "staged", "figures", "stage_curves.png"))


def test_stage_resume_after_sigkill():
    """Killed inside a stage and just after a stage boundary's checkpoint; --resume ends with the
    uninterrupted run's numbers."""
    path = write("staged_kill.toml", BASE + STAGES + VARIANTS)
    full = os.path.join(TMP, "staged_full.h5")
    r = vlmlab("run", path, "--out", full, "--quiet")
    assert r.returncode == 0, r.stderr
    for point, resumed_at in [("after-step:7", 6), ("after-step:5", 4)]:
        out = os.path.join(TMP, "staged_%s.h5" % point.replace(":", "_"))
        kill(run_until_paused(["run", path, "--out", out, "--quiet"], point))
        r = vlmlab("run", path, "--out", out, "--resume")
        assert r.returncode == 0, r.stderr
        assert f"from its checkpoint at step {resumed_at}" in r.stderr, r.stderr
        nk, nf = numbers(out), numbers(full)
        assert nk.keys() == nf.keys()
        for k in nf:
            assert same(nk[k], nf[k]), (point, k, nk[k], nf[k])


def pretrain_llava(name, steps):
    """Runs experiment NAME: llava trained `steps` steps in describe mode (seed 3); returns its results
    file, whose model llava-s3 is kept in TMP/NAME/models/llava-s3."""
    path = write(name + ".toml", BASE.replace('name = "staged"', f'name = "{name}"') + f"""
[[stage]]
name = "describe"
steps = {steps}
task = {{ mode = "describe" }}
""" + '\n[[variant]]\nfamily = "llava"\n')
    out = os.path.join(TMP, name + ".h5")
    r = vlmlab("run", path, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_init_from_another_results_file():
    """A tower trained in one experiment, given to llava and flamingo in another: both start from it."""
    pre_out = pretrain_llava("pre", steps=3)
    use = write("use.toml", BASE + f"""
[[stage]]
name = "align"
steps = 2
freeze = ["vision", "lm"]
init_from = {{ vision = "{pre_out}:llava-s3" }}
""" + '\n[[variant]]\nfamily = "llava"\n\n[[variant]]\nfamily = "flamingo"\nuse_resampler = false\n'
        '"vision_config.hidden_act" = "quick_gelu"\n'
        '\n[[variant]]\nfamily = "fuyu"\n')
    out = os.path.join(TMP, "use.h5")
    r = vlmlab("run", use, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        for rid in ["llava-s3", "flamingo-s3"]:
            st = table(f, f"/runs/{rid}/stages")
            assert "vision <- " in st["init_from"][0] and "pre/models/llava-s3" in st["init_from"][0], st
        assert "skipped" in table(f, "/runs/fuyu-s3/stages")["init_from"][0]
    # The frozen tower is the pretrained one, bit for bit, in both families' kept models.
    src = read_tensors(os.path.join(TMP, "pre", "models", "llava-s3", "model.safetensors"))
    fl = read_tensors(os.path.join(TMP, "use", "models", "flamingo-s3", "model.safetensors"))
    ll = read_tensors(os.path.join(TMP, "use", "models", "llava-s3", "model.safetensors"))
    tower = [k for k in src if k.startswith("vision_tower.")]
    assert tower
    for k in tower:
        assert np.array_equal(ll[k], src[k]), k
        assert np.array_equal(fl["model.vision_model." + k[len("vision_tower."):]], src[k]), k


def test_init_from_checks_vocabulary():
    """An LM's token embeddings are taken only from a model with this run's vocabulary: the same words
    at the same ids. A describe-pretrained LM fits a run whose stages add the describe words; without
    them, or with two of the model's words swapped (shapes that still agree), it is refused."""
    pretrain_llava("pre_vocab", steps=2)
    kept = os.path.join(TMP, "pre_vocab", "models", "llava-s3")

    def use(source, stages):
        path = write("use_vocab.toml", BASE + stages.replace("SOURCE", source) + '\n[[variant]]\nfamily = "llava"\n')
        return vlmlab("check", path)

    with_describe = """
[[stage]]
name = "align"
steps = 2
task = { mode = "describe" }
train = ["connector"]
init_from = { vision = "SOURCE", lm = "SOURCE" }

[[stage]]
name = "question"
steps = 2
"""
    r = use(kept, with_describe)
    assert r.returncode == 0, r.stderr
    # Without the describe stage the run has the question words only.
    r = use(kept, '\n[[stage]]\nname = "question"\nsteps = 2\ninit_from = { lm = "SOURCE" }\n')
    assert r.returncode == 2 and "stage[0].init_from.lm" in r.stderr and "another vocabulary" in r.stderr, r.stderr
    # The tower alone holds no token embedding: no vocabulary to agree on.
    r = use(kept, '\n[[stage]]\nname = "question"\nsteps = 2\ninit_from = { vision = "SOURCE" }\n')
    assert r.returncode == 0, r.stderr
    # Two words swapped: every shape agrees, the ids do not.
    swapped = os.path.join(TMP, "pre_vocab_swapped")
    shutil.copytree(kept, swapped)
    meta_path = os.path.join(swapped, "vlmlab.json")
    with open(meta_path) as fh:
        meta = json.load(fh)
    words = meta["vocabulary"]
    words[10], words[11] = words[11], words[10]
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    r = use(swapped, with_describe)
    assert r.returncode == 2 and "stage[0].init_from.lm" in r.stderr and "another vocabulary" in r.stderr, r.stderr
    assert f'id 10: "{words[10]}" there' in r.stderr, r.stderr


def test_broken_stage_configs_refused():
    """Each refused at its file:line and key (exit 2), before anything trains."""
    def refused(text, *needles):
        path = write("broken.toml", BASE + text + VARIANTS)
        r = vlmlab("check", path)
        assert r.returncode == 2, (text, r.stderr)
        for n in needles:
            assert n in r.stderr, (n, r.stderr)
        assert not os.path.exists(os.path.join(TMP, "results"))
        return r.stderr
    lines = BASE.count("\n")  # the stage text starts on the next line
    err = refused('[[stage]]\nname = "a"\nsteps = 2\ntrain = ["*no_such_param*"]\n',
                  "stage[0].train", "matches no parameter")
    assert re.search(r"broken\.toml:\d+:\d+: stage\[0\]\.train", err), err
    refused('[[stage]]\nname = "a"\nsteps = 2\nfreeze = ["vision", "connector", "lm"]\n',
            "stage[0].freeze", "freezes every parameter")
    refused('[[stage]]\nname = "a"\nsteps = 2\ninit_from = { lm = "results/none.h5:llava-s0" }\n',
            "stage[0].init_from.lm", "no model kept")
    refused('[[stage]]\nname = "a"\nsteps = 2\ntrain = ["lm"]\nfreeze = ["vision"]\n', "stage[0].freeze", "not both")
    refused('[[stage]]\nname = "a"\nsteps = 2\nlearning_rate = 1\n', "stage[0].learning_rate", "unknown key")
    refused('[[stage]]\nname = "a"\n', "stage[0].steps", "required")
    refused('[[stage]]\nname = "a"\nsteps = 2\ntask = { mode = "caption" }\n', "stage[0].task", "caption")
    # A shape that differs: a tower pretrained at another width.
    wide = write("wide.toml", BASE.replace('name = "staged"', 'name = "wide"').replace(
        "[model.vision]\nhidden_size = 32", "[model.vision]\nhidden_size = 16")
        + '\n[[stage]]\nname = "s"\nsteps = 1\n\n[[variant]]\nfamily = "llava"\n')
    wide_out = os.path.join(TMP, "wide.h5")
    r = vlmlab("run", wide, "--out", wide_out, "--quiet")
    assert r.returncode == 0, r.stderr
    err = refused(f'[[stage]]\nname = "a"\nsteps = 2\ninit_from = {{ vision = "{wide_out}:llava-s3" }}\n',
                  "stage[0].init_from.vision", "sizes differ", "[16]")
    assert f"broken.toml:{lines + 4}:" in err, err


TESTS = [test_stages_recorded, test_stage_resume_after_sigkill, test_init_from_another_results_file,
         test_init_from_checks_vocabulary, test_broken_stage_configs_refused]

if __name__ == "__main__":
    run_tests(TESTS, TMP, sys.argv[2:])
