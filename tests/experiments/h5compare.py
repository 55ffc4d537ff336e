"""Reading two vlmlab results files side by side: every number and string in a file, keyed by object
path, except the facts that may differ between two runs of one experiment (timings, and where a run
ran). Used by test_cli.py and test_mpi.py."""
import h5py
import numpy as np

# Columns that hold timings (or wall-clock facts) and may differ between two identical runs.
TIMING_COLUMNS = {"step_ms", "median_ms", "p10_ms", "p90_ms", "prefill_ms", "decode_ms_per_token",
                  "train_step_ms", "peak_rss_bytes"}
TIMING_ATTRS = {"created_utc", "started_utc", "finished_utc", "wall_s"}
# Where a run ran (MPI): the rank and host that wrote it.
PLACE_ATTRS = {"rank", "host"}


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
