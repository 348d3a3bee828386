"""Attention explorer speed: the median time of one widget update with cached views, against the first (uncached) view.

Run: `.venv/bin/python benchmarks/widget_speed.py` (prints a markdown table for BENCHMARKS.md).
One CPU thread; the micro-CLIP LN-tuning detector on 3 lab clips of 2 frames. An update is what moving
a control does: build the figure of the new view and copy its maps into the FigureWidget.
"""
import statistics
import time

import numpy as np
import torch

from dfworkbench.data import ClipCollate, ClipDataset
from dfworkbench.interpret.widgets import ViewCache, attention_explorer, map_figure
from dfworkbench.lab import load_suite
from dfworkbench.methods.lntuning import LNTuningConfig, LNTuningDetector


def main(n_updates=40):
    torch.set_num_threads(1); torch.manual_seed(0)
    suite = load_suite("ffpp", "smoke", res=64)
    ids = [i for i, m in enumerate(suite.meta) if m["split"] == "test" and m["label"] == 1][:3]
    det = LNTuningDetector(LNTuningConfig.from_preset("tiny", variant="ln")).eval()
    recs = [ClipDataset(suite, T=2)[i] for i in ids]
    cache = ViewCache(det, ClipCollate(det.backbone.preprocess_cfg)(recs), np.stack([r.frames for r in recs]))
    t = time.perf_counter(); map_figure(cache, 0, 0, "grad_rollout"); first = time.perf_counter() - t
    ex = attention_explorer(cache, methods=["rollout", "grad_rollout", "attention"])
    for m in ("rollout", "attention"): ex.controls["method"].value = m          # fill the cache
    ex.controls["method"].value = "grad_rollout"
    times, ctl = [], ex.controls
    for k in range(n_updates):
        name, value = [("frame", k % 2), ("clip", k % 3), ("opacity", 0.2 + 0.6 * (k % 2))][k % 3]
        t = time.perf_counter(); ctl[name].value = value; times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print("| what | ms | ratio to the uncached view |\n|---|---:|---:|")
    print(f"| first view of a method (forward + backward + figure), reference | {first * 1e3:.1f} | 1.00 |")
    print(f"| widget update with cached views (median of {n_updates}: frame, clip, opacity) | {med * 1e3:.1f} | {med / first:.2f} |")
    print(f"\nforwards computed during the {n_updates} updates: {cache.forwards - 3} (cache size {len(cache.store)})")


if __name__ == "__main__":
    main()
