"""Training-step speed of the LN-tuning detector: frames per second and peak memory.

On a GPU this measures the faithful preset (ViT-L-14, random weights, bf16 autocast, batch 128):

    python benchmarks/train_speed.py --preset faithful --device cuda

On a CPU it measures what a CPU can do in reasonable time (the tiny preset, and ViT-B-16 at a small
batch), and reports the ratio of LN-tuning to linear probing in the same run: both back-propagate
into the head, but LN-tuning also through every block of the backbone.

    python benchmarks/train_speed.py --preset tiny --device cpu
"""
import argparse
import json
import platform
import resource
import time

import torch

from dfworkbench.core import autocast, get_device, seed_everything
from dfworkbench.data import ClipBatch
from dfworkbench.methods.lntuning import LNTuningConfig, LNTuningDetector, n_trainable


def step_speed(cfg, device, batch_size, steps, warmup):
    "Frames per second of forward + loss + backward + AdamW step, and peak memory in MiB."
    seed_everything(0)
    det = LNTuningDetector(cfg.replace(pretrained=None), device=device).to(device).train()
    opt = torch.optim.AdamW(det.trainable_parameters(), lr=cfg.lr)
    size = det.backbone.preprocess_cfg.size
    batch = ClipBatch(torch.randn(batch_size, 1, 3, size, size, device=device),
                     torch.arange(batch_size, device=device) % 2, [str(i) for i in range(batch_size)])
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda": torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast(device):
            out = det(batch)
            loss = det.loss(out, batch).total
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if device.type == "cuda": torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(backbone=cfg.backbone, variant=cfg.variant, batch=batch_size, trainable=n_trainable(det),
                frames_per_s=round(batch_size * steps / dt, 1), peak_mib=round(peak), dtype="bf16" if device.type == "cuda" else "fp32")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=list(LNTuningConfig.PRESETS))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, help="frames per step (default: the preset's on CUDA, 32 on CPU)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    device = get_device(a.device)
    cfg = LNTuningConfig.from_preset(a.preset)
    bs = a.batch or (cfg.batch_size if device.type == "cuda" else 32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    rows = [step_speed(cfg.replace(variant=v), device, bs, a.steps, a.warmup) for v in ("ln", "linear_probe")]
    for r in rows: print(json.dumps(r))
    print(f"machine: {name}; LN-tuning step costs {rows[1]['frames_per_s'] / rows[0]['frames_per_s']:.2f}x a linear-probe step")


if __name__ == "__main__":
    main()
