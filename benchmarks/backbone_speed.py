"""Frozen-forward speed of the backbone: open_clip's own forward vs HookedViT fused / explicit attention.

Speeds are reported as ratios against open_clip's `visual(x)` measured in the same process
(interleaved, median of repeats), never as absolute thresholds.

    python benchmarks/backbone_speed.py                  # fp32 CPU: ViT-B-16, micro-clip and micro-clip-hp, random weights
    python benchmarks/backbone_speed.py --gpu            # bf16 autocast on CUDA: ViT-B-16 and ViT-L-14
    python benchmarks/backbone_speed.py --threads 1 --clock cpu      # steadier on a shared CPU (frames per CPU-second)
    python benchmarks/backbone_speed.py --models ViT-B-16 --batch 4 --repeats 5 --json out.json
"""
import argparse, json, logging, os, platform, statistics, time

import torch

from dfworkbench.backbone import attn_impl_as, load_backbone
from dfworkbench.core import autocast

logging.getLogger().setLevel(logging.ERROR)


def _paths(m):
    "name -> callable(x) for every way of running the frozen forward."
    def hooked(impl):
        def run(x):
            with attn_impl_as(m, impl): return m(x)
        return run
    def layers(x):
        for s in m.forward_layers(x): pass  # q, k, v per layer for FCG (fused SDPA kernel, no L x L pattern)
        return s.resid_post
    return {"open_clip visual(x)": m.visual, "HookedViT fused": hooked("fused"),
            "HookedViT explicit": hooked("explicit"), "forward_layers (qkv)": layers}


def bench(name, device, batch, repeats, warmup, clock=time.perf_counter):
    "Frames/s of each path for backbone `name` (random weights), interleaved so drift hits all alike."
    torch.manual_seed(0)
    m = load_backbone(name, device=device).requires_grad_(False)
    s = m.preprocess_cfg.size
    x = torch.randn(batch, 3, s, s, device=device)
    paths, times = _paths(m), {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast(device):
        for _ in range(warmup):
            for f in paths.values(): f(x)
        sync()
        for _ in range(repeats):
            for k, f in paths.items():
                t = clock(); f(x); sync(); times.setdefault(k, []).append(clock() - t)
    ref = statistics.median(times["open_clip visual(x)"])
    return [dict(model=name, path=k, batch=batch, fps=batch / statistics.median(v), ratio=ref / statistics.median(v))
            for k, v in times.items()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA with bf16 autocast (ViT-B-16 and ViT-L-14 by default)")
    ap.add_argument("--models", nargs="+", default=None, help="backbone names (default: ViT-B-16 micro-clip micro-clip-hp on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="frames per forward (default 8 CPU, 64 GPU)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per path (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards per path first")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (steadier on a shared CPU; frames per CPU-second)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    if a.gpu and not torch.cuda.is_available(): raise SystemExit("--gpu asked for, but CUDA is not available here")
    if a.gpu and a.clock == "cpu": raise SystemExit("--clock cpu measures CPU work; use the wall clock on a GPU")
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    device = "cuda" if a.gpu else "cpu"
    if a.threads: torch.set_num_threads(a.threads)
    models = a.models or (["ViT-B-16", "ViT-L-14"] if a.gpu else ["ViT-B-16", "micro-clip", "micro-clip-hp"])
    batch = a.batch or (64 if a.gpu else 8)
    machine = (torch.cuda.get_device_name() if a.gpu else f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
    prec = "bf16 autocast" if a.gpu else "fp32"
    print(f"# backbone speed: {device} ({machine}), {prec}, torch {torch.__version__}, random weights, "
          f"batch {batch}, median of {a.repeats}, {a.clock} clock, load average {os.getloadavg()[0]:.1f} at start\n")
    print("| model | path | frames/s | speed vs open_clip |\n|---|---|---:|---:|")
    rows = []
    for name in models:
        for r in bench(name, device, batch, a.repeats, a.warmup, clock):
            rows.append(r); print(f"| {r['model']} | {r['path']} | {r['fps']:.1f} | {r['ratio']:.2f}x |", flush=True)
    if a.json:
        with open(a.json, "w") as f: json.dump(dict(device=device, machine=machine, precision=prec, clock=a.clock, rows=rows), f, indent=2)
    return rows


if __name__ == "__main__":
    main()
