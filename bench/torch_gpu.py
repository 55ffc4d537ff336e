#!/usr/bin/env python3
"""vlmlab on 2 pinned CPU cores against torch on the same 2 cores and on a CUDA GPU (issue 24).

Run on the GPU host (torch 2.x with CUDA), from the repository root, with a vlmlab binary that runs
there (built there, or carried; see docs/performance.md, "On the GPU host"):
    python3 bench/torch_gpu.py --vlmlab build/experiments/vlmlab \
        [--bench-families build/bench/bench_families] [--cores auto] [--families llava,qwen2vl] [--sizes small,large]

For each family and size it has `vlmlab bench-model --export` write the model and its training batch
(the models of bench/torch_reference.py, which builds the same model in plain torch and loads the
weights) and times the same training step (batch 32: forward, loss, backward, AdamW) four ways:
  - vlmlab under `taskset -c CORES`, one thread per core (`bench-model --time train`);
  - torch on the CPU under the same `taskset -c CORES`, torch.set_num_threads(number of cores), in a
    process of its own (torch's own BLAS: MKL for matmuls, oneDNN where torch picks it);
  - torch on the GPU, eager (fused AdamW), torch.compile (inductor, default mode) and torch.compile
    with mode="reduce-overhead" (inductor with CUDA graphs), each after warmup (torch.compile compiles
    there), torch.cuda.synchronize() around every timed step. A mode that fails is reported as such
    (with torch 2.11 the CUDA-graphs capture fails for both models, and a failed capture can leave
    the CUDA context unusable for the rest of the process: time it alone, --gpu-modes graphs).
ROUNDS rounds, the ways alternating within each. Prints medians in ms and the ratios vlmlab / torch
(below 1: vlmlab faster). With --bench-families, it first times vlmlab's training step with its
products in fp32 and in bf16 (bench_families' train_step, [train] precision = "bf16") on the same
cores, at 1 and 2 threads, with the FMA peak bench_families measures there. --json writes every
sample.

--cores auto takes two logical CPUs on different physical cores (not CPU 0, where the kernel's
interrupts and this script's own GPU-feeding thread tend to run; the GPU timings are not pinned).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# torch first, before torch_reference sets OMP_WAIT_POLICY=PASSIVE for its own 2-thread setting B:
# libgomp reads it once, when torch loads it, so the CPU worker below runs torch's default wait policy.
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (its models, loader and vlmlab runner)


# ---- the machine ------------------------------------------------------------------------------

def pick_cores(n=2):
    """n logical CPUs on distinct physical cores of one package, skipping CPU 0 where possible."""
    seen, cpus = set(), []
    allowed = sorted(os.sched_getaffinity(0))
    for cpu in allowed:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "core_id") as f:
                core = int(f.read())
            with open(base + "physical_package_id") as f:
                pkg = int(f.read())
        except OSError:
            core, pkg = cpu, 0
        if (pkg, core) in seen:
            continue
        seen.add((pkg, core))
        cpus.append((pkg, cpu))
    pkg0 = [c for p, c in cpus if p == cpus[0][0]]
    pool = [c for c in pkg0 if c != 0] if len(pkg0) > n else pkg0
    return pool[:n]


def describe_machine(cores):
    lines = []
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU family", "Model:", "Thread(s) per core", "Core(s) per", "Socket(s)", "CPU(s):",
                "L2 cache", "L3 cache", "CPU max MHz", "Hypervisor")
        lines += ["  " + " ".join(l.split()) for l in lscpu.splitlines() if l.strip().startswith(keep)]
        with open("/proc/cpuinfo") as f:
            flags = next(l for l in f if l.startswith("flags")).split()
        lines.append("  flags: " + " ".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                                            if x in flags))
    except Exception as e:  # noqa: BLE001
        lines.append(f"  (lscpu: {e})")
    sib = []
    for c in cores:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                sib.append(f"cpu{c}: siblings {f.read().strip()}")
        except OSError:
            pass
    lines.append(f"  pinned cores {','.join(map(str, cores))} ({'; '.join(sib)})")
    lines.append(f"  kernel {platform.release()}, load average {' '.join('%.2f' % x for x in os.getloadavg())}")
    cfg = torch.__config__.show()
    blas = [l.strip() for l in cfg.splitlines() if "BLAS_INFO" in l or "USE_MKLDNN" in l or "USE_MKL" in l]
    lines.append(f"  torch {torch.__version__}: mkl {torch.backends.mkl.is_available()}, "
                 f"onednn {torch.backends.mkldnn.is_available()}; {'; '.join(blas)[:300]}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"  GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
                     f"CUDA {torch.version.cuda}")
    return "\n".join(lines)


# ---- torch on the CPU (a worker process under taskset) --------------------------------------

def cpu_worker(family, folder, threads, warmup, repeats):
    torch.set_num_threads(threads)
    b = tr.TorchBench(family, folder)
    decay = [p for p in b.model.parameters() if p.dim() >= 2]
    rest = [p for p in b.model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
    try:  # torch's fastest AdamW on the CPU where it has one (2.4 and later), else its default
        b.opt = torch.optim.AdamW(groups, lr=2e-3, fused=True)
    except (RuntimeError, TypeError, ValueError):
        b.opt = torch.optim.AdamW(groups, lr=2e-3)
    ms = b.time("train", warmup, repeats, 0)
    print(json.dumps({"ms": ms, "threads": torch.get_num_threads()}))


def torch_cpu_round(cores, family, folder, warmup, repeats):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_"))}
    r = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), sys.executable, os.path.abspath(__file__),
                        "--cpu-worker", family, folder, str(len(cores)), str(warmup), str(repeats)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"torch CPU worker failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["ms"]


# ---- torch on the GPU ---------------------------------------------------------------------------

def cuda_bench(family, folder, mode):
    """A training step on the GPU: mode eager, compile (inductor) or graphs (compile, reduce-overhead)."""
    b = tr.TorchBench(family, folder)  # built on the CPU: no CUDA random numbers outside a graph capture
    b.model = b.model.cuda()
    for m in b.model.modules():  # plain tensor attributes (RoPE frequencies) follow the parameters
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter):
                setattr(m, k, v.cuda())
    b.train_in = {k: v.cuda() for k, v in b.train_in.items()}
    b.labels = b.labels.cuda()
    decay = [p for p in b.model.parameters() if p.dim() >= 2]
    rest = [p for p in b.model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, fused=True)
    if mode == "eager":
        model = b.model
    else:
        model = torch.compile(b.model, mode="reduce-overhead" if mode == "graphs" else None)

    def step():  # the models make their own tensors on their inputs' device
        if mode == "graphs":
            torch.compiler.cudagraph_mark_step_begin()
        logits, _ = model(b.train_in)
        tr.loss_of(logits, b.labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_cuda(step, warmup, repeats):
    for _ in range(warmup):
        step()
    ms = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def run_bench_families(exe, cores, families, sizes, reps):
    """vlmlab's training step in fp32 and bf16 (bench_families train_step), 1 and 2 threads, pinned."""
    filt = f"({'|'.join(families)})/({'|'.join(sizes)})/train_step"
    r = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), exe, f"--benchmark_filter={filt}",
                        f"--benchmark_repetitions={reps}", "--benchmark_enable_random_interleaving=true",
                        "--benchmark_format=json"], capture_output=True, text=True, env=tr.vlmlab_env())
    if r.returncode != 0:
        raise RuntimeError(f"bench_families failed ({r.returncode}):\n{r.stderr[-2000:]}")
    out = {}
    for bm in json.loads(r.stdout)["benchmarks"]:
        if bm.get("run_type") != "iteration":
            continue
        name = bm["run_name"]  # e.g. llava/large/train_step/threads:2/bf16:1/real_time
        d = out.setdefault(name.replace("/real_time", ""), {"ms": [], "gflops": [], "of_peak": [], "peak": []})
        d["ms"].append(bm["real_time"])
        d["gflops"].append(bm.get("GFLOP/s", 0.0))
        d["of_peak"].append(bm.get("of_peak", 0.0))
        d["peak"].append(bm.get("peak_GFLOP/s", 0.0))
        d["label"] = bm.get("label", "")
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--cpu-worker":
        family, folder, threads, warmup, repeats = sys.argv[2:7]
        cpu_worker(family, folder, int(threads), int(warmup), int(repeats))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlmlab", default="build/experiments/vlmlab")
    ap.add_argument("--bench-families", help="bench_families binary: also time vlmlab's fp32 and bf16 steps")
    ap.add_argument("--families", default="llava,qwen2vl")
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--cores", default="auto", help="CPUs for vlmlab and torch's CPU step (taskset -c), or auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles in them)")
    ap.add_argument("--gpu-modes", default="eager,compile,graphs")
    ap.add_argument("--bf16-sizes", default="large", help="sizes of the fp32 / bf16 comparison (--bench-families)")
    ap.add_argument("--no-torch-cpu", action="store_true")
    ap.add_argument("--json", help="write every sample here")
    a = ap.parse_args()
    cores = pick_cores(2) if a.cores == "auto" else [int(c) for c in a.cores.split(",")]
    gpu = torch.cuda.is_available()
    modes = [m for m in a.gpu_modes.split(",") if m] if gpu else []
    exe = os.path.abspath(a.vlmlab)
    threads = str(len(cores))
    print("machine:\n" + describe_machine(cores), flush=True)
    if not gpu:
        print("no CUDA device: the GPU columns stay empty", flush=True)
    rows, dump = [], {"cores": cores, "cells": [], "bf16": None}
    if a.bench_families:  # first: the quick part, and the one that needs no GPU
        dump["bf16"] = run_bench_families(os.path.abspath(a.bench_families), cores, a.families.split(","),
                                          a.bf16_sizes.split(","), 3)
        for name, d in dump["bf16"].items():
            print(f"{name}: {statistics.median(d['ms']):.2f} ms ({d['label']})", flush=True)
    with tempfile.TemporaryDirectory(prefix="vlmlab_torchgpu_") as tmp:
        for family in a.families.split(","):
            for size in a.sizes.split(","):
                folder = os.path.join(tmp, f"{family}_{size}")
                info = tr.run_vlmlab(exe, "--family", family, "--size", size, "--export", folder)
                steps, failed = {}, {}
                for m in modes:
                    try:
                        steps[m] = cuda_bench(family, folder, m)
                    except Exception as e:  # noqa: BLE001
                        failed[m] = f"{type(e).__name__}: {e}"[:300]
                v, tc, t = [], [], {m: [] for m in steps}
                flops = flops_full = 0
                for _ in range(a.rounds):
                    r = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), exe, "bench-model", "--family",
                                        family, "--size", size, "--threads", threads, "--time", "train",
                                        "--repeats", str(a.repeats)],
                                       capture_output=True, text=True, env=tr.vlmlab_env(), check=True)
                    res = json.loads(r.stdout.strip().splitlines()[-1])["train"]
                    v += res["ms"]
                    flops, flops_full = res["flops"], res.get("flops_full", res["flops"])
                    if not a.no_torch_cpu:
                        tc += torch_cpu_round(cores, family, folder, 2, a.repeats)
                    for m in list(steps):
                        try:
                            t[m] += time_cuda(steps[m], a.warmup, a.repeats)
                        except Exception as e:  # noqa: BLE001
                            failed[m] = f"{type(e).__name__}: {e}"[:300]
                            del steps[m]
                            t.pop(m, None)
                row = {"family": family, "size": size, "vlmlab_ms": statistics.median(v), "gemm": info.get("gemm", "?"),
                       "cpu": info.get("cpu", "?"), "flops": flops, "flops_full": flops_full,
                       "torch_cpu_ms": statistics.median(tc) if tc else None, "failed": failed}
                for m in t:
                    row[m] = statistics.median(t[m])
                rows.append(row)
                dump["cells"].append(dict(row, vlmlab_samples=v, torch_cpu_samples=tc, gpu_samples=t))
                gpu_txt = ", ".join(f"{m} {row[m]:.2f} ms" for m in t) + "".join(f", {m} FAILED" for m in failed)
                cpu_txt = f"torch CPU {row['torch_cpu_ms']:.2f} ms, " if tc else ""
                print(f"{family} {size}: vlmlab {row['vlmlab_ms']:.2f} ms ({threads} cores, {row['gemm']}), {cpu_txt}"
                      f"torch GPU {gpu_txt}", flush=True)
                for m, e in failed.items():
                    print(f"  {m}: {e}", flush=True)
    mode_names = {"eager": "eager", "compile": "torch.compile", "graphs": "compile+CUDA graphs"}
    print(f"\nvlmlab and torch CPU pinned to cores {','.join(map(str, cores))} ({threads} threads each); "
          "medians in ms per training step (batch 32); ratio = vlmlab / other (< 1: vlmlab faster)")
    hdr = ["family", "size", "vlmlab", "torch CPU"] + [f"torch GPU {mode_names[m]}" for m in modes] + \
          ["vlmlab/torch CPU"] + [f"vlmlab/GPU {mode_names[m]}" for m in modes]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        cells = [r["family"], r["size"], f"{r['vlmlab_ms']:.2f}",
                 f"{r['torch_cpu_ms']:.2f}" if r["torch_cpu_ms"] else "-"]
        cells += [f"{r[m]:.2f}" if m in r else "failed" for m in modes]
        cells += [f"{r['vlmlab_ms'] / r['torch_cpu_ms']:.3f}" if r["torch_cpu_ms"] else "-"]
        cells += [f"{r['vlmlab_ms'] / r[m]:.3f}" if m in r else "-" for m in modes]
        print("| " + " | ".join(cells) + " |")
    if dump["bf16"]:
        print("\nvlmlab training step, products in fp32 / bf16 (bench_families train_step, medians of 3 "
              "repetitions, same cores):")
        print("| benchmark | ms | GFLOP/s | of the fp32 FMA peak | peak GFLOP/s | label |")
        print("|---|---|---|---|---|---|")
        for name, d in dump["bf16"].items():
            print(f"| {name} | {statistics.median(d['ms']):.2f} | {statistics.median(d['gflops']):.1f} | "
                  f"{statistics.median(d['of_peak']):.3f} | {statistics.median(d['peak']):.1f} | {d['label']} |")
        for name, d in dump["bf16"].items():
            if "/bf16:1" in name:
                fp = dump["bf16"].get(name.replace("/bf16:1", "/bf16:0"))
                if fp:
                    print(f"bf16 speed-up {name.replace('/bf16:1', '')}: "
                          f"{statistics.median(fp['ms']) / statistics.median(d['ms']):.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dump, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
