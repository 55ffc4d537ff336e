#!/usr/bin/env python3
"""vlmlab on 2 pinned CPU cores against torch on a CUDA GPU, same models and batch (issue 24).

Run on the GPU host (torch 2.x with CUDA), from the repository root, after building vlmlab there:
    python3 bench/torch_gpu.py --vlmlab build/experiments/vlmlab [--families llava,qwen2vl] [--sizes small,large]

For each family and size it has `vlmlab bench-model --export` write the model and its training batch
(the models of bench/torch_reference.py, which builds the same model in plain torch and loads the
weights), times vlmlab's training step under `taskset -c CORES` (2 threads), then torch's training
step (forward, loss, backward, AdamW) on the GPU: eager, and torch.compile with
mode="reduce-overhead" (CUDA graphs), each after warmup, with torch.cuda.synchronize() around every
timed step. Prints medians in ms and the ratio vlmlab / torch (below 1: vlmlab faster).
Timings of vlmlab and torch alternate ROUNDS times, as in torch_reference.py.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (its models, loader and vlmlab runner)

torch = tr.torch


def cuda_bench(family, folder, compiled):
    torch.set_default_device("cuda")  # tensors the models make inside forward land on the GPU
    b = tr.TorchBench(family, folder)
    b.model = b.model.cuda()
    b.train_in = {k: v.cuda() for k, v in b.train_in.items()}
    b.labels = b.labels.cuda()
    decay = [p for p in b.model.parameters() if p.dim() >= 2]
    rest = [p for p in b.model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, fused=True)
    model = torch.compile(b.model, mode="reduce-overhead") if compiled else b.model

    def step():
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlmlab", default="build/experiments/vlmlab")
    ap.add_argument("--families", default="llava,qwen2vl")
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--cores", default="0,1", help="the CPU cores vlmlab is pinned to (taskset -c)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles in them)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_gpu.py: no CUDA device")
    exe = os.path.abspath(a.vlmlab)
    threads = str(len(a.cores.split(",")))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; vlmlab on cores {a.cores}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmlab_torchgpu_") as tmp:
        for family in a.families.split(","):
            for size in a.sizes.split(","):
                folder = os.path.join(tmp, f"{family}_{size}")
                info = tr.run_vlmlab(exe, "--family", family, "--size", size, "--export", folder)
                steps = {"eager": cuda_bench(family, folder, False), "compile": cuda_bench(family, folder, True)}
                v, t = [], {k: [] for k in steps}
                for _ in range(a.rounds):
                    r = tr.subprocess.run(["taskset", "-c", a.cores, exe, "bench-model", "--family", family, "--size",
                                           size, "--threads", threads, "--time", "train", "--repeats", str(a.repeats)],
                                          capture_output=True, text=True, env=tr.vlmlab_env(), check=True)
                    v += tr.json.loads(r.stdout.strip().splitlines()[-1])["train"]["ms"]
                    for k, s in steps.items():
                        t[k] += time_cuda(s, a.warmup, a.repeats)
                vm = statistics.median(v)
                row = {"family": family, "size": size, "vlmlab_ms": vm, "gemm": info.get("gemm", "?")}
                for k in steps:
                    row[k] = statistics.median(t[k])
                rows.append(row)
                print(f"{family} {size}: vlmlab {vm:.2f} ms ({threads} cores, {row['gemm']}), torch eager "
                      f"{row['eager']:.2f} ms, compiled {row['compile']:.2f} ms", flush=True)
    print("\n| family | size | vlmlab 2 cores ms | torch CUDA eager ms | torch.compile (CUDA graphs) ms | "
          "vlmlab/eager | vlmlab/compiled |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['size']} | {r['vlmlab_ms']:.2f} | {r['eager']:.2f} | {r['compile']:.2f} | "
              f"{r['vlmlab_ms'] / r['eager']:.2f} | {r['vlmlab_ms'] / r['compile']:.2f} |")


if __name__ == "__main__":
    main()
