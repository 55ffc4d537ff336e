"""The comparison report: one markdown page and its figures from a vlmlab results file (HDF5 schema 1,
docs/results.md).

    report.py RESULTS.h5 --out DIR [--vlmlab BINARY]

`vlmlab report` runs this with Debian's /usr/bin/python3 (h5py, numpy, matplotlib) after checking the
file. It writes DIR/report.md, DIR/figures/*.png and, given the vlmlab binary, DIR/gallery/*.png: the
first test items redrawn with `vlmlab sample` from the runs' own task parameters (tasks are pure
functions of their parameters, so these are the images the runs saw; each redrawn item's question and
answer are checked against the ones stored in the file).

The same results file always gives the same report: nothing depends on the clock, the path the file
was given by, or the order runs were completed in, and the PNGs carry no software or date metadata.

Statistics: accuracy per variant is the mean over seeds with a 95% confidence interval from the
t-distribution (mean ± t(0.975, n-1) * s / sqrt(n), s the sample standard deviation); with one seed
the report says n=1 and gives no interval. Latencies pool the raw samples of every seed and give the
median and the 10th-90th percentiles (linear interpolation, as the runner's).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import tomllib

import h5py
import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

import report_study  # noqa: E402
from report_common import (fmt_acc, fmt_bytes, fmt_flops, fmt_int, fmt_ms, fmt_pct, fmt_spread,  # noqa: E402
                           md_escape, md_table, mean_ci, pct, save, short_sweep)

PHASES = ["preprocess", "vision", "connector", "lm_prefill", "prefill", "decode"]
PHASE_TITLES = {"preprocess": "preprocess", "vision": "vision encoder", "connector": "connector",
                "lm_prefill": "LM prefill", "prefill": "prefill (all)", "decode": "decode / token"}
MEMORY_COLUMNS = [("params_bytes", "parameters"), ("grads_bytes", "gradients"), ("optimizer_bytes", "optimizer"),
                  ("activations_bytes", "activations"), ("kv_cache_bytes", "KV cache"),
                  ("peak_bytes", "peak (all)"), ("peak_rss_bytes", "peak RSS")]
FAMILY_MARKERS = {"llava": "o", "flamingo": "s", "fuyu": "^", "qwen2vl": "D"}
# Task metrics (lib/data/metrics.h): the first a task names is its headline.
METRIC_TITLES = {"exact_match": "exact-match accuracy", "cer": "character error rate",
                 "char_accuracy": "per-character accuracy", "mae": "mean absolute error"}
LOWER_IS_BETTER = {"cer", "mae"}
PERCENT_METRICS = {"exact_match", "cer", "char_accuracy"}
BASELINE_TITLES = {"majority": "majority answer", "majority_string": "positional majority string",
                   "median_answer": "median answer"}
GALLERY_ITEMS = 6



# ---------------------------------------------------------------------------------------------
# Reading the file

def s_(x):
    if isinstance(x, bytes):
        return x.decode("utf-8")
    if isinstance(x, np.bytes_):
        return bytes(x).decode("utf-8")
    return x if isinstance(x, str) else str(x)


def read_table(group, name):
    """A compound dataset as {column: list}, strings decoded; {} when absent."""
    if name not in group:
        return {}
    data = group[name][()]
    if data.dtype.names is None:
        return {}
    out = {}
    for col in data.dtype.names:
        vals = data[col].tolist()
        out[col] = [s_(v) if isinstance(v, (bytes, np.bytes_)) else v for v in vals]
    return out


def rows_of(table):
    cols = list(table)
    n = len(table[cols[0]]) if cols else 0
    return [{c: table[c][i] for c in cols} for i in range(n)]


class Run:
    def __init__(self, run_id, g):
        a = g.attrs
        self.id = run_id
        self.family = s_(a.get("family", ""))
        self.variant = s_(a.get("variant", ""))
        self.seed = int(a.get("seed", 0))
        self.status = s_(a.get("status", "failed"))
        self.error = s_(a.get("error", ""))
        self.sweep = s_(a.get("sweep", ""))
        self.resolved_config = s_(a.get("resolved_config", ""))
        self.wall_s = float(a.get("wall_s", float("nan")))
        self.threads = int(a.get("threads", 0))
        self.cpu = s_(a.get("cpu", ""))  # files before this attribute: the root's machine
        self.cores = int(a.get("cores", 0))
        self.git_commit = s_(a.get("git_commit", ""))  # files before this attribute: the root's build
        self.flops_per_step = float(a.get("train_flops_per_step", 0.0))
        self.flops_per_sample = float(a.get("train_flops_per_sample", 0.0))
        self.params = dict(zip(*[read_table(g, "params").get(c, []) for c in ("component", "count")]))
        self.train = read_table(g, "train")
        self.curve = read_table(g, "curve")  # validation accuracy during training ({} in older files)
        self.stages = rows_of(read_table(g, "stages"))  # one row per stage ([] in older files)
        # The last stage's points: the question task the run is scored on (a staged run's earlier stages
        # score their own tasks; stage_curves.png draws those).
        last = max(self.curve.get("stage", [0]) or [0])
        keep = [i for i, st in enumerate(self.curve.get("stage", [])) if st == last]
        self.final_curve = ({k: [v[i] for i in keep] for k, v in self.curve.items()} if "stage" in self.curve
                            else self.curve)
        self.threshold = float(g["curve"].attrs.get("threshold", 0.9)) if "curve" in g else 0.9
        self.eval = rows_of(read_table(g, "eval"))
        # Files before the three splits scored a stream called eval, which also chose the settings.
        self.eval_split = s_(g["eval"].attrs.get("split", "eval")) if "eval" in g else "eval"
        self.latency = rows_of(read_table(g, "latency"))
        self.memory = rows_of(read_table(g, "memory"))
        self.cost = rows_of(read_table(g, "cost"))
        self.samples = rows_of(read_table(g, "samples"))
        # The task's metrics beside exact match and the one its headline uses ([] / exact match in older files).
        self.metrics = rows_of(read_table(g, "metrics"))
        self.headline = s_(g["metrics"].attrs.get("headline", "exact_match")) if "metrics" in g else "exact_match"
        for i, row in enumerate(self.samples):  # files before the `index` column kept the first items
            row.setdefault("index", i)
        self.latency_samples = {}
        if "latency_samples" in g:
            for name, ds in g["latency_samples"].items():
                self.latency_samples[name] = [float(v) for v in ds[()]]
        try:
            self.task = tomllib.loads(self.resolved_config).get("task", {})
        except tomllib.TOMLDecodeError:
            self.task = {}

    @property
    def complete(self):
        return self.status == "complete"

    def accuracy(self, subtype="all"):
        for r in self.eval:
            if r["subtype"] == subtype:
                return float(r["accuracy"])
        return float("nan")

    def metric(self, name, subtype="all", column="value"):
        """A task metric's value (or its baseline, column="baseline"); exact match reads the eval table."""
        if name == "exact_match":
            return self.accuracy(subtype) if column == "value" else next(
                (float(r["majority"]) for r in self.eval if r["subtype"] == subtype), float("nan"))
        for r in self.metrics:
            if r["metric"] == name and r["subtype"] == subtype:
                return float(r[column])
        return float("nan")


def natural_key(sweep):
    key = []
    for p in sweep.split(";"):
        k, _, v = p.partition("=")
        try:
            key.append((k, 0, float(v), ""))
        except ValueError:
            key.append((k, 1, 0.0, v))
    return key


class Group:
    """The runs of one variant at one sweep point: its seeds."""

    def __init__(self, variant, family, sweep):
        self.variant, self.family, self.sweep = variant, family, sweep
        self.runs = []

    @property
    def label(self):
        return self.variant + (f" ({short_sweep(self.sweep)})" if self.sweep else "")

    @property
    def done(self):
        return [r for r in self.runs if r.complete]


def load(path):
    with h5py.File(path, "r") as f:
        meta = {k: (s_(v) if isinstance(v, (bytes, str, np.bytes_)) else v.item() if hasattr(v, "item") else v)
                for k, v in f.attrs.items()}
        runs = [Run(rid, f["runs"][rid]) for rid in sorted(f["runs"].keys())] if "runs" in f else []
    try:
        exp = tomllib.loads(meta.get("experiment_toml", ""))
    except tomllib.TOMLDecodeError:
        exp = {}
    # Variants in the experiment's order, then sweep points in natural order, then seeds.
    order = [v.get("name", v.get("family", "")) for v in exp.get("variant", []) if isinstance(v, dict)]
    def vindex(name):
        return (order.index(name), "") if name in order else (len(order), name)
    runs.sort(key=lambda r: (vindex(r.variant), natural_key(r.sweep), r.seed, r.id))
    groups = {}
    for r in runs:
        key = (r.variant, r.sweep)
        if key not in groups:
            groups[key] = Group(r.variant, r.family, r.sweep)
        groups[key].runs.append(r)
    return meta, exp, runs, list(groups.values())


# ---------------------------------------------------------------------------------------------
# Figures

def group_styles(groups):
    """Colour per variant, marker per family; markers shrink and line styles change along the list, so
    variants with the same numbers (fuyu's and qwen2vl's token counts) still show one inside the other."""
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    dashes = ["-", "--", "-.", ":"]
    return {id(g): dict(color=cmap(i % cmap.N), marker=FAMILY_MARKERS.get(g.family, "o"),
                        ms=max(5.0, 10.0 - 1.2 * i), ls=dashes[i % len(dashes)])
            for i, g in enumerate(groups)}


def spread_wide(values):
    """Whether positive values span enough to want a log axis."""
    v = [x for x in values if x is not None and x == x and x > 0]
    return bool(v) and max(v) / min(v) > 20


def legend_below(fig, axes, ncol):
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


def baseline_lines(ax, chance, majority):
    if chance is not None:
        ax.axhline(100 * chance, color="0.45", linestyle=":", linewidth=1.2, label=f"chance ({100 * chance:.1f}%)")
    if majority is not None:
        ax.axhline(100 * majority, color="0.45", linestyle="--", linewidth=1.2,
                   label=f"majority ({100 * majority:.1f}%)")


def fig_accuracy_vs(out_dir, name, groups, styles, xs, xlabel, title, baselines, eng=False):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for g, x in zip(groups, xs):
        if x is None:
            continue
        m, h, n = mean_ci([r.accuracy() for r in g.done])
        st = styles[id(g)]
        ax.errorbar([x], [100 * m], yerr=None if h is None else [[100 * h], [100 * h]], fmt=st["marker"],
                    color=st["color"], markersize=st["ms"], capsize=4, elinewidth=1.2, alpha=0.9,
                    label=f"{g.label} (n={n})")
    baseline_lines(ax, *baselines)
    if spread_wide(xs):
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0, right=1.08 * max(x for x in xs if x is not None))
    if eng:  # 150k, 1.2M
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylim(-3, 103)  # accuracy's range; wider intervals (few seeds) run off the axes
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy, all questions (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save(fig, out_dir, name)


def latency_of(g, phase, res):
    """Pooled raw samples of every complete seed."""
    pooled = []
    for r in g.done:
        pooled += r.latency_samples.get(f"{phase}@{res}", [])
    return pooled


def resolutions_of(g):
    res = []
    for r in g.done:
        for c in r.cost:
            if int(c["resolution"]) not in res:
                res.append(int(c["resolution"]))
    return res


def cost_of(g, res):
    for r in g.done:
        for c in r.cost:
            if int(c["resolution"]) == res:
                return c
    return None


def memory_of(g):
    """phase -> {column: max over complete seeds}, phases in the runs' order."""
    out = {}
    for r in g.done:
        for m in r.memory:
            row = out.setdefault(m["phase"], {})
            for col, _ in MEMORY_COLUMNS:
                row[col] = max(row.get(col, 0), int(m[col]))
    return out


def fig_tokens_latency(out_dir, groups, styles):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lows, highs = [], []
    for g in groups:
        res = resolutions_of(g)
        if not res:
            continue
        st = styles[id(g)]
        vt = [int(cost_of(g, r)["visual_tokens"]) for r in res]
        axes[0].plot(res, vt, marker=st["marker"], ms=st["ms"], ls=st["ls"], color=st["color"], label=g.label)
        med, lo, hi = [], [], []
        for r in res:
            s = latency_of(g, "prefill", r)
            med.append(pct(s, 50))
            lo.append(pct(s, 50) - pct(s, 10))
            hi.append(pct(s, 90) - pct(s, 50))
        axes[1].errorbar(res, med, yerr=[lo, hi], marker=st["marker"], ms=st["ms"], ls=st["ls"], color=st["color"],
                         capsize=3, label=g.label)
        lows.append(min(m - l for m, l in zip(med, lo)))
        highs.append(max(m + h for m, h in zip(med, hi)))
    axes[0].set_title("visual tokens per image")
    axes[0].set_ylabel("visual tokens")
    axes[1].set_title("prefill latency, batch 1 (median, p10–p90)")
    axes[1].set_ylabel("prefill latency (ms)")
    for ax in axes:
        ax.set_xlabel("image resolution (px, square)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylim(bottom=0)
    if lows and spread_wide([min(lows), max(highs)]):  # noisy timings: keep the medians readable
        axes[1].set_yscale("log")
    else:
        axes[1].set_ylim(bottom=0)
    legend_below(fig, axes, min(4, len(groups)))
    fig.tight_layout()
    return save(fig, out_dir, "tokens_latency_vs_resolution.png")


def fig_memory(out_dir, groups, styles):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for g in groups:
        res = resolutions_of(g)
        mem = memory_of(g)
        if not res:
            continue
        st = styles[id(g)]
        for ax, phase in zip(axes, ("prefill", "decode")):
            ys = [mem.get(f"{phase}@{r}", {}).get("peak_bytes", float("nan")) / 2**20 for r in res]
            ax.plot(res, ys, marker=st["marker"], ms=st["ms"], ls=st["ls"], color=st["color"], label=g.label)
    axes[0].set_title("peak memory during prefill, batch 1")
    axes[1].set_title("peak memory during decode, batch 1")
    for ax in axes:
        ax.set_xlabel("image resolution (px, square)")
        ax.set_ylabel("peak tensor memory (MiB)")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    legend_below(fig, axes, min(4, len(groups)))
    fig.tight_layout()
    return save(fig, out_dir, "memory_vs_resolution.png")


def seeds_phrase(groups):
    """What a curve and its band are, as the data make them: a mean and a band only where some variant
    has several seeds."""
    counts = [len(g.done) for g in groups if g.done]
    if counts and max(counts) == 1:
        return "one seed per variant (no band)"
    if counts and min(counts) == 1:
        return "mean over seeds, band = min–max over seeds (none where a variant has one seed)"
    return "mean over seeds, band = min–max over seeds"


def metric_scale(metric):
    return 100.0 if metric in PERCENT_METRICS else 1.0


def metric_label(metric):
    unit = " (%)" if metric in PERCENT_METRICS else ""
    better = ", lower is better" if metric in LOWER_IS_BETTER else ""
    return f"{METRIC_TITLES.get(metric, metric)}{unit}{better}"


def fig_subtypes(out_dir, groups, styles, subtypes):
    """Accuracy per question subtype (and over all), one bar per variant with its 95% interval; the
    majority answer's rate of each subtype as a black tick across the bars."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(subtypes) * max(1, len(groups)) / 2 + 2), 4.4))
    width = 0.8 / max(1, len(groups))
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    for i, g in enumerate(groups):
        st = styles[id(g)]
        means, errs = [], []
        for sub in subtypes:
            m, h, _ = mean_ci([r.accuracy(sub) for r in g.done if r.accuracy(sub) == r.accuracy(sub)])
            means.append(100 * m)
            errs.append(0 if h is None else 100 * h)
        x = np.arange(len(subtypes)) + (i - (len(groups) - 1) / 2) * width
        ax.bar(x, means, width, yerr=errs if any(errs) else None, capsize=3, color=st["color"],
               hatch=hatches[i % len(hatches)],
               edgecolor="0.2", linewidth=0.5, label=f"{g.label} (n={len(g.done)})")
    for k, sub in enumerate(subtypes):
        maj = [float(e["majority"]) for e in groups[0].done[0].eval if e["subtype"] == sub]
        if maj:
            ax.hlines(100 * maj[0], k - 0.45, k + 0.45, colors="k", linestyles="--", linewidth=1.4,
                      label="majority answer" if k == 0 else None)
    ax.set_xticks(np.arange(len(subtypes)), subtypes)
    ax.set_ylim(0, 103)
    ax.set_ylabel("accuracy (%)")
    several = any(len(g.done) > 1 for g in groups)
    ax.set_title("accuracy per question subtype, test split; " +
                 ("mean over seeds, error bars: 95% interval" if several else "one seed per variant (no interval)"),
                 fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save(fig, out_dir, "accuracy_per_subtype.png")


def swept_values(groups):
    """{sweep key: sorted numeric values} over the groups' sweep points (keys whose values are numbers)."""
    keys = {}
    for g in groups:
        for part in [p for p in g.sweep.split(";") if "=" in p]:
            k, v = part.split("=", 1)
            try:
                keys.setdefault(k, set()).add(float(v))
            except ValueError:
                keys.setdefault(k, set()).add(None)
    return {k: sorted(v) for k, v in keys.items() if None not in v and len(v) > 1}


def fig_sweep(out_dir, groups, styles, key, metric):
    """The headline metric against one swept value: a line per variant (and per value of the other swept
    keys), mean and 95% interval over seeds at each value."""
    def point(g):
        parts = dict(p.split("=", 1) for p in g.sweep.split(";") if "=" in p)
        rest = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in parts.items() if k != key)
        return float(parts[key]), g.variant + (f" ({rest})" if rest else ""), g.family
    lines = {}
    for g in groups:
        x, label, family = point(g)
        lines.setdefault(label, (family, []))[1].append((x, g))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    cmap = plt.get_cmap("tab10")
    dashes = ["-", "--", "-.", ":"]
    scale = metric_scale(metric)
    for i, (label, (family, pts)) in enumerate(lines.items()):
        pts.sort(key=lambda p: p[0])
        xs, ms, hs, ns = [], [], [], []
        for x, g in pts:
            m, h, n = mean_ci([r.metric(metric) for r in g.done])
            xs.append(x)
            ms.append(scale * m)
            hs.append(0 if h is None else scale * h)
            ns.append(n)
        ax.errorbar(xs, ms, yerr=hs, marker=FAMILY_MARKERS.get(family, "o"), ms=max(4.0, 8.0 - i), capsize=3,
                    ls=dashes[i % len(dashes)], color=cmap(i % 10), label=f"{label} (n={min(ns)}–{max(ns)})"
                    if min(ns) != max(ns) else f"{label} (n={ns[0]})")
    values = swept_values(groups)[key]
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(f"{key} (swept)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{METRIC_TITLES.get(metric, metric)} against {key}, test split; "
                 f"{'error bars: 95% interval over seeds' if any(len(g.done) > 1 for g in groups) else 'one seed per point'}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    safe = "".join(c if c.isalnum() else "_" for c in key)
    return save(fig, out_dir, f"sweep_{safe}.png")


def smooth(y, w):
    if w <= 1 or len(y) < w:
        return np.asarray(y, dtype=np.float64)
    c = np.cumsum(np.insert(np.asarray(y, dtype=np.float64), 0, 0.0))
    head = c[1:w] / np.arange(1, w)  # the first points average what exists so far
    return np.concatenate([head, (c[w:] - c[:-w]) / w])


def stage_ends(runs):
    """Steps at which a staged run's next stage begins (its /train stage column changes), over the runs."""
    ends = set()
    for r in runs:
        st, steps = r.train.get("stage", []), r.train.get("step", [])
        ends.update(int(steps[i]) for i in range(1, len(st)) if st[i] != st[i - 1])
    return sorted(ends)


def staged(runs):
    """Whether the runs were trained in stages ([[stage]]: more than one stage, or one a family skipped)."""
    return any(len(r.stages) > 1 or any(s_(s.get("status", "")) == "skipped" for s in r.stages) for r in runs)


def fig_stage_curves(out_dir, groups, styles):
    """One panel per stage: validation accuracy on that stage's own task against the run's step, mean over
    seeds (a family that skipped a stage has no line in its panel)."""
    names = []
    for g in groups:
        for r in g.done:
            for s in r.stages:
                if s_(s["name"]) not in names:
                    names.append(s_(s["name"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), sharey=True, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[0][k]
        for g in groups:
            series = []
            for r in g.done:
                idx = [i for i, s in enumerate(r.stages) if s_(s["name"]) == name and s_(s["status"]) == "trained"]
                if not idx or not r.curve.get("stage"):
                    continue
                keep = [i for i, st in enumerate(r.curve["stage"]) if int(st) == int(r.stages[idx[0]]["stage"])]
                series.append((np.asarray([r.curve["step"][i] for i in keep]),
                               np.asarray([r.curve["accuracy"][i] for i in keep], dtype=np.float64) * 100))
            if not series:
                continue
            n = min(len(s[0]) for s in series)
            st = styles[id(g)]
            ax.plot(series[0][0][:n], np.mean([s[1][:n] for s in series], axis=0), color=st["color"], ls=st["ls"],
                    marker=st["marker"], ms=4, label=f"{g.label} (n={len(series)})")
        task = next((s_(s["task"]) for g in groups for r in g.done for s in r.stages if s_(s["name"]) == name), "")
        ax.set_title(f"stage {k + 1}: {name}\n{task}", fontsize=8)
        ax.set_xlabel("training step (of the run)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy (%) on the stage's task")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(f"each stage on its own task, {seeds_phrase(groups)}", fontsize=10)
    return save(fig, out_dir, "stage_curves.png")


def stages_section(out_dir, groups, styles):
    """The stages of each variant (from its first complete run: every seed runs the same stages) and
    the per-stage curves."""
    L = ["### Stages", ""]
    rows = []
    for g in groups:
        r = g.done[0] if g.done else None
        if r is None:
            continue
        for s in r.stages:
            skipped = s_(s["status"]) == "skipped"
            what = s_(s["train"]) or ("everything except " + s_(s["freeze"]) if s_(s["freeze"]) else "everything")
            rows.append([md_escape(g.label), md_escape(s_(s["name"])), md_escape(s_(s["task"])),
                         "skipped: " + md_escape(s_(s["reason"])) if skipped else md_escape(what),
                         fmt_int(int(s["trained_params"])), fmt_int(int(s["frozen_params"])),
                         str(int(s["steps"])), md_escape(s_(s["lr_scale"])) or "–",
                         md_escape(s_(s["init_from"])) or "–"])
    L += md_table(["variant", "stage", "task", "trains", "trained params", "frozen params", "steps",
                   "lr scale", "initial weights from"], rows, right={4, 5, 6})
    skipped = sorted({f"{g.label}: {s_(s['name'])}" for g in groups for r in g.done[:1] for s in r.stages
                      if s_(s["status"]) == "skipped"})
    L += ["", "Stages run in order, each from the weights the previous one ended with and a fresh optimizer over "
          "what it trains; frozen parameters get no gradient and no optimizer state (the memory table's "
          "`train:<stage>` rows). Stages skipped because the family has nothing they train: " +
          (", ".join(skipped) if skipped else "none") + ".", ""]
    f = fig_stage_curves(out_dir, groups, styles)
    L += [f"![Per-stage validation curves]({f})", ""]
    return L


def fig_loss(out_dir, groups, styles, phase_ends=(), stages=()):
    """Training loss on log-log axes: the first steps (where the loss falls from the answer prior) and
    the long tail (where families separate) both show; curriculum phases are marked."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    window = 1
    for g in groups:
        curves = [np.asarray(r.train.get("loss", []), dtype=np.float64) for r in g.done]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        stack = np.stack([c[:n] for c in curves])
        steps = np.asarray(g.done[0].train["step"][:n]) + 1
        window = max(1, n // 50)
        st = styles[id(g)]
        mean = smooth(stack.mean(axis=0), window)
        if len(curves) > 1:
            ax.fill_between(steps, smooth(stack.min(axis=0), window), smooth(stack.max(axis=0), window),
                            color=st["color"], alpha=0.18, linewidth=0)
        ax.plot(steps, mean, color=st["color"], ls=st["ls"], label=f"{g.label} (n={len(curves)})")
    for end in phase_ends:
        ax.axvline(end + 0.5, color="0.5", lw=0.8, ls=":")
    for end in stages:
        ax.axvline(end + 0.5, color="0.2", lw=1.0, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training step (log)")
    ax.set_ylabel("training loss (log; cross-entropy on answer tokens)")
    extra = f", moving average over {window} steps" if window > 1 else ""
    marks = "; dotted lines: curriculum phase ends" if phase_ends else ""
    marks += "; dashed lines: stage boundaries" if stages else ""
    ax.set_title(f"training loss, {seeds_phrase(groups)}{extra}{marks}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save(fig, out_dir, "training_loss.png"), window


def steps_to_threshold(run):
    """(first curve step, samples, FLOPs) at which validation accuracy reaches threshold x the run's final
    validation accuracy; None when the run has no curve."""
    c = run.final_curve
    if not c.get("step"):
        return None
    acc = np.asarray(c["accuracy"], dtype=np.float64)
    target = run.threshold * acc[-1]
    i = int(np.argmax(acc >= target - 1e-12))
    return int(c["step"][i]), int(c["samples"][i]), float(c["train_flops"][i])


def fig_curves(out_dir, groups, styles):
    """Validation accuracy against training step and against training FLOPs (log), mean over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for g in groups:
        runs = [r for r in g.done if r.final_curve.get("step")]
        if not runs:
            continue
        n = min(len(r.final_curve["step"]) for r in runs)
        acc = np.stack([np.asarray(r.final_curve["accuracy"][:n], dtype=np.float64) for r in runs]) * 100
        steps = np.asarray(runs[0].curve["step"][:n])
        flops = np.mean(np.stack([np.asarray(r.final_curve["train_flops"][:n], dtype=np.float64) for r in runs]), axis=0)
        st = styles[id(g)]
        for ax, x in ((axes[0], steps), (axes[1], flops)):
            keep = x > 0 if ax is axes[1] else np.ones_like(x, dtype=bool)
            ax.plot(x[keep], acc.mean(axis=0)[keep], color=st["color"], ls=st["ls"], marker=st["marker"], ms=4,
                    label=f"{g.label} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(x[keep], acc.min(axis=0)[keep], acc.max(axis=0)[keep], color=st["color"], alpha=0.15,
                                linewidth=0)
    axes[0].set_xlabel("training step")
    axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, not 20000 colliding with its neighbours
    axes[1].set_xlabel("training FLOPs (log)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("validation accuracy (%)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"learning curves on the validation split, {seeds_phrase(groups)}", fontsize=10)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save(fig, out_dir, "learning_curves.png")


# ---------------------------------------------------------------------------------------------
# Gallery: the first test items, redrawn by `vlmlab sample` from the runs' own task parameters

def draw_gallery(out_dir, vlmlab, run, items, sub):
    """{eval index: relative png path} for the items (eval index, stored row) whose redrawn question and
    answer match the stored ones, and a note on what could not be drawn."""
    if not vlmlab:
        return {}, "no vlmlab binary was given to redraw them"
    if run.eval_split not in ("test", "validation"):
        return {}, (f"the run scored a split (\"{run.eval_split}\") from before the validation and test splits, "
                    "which `vlmlab sample` can no longer draw")
    split = run.eval_split
    dest = os.path.join(out_dir, "gallery", sub) if sub else os.path.join(out_dir, "gallery")
    with tempfile.TemporaryDirectory(prefix="vlmlab_report_") as tmp:
        cfg = os.path.join(tmp, "run.toml")
        with open(cfg, "w") as fh:
            fh.write(run.resolved_config)
        p = subprocess.run([vlmlab, "sample", cfg, "--out", dest, "--split", split, "--no-caption",
                            "--index", *[str(i) for i, _ in items]],
                           capture_output=True, text=True)
    if p.returncode != 0:
        return {}, f"`vlmlab sample` failed: {md_escape(p.stderr.strip())}"
    drawn = {}
    for line in p.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 5:
            drawn[int(parts[0])] = (parts[2], parts[3])
    out, mismatched = {}, 0
    for i, stored in items:
        if drawn.get(i) == (stored["question"], stored["answer"]):
            out[i] = "/".join(["gallery"] + ([sub] if sub else []) + [f"{split}_{i}.png"])
        else:
            mismatched += 1
            path = os.path.join(dest, f"{split}_{i}.png")
            if os.path.exists(path):
                os.remove(path)
    note = (f"{mismatched} item(s) redraw differently from the stored question and answer (the task generator "
            "changed since the run), so their images are left out") if mismatched else ""
    return out, note


def gallery_section(out_dir, vlmlab, groups):
    lines = []
    # Runs with the same task parameters that kept the same test items are shown side by side.
    by_items = []
    for g in groups:
        if not g.done:
            continue
        key = (g.done[0].task, [int(s["index"]) for s in g.done[0].samples])
        for entry in by_items:
            if entry[0] == key:
                entry[1].append(g)
                break
        else:
            by_items.append((key, [g]))
    if not by_items:
        return ["No completed run: nothing to show.", ""]
    for k, ((task, kept), gs) in enumerate(by_items):
        if len(by_items) > 1:
            desc = ", ".join(f"{key} = {task[key]}" for key in sorted(task) if key != "name") or "default task"
            shown = ", ".join(str(i) for i in kept[:8]) + (" …" if len(kept) > 8 else "")
            lines += [f"### {desc}; test items {shown}", ""]
        if not kept:
            lines += ["The runs kept no test items (`[eval] gallery = 0`).", ""]
            continue
        n = min(GALLERY_ITEMS, len(kept))
        picked = [kept[j * len(kept) // n] for j in range(n)]  # spread over the kept items
        ref = {int(s["index"]): s for s in gs[0].done[0].samples}
        images, note = draw_gallery(out_dir, vlmlab, gs[0].done[0], [(i, ref[i]) for i in picked],
                                    f"set{k + 1}" if len(by_items) > 1 else "")
        header = ["image", "question", "answer"] + [md_escape(g.label) for g in gs]
        rows = []
        for i in picked:
            img = f"![test item {i}]({images[i]})" if i in images else "–"
            cells = [img, md_escape(ref[i]["question"]), f"**{md_escape(ref[i]['answer'])}**"]
            for g in gs:
                preds = []
                for r in g.done:
                    s = next(x for x in r.samples if int(x["index"]) == i)
                    preds.append(f"{md_escape(s['prediction']) or '(empty)'} {'✓' if int(s['correct']) else '✗'}")
                cells.append(" · ".join(preds))
            rows.append(cells)
        lines += [f"{n} test items (test indices {', '.join(str(i) for i in picked)}), drawn again from the runs' "
                  "task parameters by `vlmlab sample`, with each variant's answers seed by seed (in seed order, "
                  "completed seeds only); ✓ marks an exact match.", ""]
        lines += md_table(header, rows)
        lines.append("")
        if note:
            lines += [f"Images: {note}.", ""]
    return lines


# ---------------------------------------------------------------------------------------------
# The page

def distinct(values):
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def joined(values):
    return ", ".join(str(v) for v in distinct(values)) if values else "–"


def report(path, out_dir, vlmlab):
    meta, exp, runs, groups = load(path)
    os.makedirs(out_dir, exist_ok=True)
    done_runs = [r for r in runs if r.complete]
    done_groups = [g for g in groups if g.done]
    styles = group_styles(done_groups)
    name = meta.get("experiment_name", "?")
    L = [f"# vlmlab report: {name}", ""]
    desc = exp.get("experiment", {}).get("description", "")
    if desc:
        L += [desc, ""]
    splits = distinct(r.eval_split for r in done_runs) or ["test"]
    split_note = ("on the test split, scored once per run after training (settings are chosen on the validation "
                  "split only)" if splits == ["test"] else
                  f"on the split(s) {', '.join(splits)} (a file from before the validation split: its eval items "
                  "also served to choose settings)")
    L += [f"Made by `vlmlab report` from `{os.path.basename(path)}`. Accuracy is exact match of the greedy "
          f"answer {split_note}, in %, as mean ± 95% confidence interval over seeds (t-distribution); n is the "
          "number of completed seeds, and n=1 gives no interval.", ""]
    headlines = distinct(r.headline for r in done_runs) or ["exact_match"]
    headline = headlines[0]
    if headline != "exact_match":
        L += [f"**Headline metric: {METRIC_TITLES.get(headline, headline)}**"
              f"{' (lower is better)' if headline in LOWER_IS_BETTER else ''}, the task's own score "
              "(see [Task metrics](#task-metrics)), beside exact match.", ""]
    else:
        L += ["**Headline metric: exact-match accuracy.**", ""]

    # ---- at a glance
    L += ["## At a glance", ""]
    if not done_groups:
        L += ["No run completed; see [Failed runs](#failed-runs).", ""]
    else:
        if headline != "exact_match":
            scale = metric_scale(headline)
            hs = [(g, *mean_ci([r.metric(headline) for r in g.done])) for g in done_groups]
            lower = headline in LOWER_IS_BETTER
            top = sorted(hs, key=lambda x: x[1] if lower else -x[1])[0]
            base = done_groups[0].done[0].metric(headline, column="baseline")
            bname = next((r["baseline_name"] for r in done_groups[0].done[0].metrics if r["metric"] == headline), "")
            val = f"{scale * top[1]:.1f}" + (f" ± {scale * top[2]:.1f}" if top[2] is not None else "")
            L.append(f"- Best by {METRIC_TITLES.get(headline, headline)} (the headline): **{top[0].label}**, "
                     f"{val}{'%' if scale == 100 else ''} (n={top[3]}); the {BASELINE_TITLES.get(bname, bname)} "
                     f"gets {scale * base:.1f}{'%' if scale == 100 else ''}.")
        stats = [(g, *mean_ci([r.accuracy() for r in g.done])) for g in done_groups]
        ranked = sorted(stats, key=lambda s: -s[1])
        best = ranked[0]
        L.append(f"- Most accurate: **{best[0].label}**, {fmt_acc(*best[1:])}% (n={best[3]}).")
        if len(ranked) > 1:
            second = ranked[1]
            if best[2] is None or second[2] is None:
                verdict = "no intervals with one seed, so the gap may be noise"
            elif best[1] - best[2] > second[1] + second[2]:
                verdict = "the 95% intervals do not overlap"
            else:
                verdict = "the 95% intervals overlap, so these runs do not separate them"
            L.append(f"- Runner-up: {second[0].label}, {fmt_acc(*second[1:])}% ({verdict}).")
        base = [r for r in best[0].done[0].eval if r["subtype"] == "all"]
        if base:
            L.append(f"- Baselines on the same items: chance {fmt_pct(base[0]['chance'])}%, "
                     f"majority answer {fmt_pct(base[0]['majority'])}%.")
            if best[1] <= float(base[0]["majority"]):
                L.append("- No variant beats always giving the majority answer: these runs have not learned "
                         "more than the task's answer statistics.")
            else:
                prior = [s[0].label for s in ranked if s[1] <= float(base[0]["majority"])]
                if prior:
                    L.append(f"- Not above the majority answer (mean over seeds): {', '.join(prior)}.")
        res0 = [resolutions_of(g)[0] if resolutions_of(g) else None for g in done_groups]
        pre = [(pct(latency_of(g, "prefill", r), 50), g, r) for g, r in zip(done_groups, res0) if r is not None]
        pre = [p for p in pre if p[0] == p[0]]
        if pre:
            fast = min(pre, key=lambda p: p[0])
            L.append(f"- Fastest prefill: {fast[1].label}, {fmt_ms(fast[0])} ms at {fast[2]} px (batch 1, median).")
        sizes = [(int(g.done[0].params.get("total", 0)), g) for g in done_groups]
        small = min(sizes, key=lambda s: s[0])
        L.append(f"- Fewest parameters: {small[1].label}, {fmt_int(small[0])}.")
        L.append("")

    # ---- what was run
    L += ["## What was run", ""]
    task = exp.get("task", {})
    tparams = ", ".join(f"{k} = {task[k]}" for k in task if k != "name")
    n_failed = len(runs) - len(done_runs)
    seeds = distinct(r.seed for r in runs)
    L += [f"- Experiment: `{name}`; {len(runs)} run(s): {len(done_runs)} complete, {n_failed} failed; "
          f"{len(groups)} variant(s) × sweep point(s), seeds {joined(sorted(seeds))}.",
          f"- Task: `{task.get('name', '?')}`" + (f" ({tparams})" if tparams else " (default parameters)") + "."]
    if done_runs:
        steps = [len(r.train.get("step", [])) for r in done_runs]
        batch = [round(r.flops_per_step / r.flops_per_sample) if r.flops_per_sample > 0 else "?" for r in done_runs]
        lr = [max(r.train["lr"]) if r.train.get("lr") else float("nan") for r in done_runs]
        items = [int(e["n"]) for r in done_runs for e in r.eval if e["subtype"] == "all"]
        res = distinct(int(c["resolution"]) for r in done_runs for c in r.cost)
        reps = [int(l["repeats"]) for r in done_runs for l in r.latency if l["phase"] == "prefill"]
        L += [f"- Budgets (as recorded): training {joined(steps)} steps at batch {joined(batch)}, peak learning rate "
              f"{joined(f'{x:g}' for x in lr)}; evaluation on {joined(items)} test items; latency at "
              f"{joined(res) if res else '(not measured)'} px with {joined(reps) if reps else '–'} timed repeats "
              "per phase and run."]
    threads = distinct(r.threads for r in runs) or [meta.get("threads", "?")]
    # Timings come from where each run ran, and results from the build that ran it; the root names the
    # machine and the build that last wrote the file (a folded or resumed file can differ from both).
    def per_run(label, of_run, root, alone, prefix, written):
        values = distinct(of_run(r) for r in runs if of_run(r))
        if not values or values == [root]:
            return alone + label(root)
        return prefix + "; ".join(f"{label(v)} ({sum(1 for r in runs if of_run(r) == v)} run(s))"
                                  for v in values) + f"; {written} {label(root)}"

    machine = per_run(lambda m: f"{m[0]}, {m[1]} cores", lambda r: (r.cpu, r.cores) if r.cpu else None,
                      (meta.get("cpu", "?"), meta.get("cores", "?")), "", "runs measured on ", "file written on")
    commit = per_run(lambda c: f"`{c}`", lambda r: r.git_commit, meta.get("git_commit", "?"), "git commit ",
                     "runs made by git commit ", "file written by")
    walls = [(r.wall_s, r.threads) for r in runs if r.wall_s == r.wall_s]
    if walls:
        cpu_h = sum(w * max(1, t) for w, t in walls) / 3600
        L += [f"- Cost: {cpu_h:.2f} CPU-hours (each run's wall time x its threads, summed over {len(walls)} "
              f"run(s); the longest run {max(w for w, _ in walls) / 60:.1f} min). Wall times depend on what else "
              "the machine ran."]
    L += [f"- Machine: {machine}, {joined(threads)} thread(s); "
          f"BLAS: {meta.get('blas', '?')}; compiler: {meta.get('compiler', '?')}.",
          f"- vlmlab {meta.get('vlmlab_version', '?')}, {commit}, results schema "
          f"{meta.get('schema_version', '?')}; results file created {meta.get('created_utc', '?')}.",
          ""]
    toml_text = meta.get("experiment_toml", "")
    L += ["<details><summary>Experiment config (TOML, as run)</summary>", "", "```toml", toml_text.rstrip("\n"),
          "```", "", "</details>", ""]

    # ---- accuracy
    L += ["## Accuracy", ""]
    if done_groups:
        # A subtype no run was asked (e.g. a task restricted to some questions) has no column; a cell
        # whose runs were not asked it shows "–".
        subtypes = distinct(e["subtype"] for r in done_runs for e in r.eval if int(e["n"]) > 0)
        subtypes = [s for s in subtypes if s != "all"] + (["all"] if "all" in subtypes else [])
        header = ["variant", "family", "n"] + [("**all**" if s == "all" else md_escape(s)) for s in subtypes]
        rows = []
        for g in done_groups:
            cells = [md_escape(g.label), g.family, str(len(g.done))]
            for s in subtypes:
                scored = [r.accuracy(s) for r in g.done if any(e["subtype"] == s and int(e["n"]) > 0 for e in r.eval)]
                cells.append(fmt_acc(*mean_ci(scored)))
            rows.append(cells)
        # Baselines: the same for every run on the same eval items; one row each, or one per distinct set
        # (a sweep over task parameters), named by the task parameters that tell the sets apart.
        for which in ("chance", "majority"):
            sets = []  # (cells, groups)
            for g in done_groups:
                cells = []
                for s in subtypes:
                    v = [float(e[which]) for e in g.done[0].eval if e["subtype"] == s and int(e["n"]) > 0]
                    cells.append(fmt_pct(v[0]) if v else "–")
                for entry in sets:
                    if entry[0] == cells:
                        entry[1].append(g)
                        break
                else:
                    sets.append((cells, [g]))
            if len(sets) == 1:
                rows.append([f"*{which}*", "", ""] + sets[0][0])
                continue
            tasks = [gs[0].done[0].task for _, gs in sets]
            keys = [k for k in sorted(set().union(*tasks)) if len({repr(t.get(k)) for t in tasks}) > 1]
            for (cells, gs), t in zip(sets, tasks):
                name = ", ".join(f"{k}={t.get(k, 'default')}" for k in keys) if keys else \
                    ", ".join(g.label for g in gs)
                rows.append([f"*{which}* ({md_escape(name)})", "", ""] + cells)
        L += md_table(header, rows, right=set(range(2, len(header))))
        L += ["", "Per question subtype and over all questions (%). *chance*: uniform guessing among the "
              "subtype's possible answers; *majority*: always giving the most frequent answer of the scored items "
              "(over all questions: each subtype's own majority answer).", ""]
        ones = [g.label for g in done_groups if len(g.done) == 1]
        if ones and len(ones) == len(done_groups) and len(ones) > 1:
            L += ["n=1 for every variant (one completed seed each): no intervals.", ""]
        elif ones:
            L += [f"n=1 (one completed seed, no interval): {', '.join(md_escape(x) for x in ones)}.", ""]
        if len(subtypes) > 1:
            fs = fig_subtypes(out_dir, done_groups, styles, subtypes)
            L += [f"![Accuracy per subtype]({fs})", "", "The table's accuracies as bars (error bars: 95% interval "
                  "over seeds, where there are several), the dashed tick on each subtype its majority answer's rate.",
                  ""]
        for key in swept_values(done_groups):
            fw = fig_sweep(out_dir, done_groups, styles, key, headline)
            L += [f"![{METRIC_TITLES.get(headline, headline)} against {key}]({fw})", "",
                  f"The headline metric against the swept value `{key}`, one line per variant.", ""]
        # Figures: accuracy against prefill latency and against parameters.
        all_base = [e for e in done_runs[0].eval if e["subtype"] == "all"]
        same_base = len(distinct(tuple((e["chance"], e["majority"]) for e in r.eval if e["subtype"] == "all")
                                 for r in done_runs)) == 1
        baselines = (float(all_base[0]["chance"]), float(all_base[0]["majority"])) if all_base and same_base \
            else (None, None)
        xs, res_used = [], []
        for g in done_groups:
            res = resolutions_of(g)
            s = latency_of(g, "prefill", res[0]) if res else []
            xs.append(pct(s, 50) if s else None)
            if s:
                res_used.append(res[0])
        if any(x is not None for x in xs):
            at = joined(res_used)
            f1 = fig_accuracy_vs(out_dir, "accuracy_vs_prefill.png", done_groups, styles, xs,
                                 f"prefill latency at {at} px, batch 1 (ms, median)", "accuracy vs prefill latency",
                                 baselines)
            L += [f"![Accuracy vs prefill latency]({f1})", "",
                  "Accuracy (mean and 95% interval over seeds; intervals wider than 0–100% are cut at the axes) "
                  f"against prefill latency at {at} px (median over every timed repeat of every seed; the "
                  "spread is in the latency table).", ""]
        f2 = fig_accuracy_vs(out_dir, "accuracy_vs_params.png", done_groups, styles,
                             [float(g.done[0].params.get("total", 0)) for g in done_groups], "parameters (total)",
                             "accuracy vs parameters", baselines, eng=True)
        L += [f"![Accuracy vs parameters]({f2})", ""]
    else:
        L += ["No completed run.", ""]

    # ---- the study sections (report_study.py): selection, relational gap, finish, compute, majority
    L += report_study.sections(done_groups, task.get("name", ""))

    # ---- task metrics (lib/data/metrics.h): beside exact match, with their baselines
    metric_names = distinct(m["metric"] for r in done_runs for m in r.metrics)
    if metric_names:
        L += ["## Task metrics", ""]
        subs = distinct(m["subtype"] for r in done_runs for m in r.metrics)
        subs = [x for x in subs if x != "all"] + (["all"] if "all" in subs else [])
        cols = [(m, x) for m in metric_names for x in subs]
        header = ["variant", "n"] + [f"{METRIC_TITLES.get(m, m)}: {'**all**' if x == 'all' else md_escape(x)}"
                                     for m, x in cols]
        rows = []
        for g in done_groups:
            cells = [md_escape(g.label), str(len(g.done))]
            for m, x in cols:
                scale = metric_scale(m)
                mm, h, n = mean_ci([r.metric(m, x) for r in g.done if r.metric(m, x) == r.metric(m, x)])
                cells.append("–" if n == 0 else f"{scale * mm:.1f}" + (f" ± {scale * h:.1f}" if h is not None else ""))
            rows.append(cells)
        ref = done_groups[0].done[0]
        cells = []
        for m, x in cols:
            b = ref.metric(m, x, column="baseline")
            cells.append("–" if b != b else f"{metric_scale(m) * b:.1f}")
        bnames = distinct(BASELINE_TITLES.get(r["baseline_name"], r["baseline_name"]) for r in ref.metrics)
        rows.append([f"*baseline* ({', '.join(bnames)})", ""] + cells)
        L += md_table(header, rows, right=set(range(1, len(header))))
        L += ["", "Mean ± 95% interval over seeds. *character error rate* (%, lower is better): edits (insertions, "
              "deletions, substitutions) from the predicted characters to the answer's, over the answer's "
              "characters, summed over items (it passes 100% when predictions are too long); *per-character "
              "accuracy* (%): answer characters predicted at their own position; *mean absolute error*: of a "
              "numeric answer, a prediction that is no number scored as the farthest of the subtype's smallest "
              "and largest answers. Baselines, from the same test items: the *positional majority string* (the "
              "most frequent answer length, at each position the most frequent character) and the *median "
              "answer* (the constant with the least absolute error).", ""]

    # ---- parameters
    L += ["## Parameters", ""]
    if done_groups:
        rows = []
        for g in done_groups:
            p = g.done[0].params
            rows.append([md_escape(g.label), g.family] + [fmt_int(p.get(c, 0)) for c in ("vision", "connector", "lm",
                                                                                          "total")])
        L += md_table(["variant", "family", "vision", "connector", "LM", "total"], rows, right={2, 3, 4, 5})
        L += ["", "Trainable parameters per component (the same for every seed). *vision*: the vision encoder "
              "(none for fuyu); *connector*: what joins it to the LM (projector, resampler and gated "
              "cross-attention, patch merger, or fuyu's patch projection); *LM*: the language model.", ""]

    # ---- tokens
    L += ["## Tokens per image", ""]
    rows = []
    for g in done_groups:
        for res in resolutions_of(g):
            c = cost_of(g, res)
            rows.append([md_escape(g.label), str(res), fmt_int(c["visual_tokens"]), fmt_int(c["lm_tokens"]),
                         fmt_flops(c["prefill_flops"]), fmt_flops(c["decode_flops_per_token"])])
    if rows:
        L += md_table(["variant", "resolution (px)", "visual tokens", "LM tokens", "prefill FLOPs",
                       "decode FLOPs / token"], rows, right={1, 2, 3, 4, 5})
        L += ["", "For one question about one square image at each resolution (the eval image rescaled). *visual "
              "tokens*: what the image becomes for the LM (spliced tokens, or flamingo's cross-attention latents); "
              "*LM tokens*: the whole prompt the LM prefills. FLOPs are counted by the ops.", ""]
        f = fig_tokens_latency(out_dir, done_groups, styles)
        L += [f"![Visual tokens and prefill latency vs resolution]({f})", ""]
    else:
        L += ["Not measured (`[measure] enabled = false`, or no completed run).", ""]

    # ---- latency
    L += ["## Latency", ""]
    rows = []
    for g in done_groups:
        for res in resolutions_of(g):
            cells = [md_escape(g.label), str(res)]
            cells += [fmt_spread(latency_of(g, ph, res)) for ph in PHASES]
            rows.append(cells)
    if rows:
        L += md_table(["variant", "resolution (px)"] + [PHASE_TITLES[p] for p in PHASES], rows,
                      right=set(range(1, 2 + len(PHASES))))
        L += ["", "Milliseconds at batch 1: median (p10–p90) over every timed repeat of every seed. *prefill* is "
              "the whole forward pass over the prompt; *vision encoder* and *connector* are its marked regions and "
              "*LM prefill* the rest; *preprocess* is the processor from raw pixels to model inputs; *decode* is "
              "one generated token with the KV cache.", ""]
    train_rows = []
    for g in done_groups:
        samples = []
        for r in g.done:
            samples += r.latency_samples.get(next((k for k in r.latency_samples if k.startswith("train_step@")), ""),
                                             [])
        r0 = g.done[0]
        batch = round(r0.flops_per_step / r0.flops_per_sample) if r0.flops_per_sample > 0 else "?"
        walls = [r.wall_s for r in g.done]
        train_rows.append([md_escape(g.label), str(batch),
                           fmt_spread(samples), fmt_flops(r0.flops_per_step), fmt_ms(sum(walls) / len(walls))])
    if train_rows:
        L += md_table(["variant", "batch", "training step (ms)", "FLOPs / step", "wall time per run (s)"],
                      train_rows, right={1, 2, 3, 4})
        L += ["", "Training step: forward, backward, clipping and AdamW at the training batch, median (p10–p90) "
              "over the steps after warm-up of every seed. Wall time: the whole run (training, evaluation, "
              "measuring), mean over seeds.", ""]

    # ---- memory
    L += ["## Memory", ""]
    rows = []
    for g in done_groups:
        for phase, m in memory_of(g).items():
            rows.append([md_escape(g.label), phase] + [fmt_bytes(m[c]) for c, _ in MEMORY_COLUMNS])
    if rows:
        L += md_table(["variant", "phase"] + [t for _, t in MEMORY_COLUMNS], rows,
                      right=set(range(2, 2 + len(MEMORY_COLUMNS))))
        L += ["", "Peak bytes per category counted by the core's allocator during each phase (*train*: the whole "
              "training; *preprocess / prefill / decode @ px*: batch-1 inference at that resolution), the largest "
              "over seeds. Categories peak at different moments, so they need not add up to *peak (all)*. "
              "*peak RSS* is the process's high-water mark when the phase ended (runs share one process, so it "
              "only grows).", ""]
        if any(resolutions_of(g) for g in done_groups):
            f = fig_memory(out_dir, done_groups, styles)
            L += [f"![Peak memory vs resolution]({f})", ""]

    # ---- training
    L += ["## Training", ""]
    if staged(done_runs):
        L += stages_section(out_dir, done_groups, styles)
    if any(r.curve.get("step") for r in done_runs):
        f = fig_curves(out_dir, done_groups, styles)
        L += [f"![Learning curves]({f})", ""]
        rows = []
        for g in done_groups:
            hits = [steps_to_threshold(r) for r in g.done]
            hits = [h for h in hits if h is not None]
            if not hits:
                continue
            finals = [float(r.curve["accuracy"][-1]) for r in g.done if r.curve.get("accuracy")]
            m, h, n = mean_ci(finals)
            st_m, st_h, _ = mean_ci([x[0] for x in hits])
            fl_m, _, _ = mean_ci([x[2] for x in hits])
            rows.append([md_escape(g.label), str(n), fmt_acc(m, h, n),
                         f"{st_m:.0f}" + (f" ± {st_h:.0f}" if st_h is not None else ""), fmt_flops(fl_m)])
        thr = distinct(r.threshold for r in done_runs)
        L += md_table(["variant", "n", "final validation accuracy (%)",
                       f"steps to {joined(f'{100 * t:g}' for t in thr)}% of final", "training FLOPs by then"],
                      rows, right={1, 2, 3, 4})
        L += ["", "Validation split (never the test split), scored before the first step, every `[eval] every` "
              "steps and after the last. Steps-to-threshold: the first scored step at which a run's validation "
              "accuracy reaches the threshold fraction of its own final validation accuracy (mean ± 95% interval "
              "over seeds): how fast a family learns, beside where it ends. A run whose final accuracy is the "
              "answer prior reaches its threshold at once, so read this column beside the final accuracy.", ""]
    if any(r.train.get("loss") for r in done_runs):
        phase_ends = []
        for ph in exp.get("train", {}).get("phase", []) if isinstance(exp.get("train", {}), dict) else []:
            if isinstance(ph, dict) and isinstance(ph.get("steps"), int):
                phase_ends.append((phase_ends[-1] if phase_ends else 0) + ph["steps"])
        f, window = fig_loss(out_dir, done_groups, styles, phase_ends, stage_ends(done_runs))
        L += [f"![Training loss]({f})", ""]
        rows = []
        for g in done_groups:
            finals = [float(np.mean(r.train["loss"][-max(1, window):])) for r in g.done if r.train.get("loss")]
            m, h, n = mean_ci(finals)
            rows.append([md_escape(g.label), str(n), f"{m:.3f}" + (f" ± {h:.3f}" if h is not None else "")])
        L += md_table(["variant", "n", f"final loss (mean of the last {window} step(s))"], rows, right={1, 2})
        L.append("")
    else:
        L += ["No training steps recorded.", ""]

    # ---- gallery
    L += ["## Gallery", ""]
    L += gallery_section(out_dir, vlmlab, groups)

    # ---- failed runs
    L += ["## Failed runs", ""]
    failed = [r for r in runs if not r.complete]
    if failed:
        L += md_table(["run", "family", "seed", "error"],
                      [[r.id, r.family, str(r.seed), md_escape(r.error or "(no message)")] for r in failed])
        L.append("")
    else:
        L += ["None: every run completed.", ""]

    # ---- every run
    L += ["## All runs", ""]
    if runs:
        L += md_table(["run", "variant", "seed", "status", "accuracy (%)", "parameters", "wall time (s)"],
                      [[r.id, md_escape(r.variant), str(r.seed), r.status,
                        fmt_pct(r.accuracy()) if r.complete else "–",
                        fmt_int(r.params.get("total", 0)) if r.params else "–", fmt_ms(r.wall_s)] for r in runs],
                      right={2, 4, 5, 6})
        L.append("")
    else:
        L += ["The file holds no runs.", ""]

    text = "\n".join(L).rstrip("\n") + "\n"
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return os.path.join(out_dir, "report.md")


def main():
    ap = argparse.ArgumentParser(description="vlmlab's comparison report from a results file (HDF5 schema 1)")
    ap.add_argument("results")
    ap.add_argument("--out", required=True, help="folder for report.md and its figures")
    ap.add_argument("--vlmlab", default="", help="the vlmlab binary, to redraw the gallery's images")
    a = ap.parse_args()
    try:
        h5py.File(a.results, "r").close()
    except OSError as e:
        print(f"vlmlab report: cannot read {a.results}: {e}", file=sys.stderr)
        return 2
    out = report(a.results, a.out, a.vlmlab)
    print(f"vlmlab report: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
