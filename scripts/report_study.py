"""The report's study sections: what a results file says beyond its accuracy table, each written only
when the file holds what it needs.

- Selection on the validation split: a file with a sweep and learning curves is a tuning grid; each
  variant's point is picked by its final validation accuracy, and variants of one family are compared
  at their picked points (an ablation of a family-specific setting gets the same grid as the rest).
- Relational and non-relational questions: for a task whose subtypes split that way (Sort-of-CLEVR),
  each variant's accuracy on both kinds and their gap, beside the published numbers, with a verdict.
- Frozen and trained backbones: for a file whose llava and flamingo variants took the same pretrained
  backbones and then trained only their connector (frozen) or everything (trained), the layouts'
  difference in each arm beside Idefics2's, with a verdict.
- Visual tokens and connectors: for a file with variants of one family at different visual-token
  counts, the token effect within each connector and the differences between connectors at about the
  same count, against Idefics2's latents and MM1's claim, by stated rules.
- Did training finish: the validation accuracy gained over the last quarter of training.
- Equal steps and equal compute: training FLOPs per step, and each variant's validation accuracy at
  the compute the cheapest variant spent in all.
- Subtypes at the majority rate: every (variant, subtype) whose interval over seeds does not exclude
  the subtype's majority rate, with its validation curve's evidence.

All numbers come from the file; the verdicts follow fixed rules stated on the page.
"""
import tomllib

import numpy as np

from report_common import fmt_acc, fmt_flops, md_escape, md_table, mean_ci, short_sweep

# Tasks whose question subtypes split into relational and non-relational ones, and what was
# published about them (for the verdict section).
RELATIONAL = {
    "sort_of_clevr": {
        "non-relational": ["shape", "horizontal", "vertical"],
        "relational": ["closest", "furthest", "count"],
        "paper": "Santoro et al. 2017, \"A simple neural network module for relational reasoning\"",
        "published": [
            ("CNN + Relation Network (the paper)", "above 94", "above 94", "about 0"),
            ("CNN + MLP (the paper)", "about 94", "63 (closest / furthest: 52.3)", "about 31"),
            ("RN re-implementation (kimhc6028/relational-networks, about 61k Adam steps of 64)", "99", "89", "10"),
        ],
    },
}


def _kind_accuracy(run, subtypes):
    """(accuracy, majority rate) over the items of the given subtypes, or None when none was asked."""
    rows = [e for e in run.eval if e["subtype"] in subtypes and int(e["n"]) > 0]
    n = sum(int(e["n"]) for e in rows)
    if n == 0:
        return None
    correct = sum(int(e["correct"]) for e in rows)
    majority = sum(float(e["majority"]) * int(e["n"]) for e in rows) / n
    return correct / n, majority


def _excludes(m, h, value):
    """Whether the 95% interval m ± h lies above `value` (None: one seed, no interval)."""
    if h is None:
        return None
    return m - h > value


def _val_items(group):
    """Validation items each curve point scored ([eval] val_samples of the run's config), or None."""
    try:
        return int(tomllib.loads(group.done[0].resolved_config)["eval"]["val_samples"])
    except (AttributeError, KeyError, ValueError, TypeError, IndexError, tomllib.TOMLDecodeError):
        return None


def _final_val(run):
    acc = run.final_curve.get("accuracy", [])
    return float(acc[-1]) if len(acc) else float("nan")


# ---------------------------------------------------------------------------------------------

def selection_section(groups):
    """Per variant, the sweep point with the best final validation accuracy."""
    swept = [g for g in groups if g.sweep and g.done and any(r.final_curve.get("step") for r in g.done)]
    if not swept:
        return []
    L = ["## Selection on the validation split", ""]
    keys = []
    for g in swept:
        for part in g.sweep.split(";"):
            k = part.split("=", 1)[0]
            if k and k not in keys:
                keys.append(k)
    L += [f"Every variant was trained at every point of the same grid ({', '.join(f'`{k}`' for k in keys)}). "
          "Each variant's point is the one with the highest validation accuracy at the end of training (mean "
          "over its seeds; the first in the grid's order on a tie); the test split plays no part. The validation "
          "items are the same for every run.", ""]
    variants = []
    for g in swept:
        if g.variant not in variants:
            variants.append(g.variant)
    points = []
    for g in swept:
        if g.sweep not in points:
            points.append(g.sweep)
    by = {(g.variant, g.sweep): g for g in swept}
    score = {key: mean_ci([_final_val(r) for r in g.done]) for key, g in by.items()}  # (mean, half, n)
    picked = {}
    for v in variants:
        best = None
        for pt in points:
            if (v, pt) in by and score[(v, pt)][0] == score[(v, pt)][0] and (best is None or score[(v, pt)][0] > best[0]):
                best = (score[(v, pt)][0], pt, by[(v, pt)])
        picked[v] = best
    header = ["point"] + [md_escape(v) for v in variants]
    rows = []
    for pt in points:
        cells = [md_escape(short_sweep(pt))]
        for v in variants:
            if (v, pt) not in by:
                cells.append("–")
                continue
            text = fmt_acc(*score[(v, pt)])
            cells.append(f"**{text}**" if picked[v] is not None and picked[v][1] == pt else text)
        rows.append(cells)
    L += md_table(header, rows, right=set(range(1, len(header))))
    L += ["", "Final validation accuracy (%) per variant and grid point; bold: the point picked.", ""]
    # Does the pick stand out? A validation score on n items has a binomial 95% half-width of
    # 1.96 sqrt(p (1 - p) / n); a pick within that of the variant's next best point is not separated.
    unseparated = []
    for v in variants:
        if picked[v] is None:
            continue
        n = _val_items(picked[v][2])
        others = sorted((score[(v, pt)][0] for pt in points if (v, pt) in by and pt != picked[v][1]), reverse=True)
        if n and others:
            p = picked[v][0]
            half = 1.96 * (p * (1 - p) / n) ** 0.5
            if p - others[0] <= half:
                unseparated.append((v, p - others[0], half, n))
    if unseparated:
        L += ["**Not separated:** " + "; ".join(
            f"{md_escape(v)}'s pick is {100 * d:.1f} points above its next best point, within one validation "
            f"score's binomial 95% half-width (±{100 * h:.1f} on {n} items)" for v, d, h, n in unseparated)
            + ". For these variants the grid does not tell its points apart at this budget: the pick is noise, "
            "not a tuned setting.", ""]
    L += ["Picked points, as a variant's `set` table (what the study's full-budget experiment writes):", "", "```toml"]
    for v in variants:
        if picked[v] is None:
            continue
        items = []
        for part in picked[v][1].split(";"):
            if "=" in part:
                k, val = part.split("=", 1)
                items.append(f'"{k}" = {val}')
        L.append(f"# {v}: {100 * picked[v][0]:.1f}% on validation")
        L.append("set = { " + ", ".join(items) + " }")
    L += ["```", ""]
    # Ablations: variants of one family, each at its own best point.
    fams = {}
    for v in variants:
        if picked[v] is not None:
            fams.setdefault(picked[v][2].family, []).append(v)
    abl = {f: vs for f, vs in fams.items() if len(vs) > 1}
    if abl:
        L += ["### Family-specific settings, with and without", ""]
        rows = []
        for f, vs in abl.items():
            base = picked[vs[0]][0]
            for v in vs:
                m = picked[v][0]
                rows.append([f, md_escape(v), f"{100 * m:.1f}", "" if v == vs[0] else f"{100 * (m - base):+.1f}"])
        L += md_table(["family", "variant", "best validation accuracy", f"difference to the first"], rows,
                      right={2, 3})
        L += ["", "Each variant at its own best grid point (one seed per point unless the table above says "
              "otherwise, so a difference of a few points is within the run-to-run spread of one seed).", ""]
    return L


def relational_section(groups, task_name):
    spec = RELATIONAL.get(task_name)
    if spec is None:
        return []
    kinds = ("non-relational", "relational")
    done = [g for g in groups if g.done]
    per = []
    for g in done:
        vals = {k: [_kind_accuracy(r, spec[k]) for r in g.done] for k in kinds}
        if any(v is None for k in kinds for v in vals[k]) or not vals["relational"]:
            continue
        per.append((g, vals))
    if not per:
        return []
    L = ["## Relational and non-relational questions", ""]
    L += [f"Re-tests {spec['paper']}: on Sort-of-CLEVR a CNN followed by an MLP answers the non-relational "
          "questions but not the relational ones, and a Relation Network answers both. Published:", ""]
    L += md_table(["model", "non-relational (%)", "relational (%)", "gap (points)"],
                  [list(p) for p in spec["published"]])
    L += ["", "Measured here (test split; mean ± 95% interval over seeds; the gap is non-relational minus "
          "relational per seed; the majority rate is each subtype's most frequent answer, weighted by items):", ""]
    rows, verdicts = [], []
    for g, vals in per:
        acc = {k: [a for a, _ in vals[k]] for k in kinds}
        maj = {k: vals[k][0][1] for k in kinds}
        nr, rl = mean_ci(acc["non-relational"]), mean_ci(acc["relational"])
        gap = mean_ci([a - b for a, b in zip(acc["non-relational"], acc["relational"])])
        cf = [mean_ci([r.accuracy(s) for r in g.done]) for s in ("closest", "furthest")]
        rows.append([md_escape(g.label), str(nr[2]), fmt_acc(*nr), f"{100 * maj['non-relational']:.1f}",
                     fmt_acc(*rl), f"{100 * maj['relational']:.1f}", fmt_acc(*gap, signed=True),
                     " / ".join(fmt_acc(*c) for c in cf)])
        above_nr = _excludes(nr[0], nr[1], maj["non-relational"])
        above_rl = _excludes(rl[0], rl[1], maj["relational"])
        gap_pos = None if gap[1] is None else gap[0] - gap[1] > 0
        if above_nr is None:
            v = "one seed: no verdict"
        elif not above_nr:
            v = "neither: its non-relational accuracy does not clear the majority rate"
        elif not above_rl:
            v = "like the CNN + MLP: above the majority rate on non-relational questions, not on relational ones"
        elif not gap_pos:
            v = "like the RN: above the majority rate on both, and no significant gap"
        else:
            v = "in between: above the majority rate on both, but relational questions significantly worse"
        verdicts.append((g.label, v))
    L += md_table(["variant", "n", "non-relational", "majority", "relational", "majority", "gap",
                   "closest / furthest"], rows, right=set(range(1, 8)))
    L += ["", "**Verdict per variant** (rules: *like the CNN + MLP* when the non-relational interval lies above its "
          "majority rate and the relational one does not; *like the RN* when both lie above and the gap's "
          "interval includes 0; *in between* when both lie above and the gap's interval excludes 0):", ""]
    L += [f"- {md_escape(label)}: {v}." for label, v in verdicts]
    rn = [label for label, v in verdicts if v.startswith("like the RN")]
    mlp = [label for label, v in verdicts if v.startswith("like the CNN")]
    L += ["", "**Does the finding reproduce at this scale?** "
          + (f"The RN's pattern appears in {', '.join(rn)}" if rn else "No variant shows the RN's pattern")
          + "; "
          + (f"the CNN + MLP's in {', '.join(mlp)}." if mlp else "none shows the CNN + MLP's.")
          + " The paper's contrast is between two architectures over the same CNN; here every family relates "
            "objects through attention, so the question is which of them reach relational answers at all at "
            "this size and budget, read against the published 63% (MLP) and 94% (RN).", ""]
    return L


# Idefics2 (Laurencon et al. 2024, Table 3): the same pretrained backbones under two layouts, frozen
# and trained; average scores, cross-attention vs fully autoregressive.
BACKBONES = {
    "paper": "Idefics2 (Laurençon et al. 2024, \"What matters when building vision-language models?\", Table 3)",
    "cross": "flamingo", "autoregressive": "llava",
    "published": {"frozen": (66.7, 60.3), "trained": (67.3, 69.5)},  # (cross-attention, fully autoregressive)
}


def _arm(run):
    """'frozen' when the run's last stage froze parameters, 'trained' when it trained them all; None
    for a run without stages or with a single stage (no backbone was given to it first)."""
    if len(run.stages) < 2:
        return None
    return "frozen" if int(run.stages[-1].get("frozen_params", 0)) > 0 else "trained"


def _sign(m, h):
    """Which side of 0 the 95% interval m ± h lies: 1 above, -1 below, 0 across it, None with one seed."""
    return None if h is None else (1 if m - h > 0 else -1 if m + h < 0 else 0)


def _by_seed(group):
    return {int(getattr(r, "seed", i)): r.accuracy() for i, r in enumerate(group.done)}


def backbones_section(groups):
    """Frozen vs trained backbones, cross-attention vs fully autoregressive, against Idefics2."""
    spec = BACKBONES
    arms = {}
    for g in groups:
        if not g.done or g.family not in (spec["cross"], spec["autoregressive"]):
            continue
        kinds = {_arm(r) for r in g.done}
        if len(kinds) != 1 or None in kinds:
            continue
        arms.setdefault(kinds.pop(), {}).setdefault(g.family, []).append(g)
    arms = {a: fams for a, fams in arms.items()
            if all(len(fams.get(f, [])) == 1 for f in (spec["cross"], spec["autoregressive"]))}
    if not arms:
        return []
    L = ["## Frozen and trained backbones", ""]
    L += [f"Re-tests {spec['paper']}: with the same pretrained vision encoder and LM, the cross-attention layout "
          "beat the fully autoregressive one with both backbones frozen, and lost to it with both trained. Here "
          f"{spec['cross']} is the cross-attention layout and {spec['autoregressive']} the fully autoregressive one; "
          "an arm is *frozen* when its last stage trains only the connector, *trained* when it trains everything.", ""]
    rows, diffs = [], {}
    for arm in ("frozen", "trained"):
        if arm not in arms:
            continue
        cross, auto = arms[arm][spec["cross"]][0], arms[arm][spec["autoregressive"]][0]
        c, a = _by_seed(cross), _by_seed(auto)
        seeds = sorted(set(c) & set(a))
        d = {s: c[s] - a[s] for s in seeds}
        diffs[arm] = d
        pc, pa = spec["published"][arm]
        rows.append([arm, md_escape(cross.label), fmt_acc(*mean_ci(list(c.values()))), md_escape(auto.label),
                     fmt_acc(*mean_ci(list(a.values()))), fmt_acc(*mean_ci(list(d.values())), signed=True),
                     f"{pc:.1f} vs {pa:.1f} ({pc - pa:+.1f})"])
    L += md_table(["arm", "cross-attention", "test accuracy", "fully autoregressive", "test accuracy",
                   "difference (cross − autoregressive)", "Idefics2 (cross vs autoregressive)"], rows,
                  right={2, 4, 5})
    L += ["", "Test split, mean ± 95% interval over seeds; the difference is taken per seed (both layouts see the "
          "same samples in the same order for a seed) and then averaged.", ""]

    def verdict(arm):
        m, h, n = mean_ci(list(diffs[arm].values()))
        want = spec["published"][arm][0] - spec["published"][arm][1]
        sign = _sign(m, h)
        if sign is None:
            return "one seed: no verdict"
        if sign == 0:
            return (f"not separated: the interval ({100 * (m - h):+.1f} to {100 * (m + h):+.1f} points) includes 0, "
                    "so this does not tell the layouts apart")
        agrees = (sign > 0) == (want > 0)
        return (("reproduces" if agrees else "reversed") + f": {'cross-attention' if sign > 0 else 'fully autoregressive'} "
                f"ahead by {100 * abs(m):.1f} points (interval excludes 0); Idefics2 had "
                f"{'cross-attention' if want > 0 else 'fully autoregressive'} ahead by {abs(want):.1f}")
    L += ["**Verdict per arm** (rules: *reproduces* when the difference's interval excludes 0 on the paper's side, "
          "*reversed* when it excludes 0 on the other side, *not separated* when it includes 0):", ""]
    L += [f"- {arm}: {verdict(arm)}." for arm in ("frozen", "trained") if arm in diffs]
    if len(diffs) == 2:
        seeds = sorted(set(diffs["frozen"]) & set(diffs["trained"]))
        m, h, n = mean_ci([diffs["frozen"][s] - diffs["trained"][s] for s in seeds])
        want = (spec["published"]["frozen"][0] - spec["published"]["frozen"][1]
                - spec["published"]["trained"][0] + spec["published"]["trained"][1])
        flip = {None: "one seed: no verdict", 1: "it does (interval excludes 0)",
                -1: "the opposite (interval excludes 0 below)", 0: "not separated (interval includes 0)"}[_sign(m, h)]
        L += ["", f"**Does freezing favour cross-attention?** The paper's claim is the flip itself: cross-attention's "
              f"lead with frozen backbones minus its lead with trained ones was {want:+.1f} points there; here "
              f"{fmt_acc(m, h, n, signed=True)} points: {flip}."]
    L += [""]
    return L


# What joins each family's vision to its LM (the connector), for the visual-tokens section.
CONNECTORS = {"llava": "MLP projector", "flamingo": "Perceiver resampler + gated cross-attention",
              "fuyu": "linear patch projection", "qwen2vl": "patch-merger MLP"}


def _visual_tokens(group):
    """Visual tokens of the first test sample at the first resolution the runs measured, or None."""
    for r in group.done:
        if r.cost:
            return int(r.cost[0]["visual_tokens"])
    return None


def _paired(a, b):
    """Per-seed differences a - b over the seeds both groups completed: (mean, half, n)."""
    x, y = _by_seed(a), _by_seed(b)
    return mean_ci([x[s] - y[s] for s in sorted(set(x) & set(y))])


def tokens_section(groups):
    """Visual tokens against the connector: within a family, its fewest- against its most-token variant;
    across families, connectors at about the same token count (within 25%)."""
    done = [(g, _visual_tokens(g)) for g in groups if g.done]
    done = [(g, v) for g, v in done if v]
    fams = {}
    for g, v in done:
        fams.setdefault(g.family, []).append((v, g))
    within = {f: sorted(vs, key=lambda x: x[0]) for f, vs in fams.items() if len({v for v, _ in vs}) > 1}
    if not within:
        return []
    L = ["## Visual tokens and connectors", ""]
    L += ["Re-tests Idefics2 (Laurençon et al. 2024, Table 4: a Perceiver pooling to 64 latents matched 128, "
          "71.7 vs 71.2) and MM1 (McKinzie et al. 2024: the number of visual tokens and the resolution matter "
          "more than the connector type). Visual tokens: those of the first test sample at the run's measured "
          "resolution (flamingo: its resampler's latents).", ""]
    rows = [[md_escape(g.label), g.family, CONNECTORS.get(g.family, "–"), str(v), fmt_acc(*mean_ci([r.accuracy() for r in g.done]))]
            for g, v in sorted(done, key=lambda x: (x[0].family, x[1]))]
    L += md_table(["variant", "family", "connector", "visual tokens", "test accuracy"], rows, right={3, 4})
    L += ["", "**Within a connector** (most tokens minus fewest, per seed, 95% interval):", ""]
    token_effects = []
    for f, vs in within.items():
        (v0, g0), (v1, g1) = vs[0], vs[-1]
        m, h, n = _paired(g1, g0)
        s = _sign(m, h)
        token_effects.append(s)
        verdict = {None: "one seed: no verdict", 1: "more tokens help", -1: "fewer tokens do better",
                   0: "not separated (the interval includes 0)"}[s]
        L.append(f"- {f}: {md_escape(g1.label)} ({v1}) minus {md_escape(g0.label)} ({v0}): "
                 f"{fmt_acc(m, h, n, signed=True)} points: {verdict}.")
    pairs = []
    for i, (ga, va) in enumerate(done):
        for gb, vb in done[i + 1:]:
            if ga.family != gb.family and max(va, vb) <= 1.25 * min(va, vb):
                pairs.append((ga, va, gb, vb))
    conn_effects = []
    if pairs:
        L += ["", "**Across connectors at about the same token count** (first minus second, per seed):", ""]
        for ga, va, gb, vb in pairs:
            m, h, n = _paired(ga, gb)
            s = _sign(m, h)
            conn_effects.append(s)
            verdict = {None: "one seed", 1: "separated", -1: "separated", 0: "not separated"}[s]
            L.append(f"- {md_escape(ga.label)} ({va}) minus {md_escape(gb.label)} ({vb}): "
                     f"{fmt_acc(m, h, n, signed=True)} points: {verdict}.")
    tokens_matter = any(s in (1, -1) for s in token_effects)
    conn_matter = any(s in (1, -1) for s in conn_effects)
    if None in token_effects or None in conn_effects:
        text = "not decided: some comparison has one seed."
    elif not pairs:
        text = "no two connectors were run at about the same token count, so only the token effects can be read."
    elif tokens_matter and not conn_matter:
        text = "yes: a token count separates within a connector, and no two connectors separate at a matched count."
    elif conn_matter and not tokens_matter:
        text = "no, the opposite: connectors separate at a matched token count, token counts within a connector do not."
    elif tokens_matter and conn_matter:
        text = "both matter here: token counts separate within a connector and connectors at a matched count."
    else:
        text = "neither separates at this budget and number of seeds."
    L += ["", f"**Do tokens matter more than the connector (MM1)?** {text}", ""]
    return L


def finish_section(groups):
    rows = []
    for g in groups:
        runs = [r for r in g.done if len(r.final_curve.get("step", [])) >= 3]
        if not runs:
            continue
        gains, finals = [], []
        for r in runs:
            steps = np.asarray(r.final_curve["step"], dtype=np.float64)
            acc = np.asarray(r.final_curve["accuracy"], dtype=np.float64)
            i = int(np.argmin(np.abs(steps - (steps[0] + 0.75 * (steps[-1] - steps[0])))))
            gains.append(acc[-1] - acc[i])
            finals.append(acc[-1])
        m, h, n = mean_ci(gains)
        if h is None:
            state = "flat" if abs(m) < 0.01 else ("rising" if m > 0 else "falling")
        else:
            state = "rising" if m - h > 0 else ("falling" if m + h < 0 else "flat (interval includes 0)")
        rows.append([md_escape(g.label), str(n), fmt_acc(*mean_ci(finals)), fmt_acc(m, h, n, signed=True), state])
    if not rows:
        return []
    L = ["## Did training finish?", ""]
    L += md_table(["variant", "n", "final validation accuracy", "gain over the last quarter (points)", "curve"],
                  rows, right={1, 2, 3})
    L += ["", "The gain is the final validation accuracy minus the one at three quarters of the training steps "
          "(per seed, then mean ± 95% interval). *rising*: its interval lies above 0 (more steps would likely "
          "help); *flat*: it includes 0 (with one seed: under 1 point).", ""]
    return L


def compute_section(groups):
    done = [g for g in groups if g.done and all(r.final_curve.get("train_flops") for r in g.done)]
    if len(done) < 2:
        return []
    totals = {id(g): float(np.mean([r.final_curve["train_flops"][-1] for r in g.done])) for g in done}
    budget = min(totals.values())
    rows, at_budget = [], []
    for g in done:
        vals = []
        for r in g.done:
            f = np.asarray(r.final_curve["train_flops"], dtype=np.float64)
            a = np.asarray(r.final_curve["accuracy"], dtype=np.float64)
            vals.append(float(np.interp(budget, f, a)))
        m_b = mean_ci(vals)
        m_f = mean_ci([_final_val(r) for r in g.done])
        at_budget.append((m_b[0], g.label))
        rows.append([md_escape(g.label), fmt_flops(g.done[0].flops_per_step), fmt_flops(totals[id(g)]),
                     fmt_acc(*m_f), fmt_acc(*m_b)])
    L = ["## Equal steps and equal compute", ""]
    L += md_table(["variant", "training FLOPs / step", "training FLOPs in all", "validation accuracy, end",
                   f"validation accuracy at {fmt_flops(budget)}"], rows, right={1, 2, 3, 4})
    by_steps = [g.label for g in sorted(done, key=lambda g: -mean_ci([_final_val(r) for r in g.done])[0])]
    by_flops = [label for _, label in sorted(at_budget, key=lambda x: -x[0])]
    L += ["", "Every variant trains the same steps on the same samples (the accuracy table's axis). The last column "
          f"reads each variant's validation curve at the training FLOPs the cheapest variant spent in all "
          f"({fmt_flops(budget)}; linear between curve points), the matched-compute axis. Order at equal steps: "
          f"{', '.join(md_escape(x) for x in by_steps)}; at equal compute: {', '.join(md_escape(x) for x in by_flops)}"
          + (" (the same order)." if by_steps == by_flops else " (a different order: the axis matters here)."), ""]
    return L


def majority_section(groups):
    rows = []
    for g in groups:
        if not g.done:
            continue
        subs = [e["subtype"] for e in g.done[0].eval if e["subtype"] != "all" and int(e["n"]) > 0]
        for s in subs:
            m, h, n = mean_ci([r.accuracy(s) for r in g.done])
            maj = next(float(e["majority"]) for e in g.done[0].eval if e["subtype"] == s)
            at = (m - h <= maj) if h is not None else (m <= maj + 0.02)
            if not at:
                continue
            col = f"accuracy_{s}"
            curves = [np.asarray(r.final_curve[col], dtype=np.float64) for r in g.done if col in r.final_curve]
            if curves:
                peak = max(float(c.max()) for c in curves)
                first = float(np.mean([c[0] for c in curves]))
                late = float(np.mean([c[len(c) // 2:].mean() for c in curves]))
                evidence = (f"validation: {100 * first:.1f} before training, {100 * late:.1f} over the second half, "
                            f"best point {100 * peak:.1f}")
            else:
                evidence = "no validation curve for this subtype"
            rows.append([md_escape(g.label), md_escape(s), fmt_acc(m, h, n), f"{100 * maj:.1f}", evidence])
    if not rows:
        return ["## Subtypes at the majority rate", "", "Every variant's interval lies above the majority rate on "
                "every subtype.", ""]
    L = ["## Subtypes at the majority rate", ""]
    L += md_table(["variant", "subtype", "test accuracy", "majority", "evidence"], rows, right={2, 3})
    L += ["", "Listed: the (variant, subtype) pairs whose 95% interval over seeds reaches the subtype's majority rate "
          "(with one seed: within 2 points of it). The evidence column reads the run's validation curve for that "
          "subtype: a curve that never leaves the majority rate is a plateau the budget did not end (or a capacity or "
          "resolution limit: the study's diagnostics say which).", ""]
    return L


def sections(groups, task_name):
    """The study sections this file supports, in page order."""
    return (selection_section(groups) + relational_section(groups, task_name) + backbones_section(groups)
            + tokens_section(groups) + finish_section(groups) + compute_section(groups) + majority_section(groups))
