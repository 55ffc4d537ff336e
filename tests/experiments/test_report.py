"""End-to-end tests of `vlmlab report` (and `vlmlab sample`, which draws its gallery).

Run by meson (tests/meson.build) with Debian's /usr/bin/python3 (h5py, numpy, matplotlib):
    test_report.py VLMLAB_BINARY
Makes a small results file with the binary (2 families x 2 seeds, a few steps), builds its report
and checks the report's tables against the file's numbers, recomputing means, 95% intervals and
percentiles here (independently of scripts/report.py), that every referenced figure is a valid PNG,
and that the same file always gives the same report. Prints a Catch2-style summary line
("test cases: N | P passed | F failed") that scripts/count_tests.py counts.
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import run_tests  # noqa: E402

VLMLAB = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="vlmlab_report_")

TINY = """\
[experiment]
name = "tiny_report"
description = "Two families, two seeds, a few steps."
seeds = [1, 2]
threads = 1

[task]
name = "sort_of_clevr"
image_size = 30

[train]
steps = 8
batch_size = 4
lr = 2e-3

[eval]
samples = 24
batch_size = 12
gallery = 4
val_samples = 12
every = 3

[measure]
resolutions = [30, 45]
warmup = 1
repeats = 3
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
"""

# Student's t 97.5% quantiles by degrees of freedom (statistical tables), for the 95% interval.
T975 = {1: 12.7062047362, 2: 4.3026527297, 3: 3.1824463053, 4: 2.7764451052, 5: 2.5705818356}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_FIGURES = {"accuracy_vs_prefill.png", "accuracy_vs_params.png", "tokens_latency_vs_resolution.png",
                    "memory_vs_resolution.png", "learning_curves.png", "training_loss.png", "accuracy_per_subtype.png"}


def vlmlab(*args, cwd=None):
    return subprocess.run([VLMLAB, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


_results = {}


def results_file():
    """The tiny experiment's results file, made once."""
    if "path" not in _results:
        toml = os.path.join(TMP, "tiny.toml")
        with open(toml, "w") as f:
            f.write(TINY)
        path = os.path.join(TMP, "tiny.h5")
        r = vlmlab("run", toml, "--out", path, "--quiet")
        assert r.returncode == 0, r.stderr
        _results["path"] = path
    return _results["path"]


def make_report(path, out):
    r = vlmlab("report", path, "--out", out)
    assert r.returncode == 0, (r.stdout, r.stderr)
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        return f.read()


# ---- reading the file, independently of scripts/report.py

def s_(x):
    return x.decode() if isinstance(x, bytes) else x


def file_runs(path):
    """run_id -> dict of everything the checks need."""
    out = {}
    with h5py.File(path, "r") as f:
        for rid in f["runs"]:
            g = f["runs"][rid]
            ev = g["eval"][()]
            out[rid] = {
                "family": g.attrs["family"], "variant": g.attrs["variant"], "seed": int(g.attrs["seed"]),
                "status": g.attrs["status"], "error": g.attrs["error"],
                "eval": {s_(r["subtype"]): (float(r["accuracy"]), float(r["chance"]), float(r["majority"]))
                         for r in ev},
                "params": {s_(r["component"]): int(r["count"]) for r in g["params"][()]},
                "cost": {int(r["resolution"]): (int(r["visual_tokens"]), int(r["lm_tokens"])) for r in g["cost"][()]},
                "memory": {s_(r["phase"]): {k: int(r[k]) for k in r.dtype.names if k != "phase"}
                           for r in g["memory"][()]},
                "latency": {k: np.asarray(v[()]) for k, v in g["latency_samples"].items()}
                if "latency_samples" in g else {},
                "samples": [(s_(r["question"]), s_(r["answer"]), s_(r["prediction"]), int(r["correct"]),
                             int(r["index"])) for r in g["samples"][()]],
            }
    return out


def interval(values):
    """(mean, 95% half-width or None) computed from the t table."""
    n = len(values)
    m = sum(values) / n
    if n == 1:
        return m, None
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, T975[n - 1] * sd / math.sqrt(n)


# ---- reading the report

def sections(md):
    """'## Title' -> its text."""
    out, title = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = []
        elif title:
            out[title].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def tables(text):
    """Every pipe table in the text, as a list of row dicts keyed by header."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", l.strip())[1:-1]] for l in block]
            header = cells[0]
            found.append([dict(zip(header, row)) for row in cells[2:]])
        block = []
    return found


def close(shown, value, decimals=None):
    """The printed number agrees with the value to the precision printed."""
    shown = shown.replace(",", "")
    if decimals is None:
        decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-9


def parse_acc(cell):
    m = re.fullmatch(r"(-?[\d.]+)(?: ± ([\d.]+))?", cell)
    assert m, cell
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None), m.group(1), m.group(2)


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_bytes(cell):
    num, unit = cell.split()
    return float(num), UNITS[unit], num


def group_label(run):
    return run["variant"]


# ---------------------------------------------------------------------------------------------

def test_cli_errors_and_default_out():
    r = vlmlab("report", "--help")
    assert r.returncode == 0 and "vlmlab report RESULTS.h5" in r.stdout and "--out" in r.stdout, r.stdout
    r = vlmlab("report")
    assert r.returncode == 2 and "missing the results file" in r.stderr, r.stderr
    r = vlmlab("report", os.path.join(TMP, "missing.h5"))
    assert r.returncode == 2 and "cannot open" in r.stderr, r.stderr
    bad = os.path.join(TMP, "bad.h5")
    with open(bad, "w") as f:
        f.write("not hdf5")
    r = vlmlab("report", bad)
    assert r.returncode == 2 and "not a vlmlab results file" in r.stderr, r.stderr
    other = os.path.join(TMP, "other.h5")  # HDF5, but not a results file
    with h5py.File(other, "w") as f:
        f.attrs["something"] = 1
    r = vlmlab("report", other)
    assert r.returncode == 2 and "not a vlmlab results file" in r.stderr, r.stderr
    # Default folder: results/<experiment name>/ under the working directory.
    cwd = os.path.join(TMP, "cwd")
    os.makedirs(cwd)
    r = vlmlab("report", results_file(), cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(cwd, "results", "tiny_report", "report.md"))


def test_what_was_run():
    path = results_file()
    md = make_report(path, os.path.join(TMP, "what"))
    sec = sections(md)["What was run"]
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    for key in ("git_commit", "cpu", "blas", "compiler", "vlmlab_version", "created_utc"):
        assert str(attrs[key]) in sec, (key, attrs[key])
    assert f"{attrs['cores']} cores, 1 thread(s)" in sec, sec
    assert "`sort_of_clevr` (image_size = 30)" in sec, sec
    assert "training 8 steps at batch 4" in sec and "evaluation on 24 test items" in sec, sec
    assert "latency at 30, 45 px with 3 timed repeats" in sec, sec
    assert "4 run(s): 4 complete, 0 failed" in sec, sec
    assert "```toml\n" + TINY.rstrip("\n") + "\n```" in sec  # the experiment config, as run
    assert md.startswith("# vlmlab report: tiny_report\n"), md[:80]
    with h5py.File(path, "r") as f:  # every run records the machine its timings come from
        for rid in f["runs"]:
            assert s_(f[f"runs/{rid}"].attrs["cpu"]) == s_(attrs["cpu"]), rid
            assert int(f[f"runs/{rid}"].attrs["cores"]) == int(attrs["cores"]), rid
        # the cost: wall time x threads summed over the runs, in CPU-hours
        cpu_s = sum(float(f[f"runs/{rid}"].attrs["wall_s"]) * int(f[f"runs/{rid}"].attrs["threads"]) for rid in f["runs"])
    assert f"- Cost: {cpu_s / 3600:.2f} CPU-hours" in sec and "summed over 4 run(s)" in sec, sec


def test_runs_measured_elsewhere():
    """Runs made on another machine (part files folded here) are named as measured there, not here."""
    path = os.path.join(TMP, "elsewhere.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        for rid in f["runs"]:
            if rid.startswith("fuyu"):
                f[f"runs/{rid}"].attrs["cpu"] = "Other CPU 9000"
                f[f"runs/{rid}"].attrs["cores"] = 16
        here, cores = s_(f.attrs["cpu"]), int(f.attrs["cores"])
        n_fuyu = sum(1 for rid in f["runs"] if rid.startswith("fuyu"))
    sec = sections(make_report(path, os.path.join(TMP, "elsewhere")))["What was run"]
    assert f"Other CPU 9000, 16 cores ({n_fuyu} run(s))" in sec, sec
    assert f"{here}, {cores} cores ({4 - n_fuyu} run(s))" in sec, sec
    assert f"file written on {here}, {cores} cores" in sec, sec


def test_runs_made_by_another_build():
    """Runs made by another build (folded or resumed here) are named with their own commit."""
    path = os.path.join(TMP, "otherbuild.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        mine = s_(f.attrs["git_commit"])
        assert all(s_(f[f"runs/{rid}"].attrs["git_commit"]) == mine for rid in f["runs"])  # each run records it
        for rid in f["runs"]:
            if rid.startswith("llava"):
                f[f"runs/{rid}"].attrs["git_commit"] = "0123abcd"
        n_llava = sum(1 for rid in f["runs"] if rid.startswith("llava"))
    sec = sections(make_report(path, os.path.join(TMP, "otherbuild")))["What was run"]
    assert f"`0123abcd` ({n_llava} run(s))" in sec, sec
    assert f"`{mine}` ({4 - n_llava} run(s)); file written by `{mine}`" in sec, sec
    plain = sections(make_report(results_file(), os.path.join(TMP, "samebuild")))["What was run"]
    assert f"git commit `{mine}`," in plain and "runs made by" not in plain, plain


def test_tables_match_the_file():
    path = results_file()
    md = make_report(path, os.path.join(TMP, "tables"))
    runs = file_runs(path)
    sec = sections(md)
    groups = {}
    for rid, r in sorted(runs.items(), key=lambda kv: kv[1]["seed"]):
        groups.setdefault(group_label(r), []).append(r)
    assert set(groups) == {"llava", "fuyu"}

    # Accuracy per variant and subtype: mean ± 95% t interval over the two seeds, and the baselines.
    (acc,) = tables(sec["Accuracy"])
    subtypes = list(next(iter(runs.values()))["eval"])
    assert subtypes[-1] == "all" and len(subtypes) > 2
    rows = {r["variant"]: r for r in acc}
    for label, rs in groups.items():
        row = rows[label]
        assert row["n"] == "2", row
        for st in subtypes:
            cell = row["**all**" if st == "all" else st]
            m, h = interval([100 * r["eval"][st][0] for r in rs])
            shown_m, shown_h, txt_m, txt_h = parse_acc(cell)
            assert txt_h is not None, (label, st, cell)  # two seeds: an interval is given
            assert close(txt_m, m) and close(txt_h, h), (label, st, cell, m, h)
    for which, k in (("*chance*", 1), ("*majority*", 2)):
        row = rows[which]
        for st in subtypes:
            assert close(row["**all**" if st == "all" else st], 100 * next(iter(runs.values()))["eval"][st][k]), \
                (which, st, row)

    # Parameters per component: exact.
    (params,) = tables(sec["Parameters"])
    for row in params:
        p = groups[row["variant"]][0]["params"]
        for col, comp in (("vision", "vision"), ("connector", "connector"), ("LM", "lm"), ("total", "total")):
            assert int(row[col].replace(",", "")) == p[comp], (row, comp, p)
    assert {r["variant"] for r in params} == set(groups)

    # Visual and LM tokens per image at each resolution: exact.
    (tokens,) = tables(sec["Tokens per image"])
    got = {(r["variant"], int(r["resolution (px)"])): (int(r["visual tokens"].replace(",", "")),
                                                       int(r["LM tokens"].replace(",", ""))) for r in tokens}
    want = {(label, res): c for label, rs in groups.items() for res, c in rs[0]["cost"].items()}
    assert got == want, (got, want)
    assert got[("fuyu", 30)][0] < got[("fuyu", 45)][0]  # native resolution: more patches

    # Latency per phase: median (p10–p90) of the raw samples pooled over seeds.
    lat_tables = tables(sec["Latency"])
    lat = lat_tables[0]
    titles = {"preprocess": "preprocess", "vision": "vision encoder", "connector": "connector",
              "lm_prefill": "LM prefill", "prefill": "prefill (all)", "decode": "decode / token"}
    assert len(lat) == 4, lat
    for row in lat:
        rs = groups[row["variant"]]
        res = int(row["resolution (px)"])
        for phase, title in titles.items():
            pooled = np.concatenate([r["latency"][f"{phase}@{res}"] for r in rs])
            m = re.fullmatch(r"([\d.]+) \(([\d.]+)–([\d.]+)\)", row[title])
            assert m, row[title]
            for shown, q in zip(m.groups(), (50, 10, 90)):
                assert close(shown, float(np.percentile(pooled, q))), (row["variant"], res, phase, shown, q)
    train = lat_tables[1]
    for row in train:
        rs = groups[row["variant"]]
        pooled = np.concatenate([v for r in rs for k, v in r["latency"].items() if k.startswith("train_step@")])
        m = re.fullmatch(r"([\d.]+) \(([\d.]+)–([\d.]+)\)", row["training step (ms)"])
        assert m and close(m.group(1), float(np.median(pooled))), row
        assert row["batch"] == "4", row

    # Peak memory by category: the largest over seeds, per phase.
    (mem,) = tables(sec["Memory"])
    cols = {"parameters": "params_bytes", "gradients": "grads_bytes", "optimizer": "optimizer_bytes",
            "activations": "activations_bytes", "KV cache": "kv_cache_bytes", "peak (all)": "peak_bytes",
            "peak RSS": "peak_rss_bytes"}
    phases = set()
    for row in mem:
        rs = groups[row["variant"]]
        phases.add(row["phase"])
        for title, col in cols.items():
            want_b = max(r["memory"][row["phase"]][col] for r in rs)
            num, unit, txt = parse_bytes(row[title])
            assert close(txt, want_b / unit), (row["variant"], row["phase"], title, row[title], want_b)
    assert phases == set(next(iter(runs.values()))["memory"]), phases

    # Every run, with its own accuracy.
    (every,) = tables(sec["All runs"])
    assert {r["run"] for r in every} == set(runs)
    for row in every:
        assert row["status"] == "complete" and close(row["accuracy (%)"], 100 * runs[row["run"]]["eval"]["all"][0])


def test_figures_and_gallery_are_pngs():
    path = results_file()
    out = os.path.join(TMP, "figs")
    md = make_report(path, out)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {os.path.basename(l) for l in links if l.startswith("figures/")} == EXPECTED_FIGURES, links
    gallery = [l for l in links if l.startswith("gallery/")]
    assert len(gallery) == 4, links  # [eval] gallery = 4 items
    for link in links:
        p = os.path.join(out, link)
        assert os.path.isfile(p), link
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC, link
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 20 and img.shape[1] > 20, (link, img.shape)
        assert float(img.std()) > 0.01, link  # not a blank picture
    # The file keeps [eval] gallery = 4 items spread over the 24 eval items (so tasks with many
    # questions per image show several images), each with its eval index.
    runs = file_runs(path)
    for r in runs.values():
        assert [s[4] for s in r["samples"]] == [0, 6, 12, 18], r["samples"]
    # The gallery's rows are those items and each variant's predictions, seed by seed.
    (gal,) = tables(sections(md)["Gallery"])
    by_variant = {}
    for r in sorted(runs.values(), key=lambda r: r["seed"]):
        by_variant.setdefault(r["variant"], []).append(r)
    assert len(gal) == 4, gal
    for k, row in enumerate(gal):
        q, a, _, _, i = by_variant["llava"][0]["samples"][k]
        assert row["question"] == q.replace("<", "&lt;").replace(">", "&gt;"), (row, q)
        assert row["answer"] == f"**{a}**", row
        assert row["image"] == f"![test item {i}](gallery/test_{i}.png)", row
        for variant, rs in by_variant.items():
            kept = [r["samples"][k] for r in rs]
            want = " · ".join(f"{s[2] or '(empty)'} {'✓' if s[3] else '✗'}" for s in kept)
            assert row[variant] == want, (row[variant], want)
    # The images are the test items themselves: `vlmlab sample` redraws them from the task parameters
    # (the same question and answer as stored), and the same item drawn twice gives the same picture.
    r = vlmlab("sample", os.path.join(TMP, "tiny.toml"), "--index", "12", "--split", "test", "--no-caption",
               "--out", os.path.join(TMP, "one"))
    assert r.returncode == 0, r.stderr
    idx, subtype, question, answer, png = r.stdout.rstrip("\n").split("\t")
    assert (question, answer) == by_variant["llava"][0]["samples"][2][:2], r.stdout
    with open(png, "rb") as f1, open(os.path.join(out, "gallery", "test_12.png"), "rb") as f2:
        assert f1.read() == f2.read()


def test_same_file_same_report():
    path = results_file()
    a = make_report(path, os.path.join(TMP, "det1"))
    time.sleep(1.1)  # a clock reading in the report would now differ
    # The same file under another folder and from another working directory.
    moved = os.path.join(TMP, "elsewhere")
    os.makedirs(moved)
    shutil.copy(path, os.path.join(moved, "tiny.h5"))
    b = make_report(os.path.join(moved, "tiny.h5"), os.path.join(TMP, "det2"))
    assert a == b, "two reports of one results file differ"
    for sub in ("figures", "gallery"):
        for name in sorted(os.listdir(os.path.join(TMP, "det1", sub))):
            with open(os.path.join(TMP, "det1", sub, name), "rb") as f1, \
                    open(os.path.join(TMP, "det2", sub, name), "rb") as f2:
                assert f1.read() == f2.read(), f"{sub}/{name} differs between two reports"


def test_failed_run_and_single_seed():
    """A failed run is listed with its error and leaves its variant with n=1 and no interval."""
    src = results_file()
    path = os.path.join(TMP, "with_failure.h5")
    shutil.copy(src, path)
    error = "training diverged: loss is nan at step 3 | made by test_report.py"
    with h5py.File(path, "r+") as f:
        g = f["runs/fuyu-s2"]
        g.attrs["status"] = "failed"
        g.attrs["error"] = error
        for name in ("eval", "latency", "memory", "cost", "samples"):  # what a run failing in training lacks
            dtype = g[name].dtype
            del g[name]
            g.create_dataset(name, data=np.empty(0, dtype=dtype))
        del g["latency_samples"]
        summary = f["summary"][()]
        summary["status"][[s_(x) == "fuyu-s2" for x in summary["run_id"]]] = b"failed"
        del f["summary"]
        f.create_dataset("summary", data=summary)
    md = make_report(path, os.path.join(TMP, "failed"))
    sec = sections(md)
    (failed,) = tables(sec["Failed runs"])
    assert failed == [{"run": "fuyu-s2", "family": "fuyu", "seed": "2", "error": error}], failed
    assert "4 run(s): 3 complete, 1 failed" in sec["What was run"]
    (acc,) = tables(sec["Accuracy"])
    row = next(r for r in acc if r["variant"] == "fuyu")
    assert row["n"] == "1" and "±" not in "".join(row.values()), row
    runs = file_runs(src)
    assert close(row["**all**"], 100 * runs["fuyu-s1"]["eval"]["all"][0]), row
    assert "n=1 (one completed seed, no interval): fuyu" in sec["Accuracy"]
    # Without failures the section says so.
    clean = make_report(src, os.path.join(TMP, "clean"))
    assert "None: every run completed." in sections(clean)["Failed runs"]


def test_interval_on_known_numbers():
    """Accuracies set by hand (so the check does not rest on the tiny runs' seeds disagreeing):
    0.2 and 0.6 give 40.0 ± 12.706 * 0.2828 / sqrt(2) * 100 = 40.0 ± 254.1."""
    path = os.path.join(TMP, "known.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        for rid, value in (("llava-s1", 0.2), ("llava-s2", 0.6)):
            ev = f[f"runs/{rid}/eval"][()]
            ev["accuracy"][[s_(x) == "all" for x in ev["subtype"]]] = value
            f[f"runs/{rid}/eval"][...] = ev
    (acc,) = tables(sections(make_report(path, os.path.join(TMP, "known")))["Accuracy"])
    row = next(r for r in acc if r["variant"] == "llava")
    assert row["**all**"] == "40.0 ± 254.1", row


def test_learning_curves_and_steps_to_threshold():
    """The Training section reads each run's validation curve: the final validation accuracy over seeds, and
    the first step reaching [eval] threshold x the run's own final, here set by hand."""
    path = os.path.join(TMP, "curves.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        for rid, accs in (("llava-s1", [0.0, 0.5, 0.6, 1.0]), ("llava-s2", [0.0, 0.2, 0.45, 0.5])):
            c = f[f"runs/{rid}/curve"][()]
            assert c["step"].tolist() == [0, 3, 6, 8], c  # before training, every 3 steps, after the last
            c["accuracy"] = accs
            f[f"runs/{rid}/curve"][...] = c
            f[f"runs/{rid}/curve"].attrs["threshold"] = 0.9
    md = make_report(path, os.path.join(TMP, "curves"))
    assert "![Learning curves](figures/learning_curves.png)" in md
    (curves, *_rest) = tables(sections(md)["Training"])
    row = next(r for r in curves if r["variant"] == "llava")
    # Finals 1.0 and 0.5: mean 75.0 ± 12.706 * 0.3536 / sqrt(2) * 100. Thresholds 0.9 and 0.45: first
    # reached at steps 8 and 6 of [0, 3, 6, 8] (mean 7 ± 12.706 * 1.414 / sqrt(2)).
    assert row["final validation accuracy (%)"] == "75.0 ± 317.7", row
    assert row["steps to 90% of final"] == "7 ± 13", row
    assert "Validation split (never the test split)" in sections(md)["Training"]


def test_at_a_glance_names_variants_at_the_prior():
    """When the best variant beats the majority answer, the variants that do not are named."""
    path = os.path.join(TMP, "prior.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        for rid in f["runs"]:
            ev = f[f"runs/{rid}/eval"][()]
            at_all = [s_(x) == "all" for x in ev["subtype"]]
            majority = float(ev["majority"][at_all][0])
            ev["accuracy"][at_all] = min(1.0, majority + 0.2) if rid.startswith("fuyu") else majority
            f[f"runs/{rid}/eval"][...] = ev
    glance = sections(make_report(path, os.path.join(TMP, "prior")))["At a glance"]
    assert "- Most accurate: **fuyu**" in glance, glance
    assert "- Not above the majority answer (mean over seeds): llava." in glance, glance
    assert "No variant beats" not in glance, glance


def test_subtypes_not_asked():
    """A subtype no run was asked (a task restricted by `questions`) has no column, not a 0.0 one; a
    subtype only some variants were asked shows "–" for the others."""
    path = os.path.join(TMP, "not_asked.h5")
    shutil.copy(results_file(), path)
    with h5py.File(path, "r+") as f:
        for rid in f["runs"]:
            ev = f[f"runs/{rid}/eval"][()]
            gone = [s_(x) == "shape" or (s_(x) == "count" and rid.startswith("llava")) for x in ev["subtype"]]
            for col in ("n", "correct", "accuracy", "majority"):
                ev[col][gone] = 0
            f[f"runs/{rid}/eval"][...] = ev
    (acc,) = tables(sections(make_report(path, os.path.join(TMP, "not_asked")))["Accuracy"])
    assert "shape" not in acc[0], acc[0]
    assert next(r for r in acc if r["variant"] == "llava")["count"] == "–", acc
    assert next(r for r in acc if r["variant"] == "fuyu")["count"] != "–", acc


def test_sample_draws_distinct_captioned_images():
    """`vlmlab sample --count 3` on Sort-of-CLEVR (20 questions per scene) draws three different scenes,
    each with its question and answer written under the images (dark text on the grey ground)."""
    toml = os.path.join(TMP, "tiny.toml")
    results_file()  # writes tiny.toml
    r = vlmlab("sample", toml, "--count", "3", "--out", os.path.join(TMP, "three"))
    assert r.returncode == 0, r.stderr
    lines = [l.split("\t") for l in r.stdout.splitlines()]
    assert len(lines) == 3, r.stdout
    assert [int(l[0]) for l in lines] != [0, 1, 2], r.stdout  # indices 0-19 share one scene
    pictures = [matplotlib.image.imread(l[4]) for l in lines]
    plain = []
    for l in lines:
        r = vlmlab("sample", toml, "--index", l[0], "--no-caption", "--out", os.path.join(TMP, "plain"))
        assert r.returncode == 0, r.stderr
        plain.append(matplotlib.image.imread(r.stdout.split("\t")[4].strip()))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert plain[a].shape != plain[b].shape or not np.array_equal(plain[a], plain[b]), (a, b)
    for pic, bare in zip(pictures, plain):
        assert pic.shape[0] >= bare.shape[0] + 2 * 10, (pic.shape, bare.shape)  # two caption lines at least
        # The images are the same pixels, the caption below them has dark (text) pixels.
        assert np.array_equal(pic[4:bare.shape[0] - 4, 4:bare.shape[1] - 4], bare[4:-4, 4:-4])
        caption = pic[bare.shape[0]:, :, :3]
        assert (caption.max(axis=2) < 0.2).sum() > 50, "no text under the picture"


def sweep_file():
    """A results file with a sweep over the learning rate (two values, one seed): the report plots the
    headline metric against it."""
    toml = os.path.join(TMP, "sweep.toml")
    with open(toml, "w") as f:
        f.write(TINY.replace("seeds = [1, 2]", "seeds = [1]").replace('name = "tiny_report"', 'name = "sweep"')
                .replace("[measure]", "[sweep]\n\"train.lr\" = [1e-3, 4e-3]\n\n[measure]"))
    path = os.path.join(TMP, "sweep.h5")
    r = vlmlab("run", toml, "--out", path, "--quiet")
    assert r.returncode == 0, r.stderr
    return path


def test_sweep_and_single_seed_figures():
    """A sweep gets a figure of the headline metric against the swept value; one seed per variant is
    not called a band in the figures' titles (checked in the text the report gives them: the PNGs are
    checked for being pictures)."""
    md = make_report(sweep_file(), os.path.join(TMP, "sweep_report"))
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    assert "figures/sweep_train_lr.png" in links, links
    img = matplotlib.image.imread(os.path.join(TMP, "sweep_report", "figures", "sweep_train_lr.png"))
    assert float(img.std()) > 0.01
    assert "The headline metric against the swept value `train.lr`" in md
    assert "**Headline metric: exact-match accuracy.**" in md
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
    import report as rp  # noqa: E402  the titles' wording, from the grouping the report makes
    _, _, _, groups = rp.load(os.path.join(TMP, "sweep.h5"))
    assert rp.seeds_phrase(groups) == "one seed per variant (no band)"
    _, _, _, groups = rp.load(results_file())
    assert rp.seeds_phrase(groups) == "mean over seeds, band = min–max over seeds"


def test_stage_boundaries_marked():
    """The loss figure marks where a staged run's next stage begins: the steps where /train's stage
    column changes (here set by hand), drawn between the last step of one stage and the first of the next."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
    import report as rp  # noqa: E402

    class R:
        def __init__(self, stage):
            self.train = {"step": list(range(len(stage))), "stage": stage}
    assert rp.stage_ends([R([0, 0, 0, 1, 1, 2]), R([0, 0, 0, 1, 1, 1])]) == [3, 5]
    assert rp.stage_ends([R([0, 0, 0])]) == []


def test_task_metrics_section():
    """An ocr run's character error rate and per-character accuracy, with their baselines, in their own
    section and as the headline; numbers as in the file's /runs/<id>/metrics."""
    toml = os.path.join(TMP, "ocr.toml")
    with open(toml, "w") as f:
        f.write(TINY.replace('name = "sort_of_clevr"\nimage_size = 30', 'name = "ocr"\nmax_aspect = 4')
                .replace('name = "tiny_report"', 'name = "ocr_report"').replace("resolutions = [30, 45]",
                                                                                "resolutions = [30]"))
    path = os.path.join(TMP, "ocr.h5")
    r = vlmlab("run", toml, "--out", path, "--quiet")
    assert r.returncode == 0, r.stderr
    md = make_report(path, os.path.join(TMP, "ocr_report"))
    assert "**Headline metric: character error rate** (lower is better)" in md, md[:2000]
    sec = sections(md)
    assert "Best by character error rate (the headline)" in sec["At a glance"], sec["At a glance"]
    (tm,) = tables(sec["Task metrics"])
    with h5py.File(path, "r") as f:
        for variant in ("llava", "fuyu"):
            vals = {}
            for rid in f["runs"]:
                if f["runs"][rid].attrs["variant"] != variant:
                    continue
                for m in f["runs"][rid]["metrics"][()]:
                    vals.setdefault((s_(m["metric"]), s_(m["subtype"])), []).append(float(m["value"]))
            row = next(x for x in tm if x["variant"] == variant)
            m, h = interval(vals[("cer", "all")])
            shown, half, _, _ = parse_acc(row["character error rate: **all**"])
            assert abs(shown - 100 * m) <= 0.05 + 1e-9 and abs(half - 100 * h) <= 0.05 + 1e-9, (row, m, h)
        base = next(x for x in tm if x["variant"].startswith("*baseline*"))
        b = float(next(m for m in f["runs"]["llava-s1"]["metrics"][()]
                       if s_(m["metric"]) == "cer" and s_(m["subtype"]) == "all")["baseline"])
        assert close(base["character error rate: **all**"], 100 * b), (base, b)


# ---- the study sections (scripts/report_study.py), on made-up runs whose answers are known

class FakeRun:
    """What the study sections read from a run: its eval rows, its validation curve, FLOPs per step."""
    complete = True

    def __init__(self, eval_rows, curve=None, flops_per_step=1e9, val_samples=100, seed=0, stages=(), tokens=None):
        self.resolved_config = f"[eval]\nval_samples = {val_samples}\n"
        self.seed = seed
        self.stages = list(stages)
        self.cost = [] if tokens is None else [dict(resolution=90, visual_tokens=tokens)]
        self.eval = [dict(subtype=s, n=n, correct=c, accuracy=c / n if n else 0.0, majority=maj)
                     for s, n, c, maj in eval_rows]
        self.final_curve = curve or {}
        self.flops_per_step = flops_per_step

    def accuracy(self, subtype="all"):
        return next((float(e["accuracy"]) for e in self.eval if e["subtype"] == subtype), float("nan"))


def fake_group(rp, variant, runs, family=None, sweep=""):
    g = rp.Group(variant, family or variant, sweep)
    g.runs.extend(runs)
    return g


def study_modules():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
    import report as rp  # noqa: E402
    import report_study as st  # noqa: E402
    return rp, st


def soc_rows(nonrel, rel, n=100, maj=0.5):
    """Sort-of-CLEVR eval rows: each non-relational subtype answered `nonrel` of n, each relational `rel`."""
    rows = [(s, n, round(nonrel * n), maj) for s in ("shape", "horizontal", "vertical")]
    rows += [(s, n, round(rel * n), maj) for s in ("closest", "furthest", "count")]
    return rows


def test_relational_verdicts():
    """Each rule of the relational section's verdict, on runs built to meet it, and the gap's interval."""
    rp, st = study_modules()
    seeds = (0.0, 0.02, 0.04)
    groups = [
        fake_group(rp, "mlp_like", [FakeRun(soc_rows(0.9 + d, 0.5 + d / 2)) for d in seeds]),
        fake_group(rp, "rn_like", [FakeRun(soc_rows(0.9 + d, 0.9 - d)) for d in seeds]),
        fake_group(rp, "between", [FakeRun(soc_rows(0.95 + d, 0.7 + d)) for d in seeds]),
        fake_group(rp, "neither", [FakeRun(soc_rows(0.5 + d - 0.02, 0.5)) for d in seeds]),
    ]
    md = "\n".join(st.relational_section(groups, "sort_of_clevr"))
    assert "- mlp_like: like the CNN + MLP" in md, md
    assert "- rn_like: like the RN" in md, md
    assert "- between: in between" in md, md
    assert "- neither: neither" in md, md
    # mlp_like's gap per seed: 0.40, 0.41, 0.42 -> mean 41.0 points, interval t(0.975, 2) * 0.01 / sqrt(3)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert f"+41.0 ± {100 * half:.1f}" in md, md
    assert "The RN's pattern appears in rn_like" in md and "the CNN + MLP's in mlp_like" in md
    assert st.relational_section(groups, "counting") == []  # a task without relational subtypes: no section


def test_selection_picks_best_final_validation():
    """The grid's pick per variant is its best final validation accuracy (not its best point on the curve,
    not the test split), shown in bold and as a `set` table; variants of one family are compared."""
    rp, st = study_modules()

    def curve(final, peak):
        return {"step": [0, 50, 100], "accuracy": [0.5, peak, final], "train_flops": [0.0, 5e10, 1e11]}

    def run(final, peak, test):
        return FakeRun([("all", 100, round(100 * test), 0.5)], curve(final, peak))
    groups = [
        fake_group(rp, "a", [run(0.60, 0.95, 0.99)], "fam", "train.lr=0.001"),
        fake_group(rp, "a", [run(0.70, 0.70, 0.10)], "fam", "train.lr=0.002"),
        fake_group(rp, "a-hf", [run(0.65, 0.65, 0.50)], "fam", "train.lr=0.001"),
        fake_group(rp, "a-hf", [run(0.55, 0.55, 0.50)], "fam", "train.lr=0.002"),
        fake_group(rp, "b", [run(0.60, 0.60, 0.50)], "other", "train.lr=0.001"),
        fake_group(rp, "b", [run(0.62, 0.62, 0.50)], "other", "train.lr=0.002"),
    ]
    md = "\n".join(st.selection_section(groups))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.splitlines() if line.startswith("| lr=")}
    assert rows["lr=0.001"] == ["60.0", "**65.0**", "60.0"], rows
    assert rows["lr=0.002"] == ["**70.0**", "55.0", "**62.0**"], rows
    # 10 points clear a's and a-hf's next best by more than a 100-item score's 95% half-width (about 9);
    # b's 2 points do not: its pick is flagged as noise.
    half = 100 * 1.96 * math.sqrt(0.62 * 0.38 / 100)
    assert f"b's pick is 2.0 points above its next best point, within one validation score's binomial 95% " \
           f"half-width (±{half:.1f} on 100 items)" in md, md
    assert "a's pick" not in md and "a-hf's pick" not in md, md
    assert '# a: 70.0% on validation\nset = { "train.lr" = 0.002 }' in md, md
    assert '# a-hf: 65.0% on validation\nset = { "train.lr" = 0.001 }' in md, md
    assert "| fam | a-hf | 65.0 | -5.0 |" in md, md
    assert st.selection_section([fake_group(rp, "x", [run(0.6, 0.6, 0.6)])]) == []  # no sweep: no section


def test_finish_compute_and_majority_sections():
    """Last-quarter gain and its verdict, accuracy read at the cheapest variant's compute, and the list of
    subtypes whose interval reaches the majority rate with their curve's evidence."""
    rp, st = study_modules()

    def run(accs, flops_per_step, sub_correct):
        steps = [0, 25, 50, 75, 100]
        c = {"step": steps, "accuracy": accs, "train_flops": [s * flops_per_step for s in steps],
             "accuracy_shape": [0.5, 0.5, 0.5, 0.5, 0.5]}
        return FakeRun([("shape", 100, sub_correct, 0.55), ("all", 100, 80, 0.5)], c, flops_per_step)
    rising = fake_group(rp, "rising", [run([0.5, 0.6, 0.7, 0.8, 0.9 + d], 1e9, 54 + k)
                                       for k, d in enumerate((0.0, 0.01, 0.02))])
    flat = fake_group(rp, "flat", [run([0.5, 0.8, 0.85, 0.95, 0.95 + d], 2e9, 90)
                                   for d in (-0.01, 0.0, 0.01)])
    md = "\n".join(st.finish_section([rising, flat]))
    assert re.search(r"\| rising \| 3 \| [0-9. ±]+ \| \+11\.0 ± [0-9.]+ \| rising \|", md), md
    assert "| flat | 3 |" in md and "flat (interval includes 0)" in md, md
    md = "\n".join(st.compute_section([rising, flat]))
    # The cheapest spends 100 steps x 1 GFLOP; flat reaches that at its step 50: 85%. flat ends higher
    # (95 vs 91), so the two axes order them differently.
    assert "validation accuracy at 100 GFLOP" in md, md
    assert re.search(r"\| flat \| 2 GFLOP \| 200 GFLOP \| 95\.0 ± [0-9.]+ \| 85\.0 ± 0\.0 \|", md), md
    assert "Order at equal steps: flat, rising; at equal compute: rising, flat" in md, md
    assert "a different order" in md, md
    md = "\n".join(st.majority_section([rising, flat]))
    assert "| rising | shape | 55.0 ±" in md, md  # 54, 55, 56 of 100 against a 55% majority
    assert "| flat | shape" not in md, md
    assert "validation: 50.0 before training, 50.0 over the second half, best point 50.0" in md, md


def test_backbones_verdicts():
    """Frozen vs trained backbones: each arm's per-seed difference (cross-attention minus fully
    autoregressive) and its verdict against Idefics2, and the flip between the arms."""
    rp, st = study_modules()
    frozen = [dict(stage=0, frozen_params=100), dict(stage=1, frozen_params=100)]
    trained = [dict(stage=0, frozen_params=100), dict(stage=1, frozen_params=0)]

    def arm(variant, family, stages, accs):
        return fake_group(rp, variant, [FakeRun([("all", 1000, round(1000 * a), 0.3)], seed=s, stages=stages)
                                        for s, a in enumerate(accs)], family=family)
    # Frozen: flamingo 10, 11, 12 points ahead seed by seed (although the seeds' spread is larger);
    # trained: the differences +2, -2, 0 (interval includes 0).
    groups = [arm("llava_frozen", "llava", frozen, [0.40, 0.50, 0.60]),
              arm("flamingo_frozen", "flamingo", frozen, [0.50, 0.61, 0.72]),
              arm("llava_trained", "llava", trained, [0.70, 0.72, 0.74]),
              arm("flamingo_trained", "flamingo", trained, [0.72, 0.70, 0.74])]
    md = "\n".join(st.backbones_section(groups))
    assert "## Frozen and trained backbones" in md, md
    assert re.search(r"\| frozen \| flamingo_frozen \| 61\.0 ± [0-9.]+ \| llava_frozen \| 50\.0 ± [0-9.]+ \| "
                     r"\+11\.0 ± 2\.5 \| 66\.7 vs 60\.3 \(\+6\.4\) \|", md), md
    assert "- frozen: reproduces: cross-attention ahead by 11.0 points" in md, md
    assert "- trained: not separated" in md, md
    assert "67.3 vs 69.5 (-2.2)" in md, md
    # The flip: frozen minus trained differences per seed, 8, 13, 12: above 0.
    assert "was +8.6 points there; here +11.0 ± " in md and "it does (interval excludes 0)" in md, md
    # The trained arm reversed: llava behind by 5 points on every seed.
    groups[3] = arm("flamingo_trained", "flamingo", trained, [0.75, 0.77, 0.79])
    md = "\n".join(st.backbones_section(groups))
    assert "- trained: reversed: cross-attention ahead by 5.0 points (interval excludes 0); Idefics2 had fully " \
           "autoregressive ahead by 2.2" in md, md
    # Runs without stages (no backbone given first) make no section.
    plain = [arm(g.variant, g.family, [], [0.5, 0.6, 0.7]) for g in groups]
    assert st.backbones_section(plain) == []


def test_tokens_verdicts():
    """Visual tokens against the connector: the token effect within each family (paired by seed), the
    differences between families at about the same token count, and the MM1 verdict by its rules."""
    rp, st = study_modules()

    def g(variant, family, tokens, accs):
        return fake_group(rp, variant, [FakeRun([("all", 1000, round(1000 * a), 0.3)], seed=s, tokens=tokens)
                                        for s, a in enumerate(accs)], family=family)
    # llava: 64 tokens beat 16 by 10 points on every seed; flamingo: 32 vs 8 latents, +1, -1, 0.
    # At 32-36 tokens llava, flamingo and qwen2vl differ by 0-2 points with seed noise.
    groups = [g("llava_60px", "llava", 16, [0.60, 0.62, 0.64]), g("llava", "llava", 36, [0.66, 0.70, 0.68]),
              g("llava_120px", "llava", 64, [0.70, 0.72, 0.74]),
              g("flamingo_lat8", "flamingo", 8, [0.55, 0.57, 0.56]), g("flamingo_lat32", "flamingo", 32, [0.56, 0.56, 0.56]),
              g("qwen2vl", "qwen2vl", 36, [0.70, 0.66, 0.69])]
    md = "\n".join(st.tokens_section(groups))
    assert "## Visual tokens and connectors" in md, md
    assert "| llava_120px | llava | MLP projector | 64 | 72.0 ± " in md, md
    assert "- llava: llava_120px (64) minus llava_60px (16): +10.0 ± 0.0 points: more tokens help." in md, md
    assert re.search(r"- flamingo: flamingo_lat32 \(32\) minus flamingo_lat8 \(8\): \+0\.0 ± [0-9.]+ points: not "
                     r"separated", md), md
    # 36 and 32 are within 25% of each other; 64 and 36 are not.
    assert "- llava (36) minus qwen2vl (36): -0.3 ± " in md and "- llava (36) minus flamingo_lat32 (32): +12.0 ± " in md, md
    assert "llava_120px (64) minus qwen2vl" not in md, md
    # llava vs flamingo at 36 / 32 separates (12 points on every seed, give or take 2): both matter.
    assert "**Do tokens matter more than the connector (MM1)?** both matter here" in md, md
    # Without flamingo, only llava vs qwen2vl at 36 remains, not separated: tokens matter more.
    md = "\n".join(st.tokens_section([x for x in groups if x.family != "flamingo"]))
    assert "yes: a token count separates within a connector, and no two connectors separate" in md, md
    # One token count per family: no section.
    assert st.tokens_section([groups[1], groups[5]]) == []


TESTS = [test_cli_errors_and_default_out, test_what_was_run, test_tables_match_the_file,
         test_figures_and_gallery_are_pngs, test_same_file_same_report, test_failed_run_and_single_seed,
         test_interval_on_known_numbers, test_learning_curves_and_steps_to_threshold,
         test_at_a_glance_names_variants_at_the_prior, test_subtypes_not_asked,
         test_runs_measured_elsewhere, test_runs_made_by_another_build,
         test_sample_draws_distinct_captioned_images, test_sweep_and_single_seed_figures, test_task_metrics_section,
         test_stage_boundaries_marked, test_relational_verdicts, test_selection_picks_best_final_validation,
         test_finish_compute_and_majority_sections, test_backbones_verdicts,
         test_tokens_verdicts]

if __name__ == "__main__":
    run_tests(TESTS, TMP, sys.argv[2:])
