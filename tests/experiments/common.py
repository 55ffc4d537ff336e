"""What test_cli.py and test_mpi.py share: the tiny experiment they run, and every number and string
of a results file keyed by object path, except what may differ between two runs of one experiment
(timings, and where a run ran), to compare two files."""
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
