"""What the report pages share: statistics (95% t intervals, computed here so they need no scipy),
number formatting with fixed rules (the same numbers always print the same), markdown tables and
saving a figure without metadata (the same data give the same bytes). Used by report.py and
report_study.py."""
import math
import os

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_METADATA = {"Software": None}  # no matplotlib version, no date: the same data give the same bytes


# ---------------------------------------------------------------------------------------------
# Statistics

def _betacf(a, b, x):
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom, t >= 0."""
    return 1.0 - 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p, df):
    """The t with P(T <= t) = p, for p > 0.5 (bisection: slow, exact enough, deterministic)."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_ci(values):
    """(mean, half-width of the 95% t interval or None when n < 2, n)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return float("nan"), None, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, None, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t_quantile(0.975, n - 1) * sd / math.sqrt(n), n


def pct(samples, q):
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if len(samples) else float("nan")


# ---------------------------------------------------------------------------------------------
# Formatting (fixed rules, so the same numbers always print the same)

def fmt_pct(x):
    return "–" if x is None or x != x else f"{100.0 * x:.1f}"


def fmt_acc(mean, half, n, signed=False):
    """A fraction as "mean ± half" in % (one decimal; "+x" when signed, for differences)."""
    if n == 0 or mean != mean:
        return "–"
    m = f"{100.0 * mean:+.1f}" if signed else f"{100.0 * mean:.1f}"
    return m if half is None else f"{m} ± {100.0 * half:.1f}"


def fmt_ms(v):
    if v is None or v != v:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_spread(samples):
    """Latency samples (ms) as "median (p10–p90)", or "–" when there are none."""
    if not samples:
        return "–"
    return f"{fmt_ms(pct(samples, 50))} ({fmt_ms(pct(samples, 10))}–{fmt_ms(pct(samples, 90))})"


def fmt_int(v):
    return f"{int(v):,}"


def fmt_bytes(b):
    b = int(b)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            v = b / size
            return f"{v:.0f} {unit}" if v >= 100 else (f"{v:.1f} {unit}" if v >= 10 else f"{v:.2f} {unit}")
    return f"{b} B"


def fmt_flops(f):
    f = float(f)
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if f >= size:
            return f"{f / size:.3g} {unit}"
    return f"{f:.0f} FLOP"


def md_escape(s):
    s = str(s).replace("\r", " ").replace("\n", " ")
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def md_table(header, rows, right=()):
    """A pipe table; columns whose index is in `right` are right-aligned."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return out


def short_sweep(sweep):
    """"train.lr=0.001;task.image_size=75" -> "lr=0.001, image_size=75" (run ids use the last part too)."""
    parts = [p for p in sweep.split(";") if p]
    return ", ".join(p.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + p.split("=", 1)[1] if "=" in p else p
                     for p in parts)


def save(fig, out_dir, name):
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    fig.savefig(os.path.join(out_dir, "figures", name), dpi=110, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return "figures/" + name
