"""Training-step speed of the FCG detector against its floor, a bare frozen forward of the same frames.

One run measures, for each backbone (random weights, fp32, T = 10, batch 2 clips, one CPU thread):

- `floor`: open_clip's own `visual(x)` on the B*T frames under `torch.no_grad()` (nothing else can be faster);
- `forward_layers`: the HookedViT layer walk the detector reads (q, k, v per layer, SDPA), no side network;
- `train step`: the FCG detector's forward (backbone without autograd + side network in fp32), its loss
  (focal per head + FCG loss), backward and an AdamW step, gradient clipping at 0.1.

The paths are interleaved and the median over repeats is taken. `--clock cpu` (default) counts the CPU
time of this one thread, which stays meaningful on a shared machine; `--clock wall` counts wall time.
Peak memory is what a call adds at its peak over the memory in use before it: the process's resident
set (peak reset through /proc/self/clear_refs) on a CPU, `torch.cuda.max_memory_allocated` on CUDA.

    python benchmarks/fcg_speed.py                       # micro-clip and ViT-B-16 on the CPU
    python benchmarks/fcg_speed.py --device cuda --models ViT-L-14 --batch 60   # bf16 backbone, faithful batch
"""
import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from dfworkbench.core import autocast, get_device, seed_everything
from dfworkbench.data import ClipBatch
from dfworkbench.methods.fcg import FCGConfig, FCGDetector


def _status_mib(key:str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"): return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(device) -> float:
    "Reset the peak counter; return the memory in use now (MiB)."
    if device.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); return torch.cuda.memory_allocated() / 2**20
    try: Path("/proc/self/clear_refs").write_text("5")
    except OSError: pass
    return _status_mib("VmRSS")


def _peak_mib(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_mib("VmHWM")


def _timed(fn, device, clock):
    "(seconds, MiB the call added at its peak over what was in use before it)."
    base = _reset_peak(device)
    t0 = time.thread_time() if clock == "cpu" else time.perf_counter()
    fn()
    if device.type == "cuda": torch.cuda.synchronize()
    dt = (time.thread_time() if clock == "cpu" else time.perf_counter()) - t0
    return dt, _peak_mib(device) - base


def measure(model, device, batch, T, repeats, clock):
    "Median seconds and peak MiB of the floor, the layer walk and a training step."
    seed_everything(0)
    det = FCGDetector(FCGConfig.from_preset("faithful", backbone=model, pretrained=None, T=T), device=device).train()
    with torch.no_grad(): det.prototypes.normal_()                                  # stand-in prototypes: the FCG loss runs
    opt = torch.optim.AdamW(det.trainable_parameters(), lr=1e-4, weight_decay=1e-3)
    s = det.backbone.preprocess_cfg.size
    b = ClipBatch(torch.randn(batch, T, 3, s, s, device=device), torch.arange(batch, device=device) % 2, [str(i) for i in range(batch)])
    def floor():
        with torch.no_grad(), autocast(device): det.backbone.visual(b.frames.flatten(0, 1))
    def walk():
        with torch.no_grad(), autocast(device):
            for _ in det.backbone.forward_layers(b.frames): pass
    def step():
        with autocast(device): out = det(b); loss = det.loss(out, b).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(det.trainable_parameters(), 0.1)
        opt.step(); opt.zero_grad(set_to_none=True)
    paths = {"floor": floor, "forward_layers": walk, "train step": step}
    for fn in paths.values(): fn()                                                   # warm-up
    got = {k: [] for k in paths}
    for _ in range(repeats):
        for k, fn in paths.items(): got[k].append(_timed(fn, device, clock))
    out = {}
    for k, v in got.items():
        sec = statistics.median(x[0] for x in v)
        out[k] = dict(seconds=sec, clips_per_s=batch / sec, peak_mib=max(x[1] for x in v))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["micro-clip", "ViT-B-16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    a = p.parse_args()
    device = get_device(a.device)
    torch.set_num_threads(a.threads)
    clock = "wall" if device.type == "cuda" else a.clock
    print(f"# fcg_speed: torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"{a.threads} thread(s), clock {clock}, T={a.T}, batch {a.batch} clips, {a.repeats} repeats, "
          f"{'bf16 backbone, fp32 side network' if device.type == 'cuda' else 'fp32'}, random weights")
    print("| model | path | clips/s | ratio to floor | peak extra MiB |\n|---|---|---:|---:|---:|")
    for m in a.models:
        r = measure(m, device, a.batch, a.T, a.repeats, clock)
        for k, v in r.items():
            print(f"| {m} | {k} | {v['clips_per_s']:.3f} | {v['seconds'] / r['floor']['seconds']:.3f} | {v['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
