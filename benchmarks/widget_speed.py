"""Widget speed: the median time of one update with cached views, for each explorer of `22_widgets`,
against the first (uncached) view of the attention explorer.

Run: `.venv/bin/python benchmarks/widget_speed.py` (prints a markdown table for BENCHMARKS.md).
One CPU thread; the micro-CLIP detectors at their `tiny` presets on 3 lab clips. An update is what
moving a control does: build the new view's figure with the plain function and copy what changed
into the FigureWidget (`refresh`). Every view the updates need is computed before the clock starts.
"""
import statistics
import time

import numpy as np
import torch

from dfworkbench.data import ClipCollate, ClipDataset
from dfworkbench.interpret.widgets import (FCGViews, ViewCache, attention_explorer, detector_comparison, fcg_explorer,
                                           ib_explorer, ib_summary, map_figure)
from dfworkbench.lab import load_suite
from dfworkbench.methods.fcg import FCGConfig, FCGDetector
from dfworkbench.methods.infobottleneck import IBConfig, IBDetector, collect_ib
from dfworkbench.methods.lntuning import LNTuningConfig, LNTuningDetector


def median_update(ctl, moves, n_updates):
    "Median seconds of setting ctl[name].value over n_updates moves taken in turn from `moves` [(name, [values])]."
    times = []
    for k in range(n_updates):
        name, values = moves[k % len(moves)]
        value = values[(k // len(moves)) % len(values)]
        if ctl[name].value == value: value = values[(k // len(moves) + 1) % len(values)]
        t = time.perf_counter(); ctl[name].value = value; times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(n_updates=40):
    torch.set_num_threads(1); torch.manual_seed(0)
    suite = load_suite("ffpp", "smoke", res=64)
    ids = [i for i, m in enumerate(suite.meta) if m["split"] == "test" and m["label"] == 1][:3]
    det = LNTuningDetector(LNTuningConfig.from_preset("tiny", variant="ln")).eval()
    recs = [ClipDataset(suite, T=2)[i] for i in ids]
    cache = ViewCache(det, ClipCollate(det.backbone.preprocess_cfg)(recs), np.stack([r.frames for r in recs]))
    t = time.perf_counter(); map_figure(cache, 0, 0, "grad_rollout"); first = time.perf_counter() - t
    rows = [("first view of a method (forward + backward + figure), reference", first)]

    ex = attention_explorer(cache, methods=["rollout", "grad_rollout", "attention"])
    for m in ("rollout", "attention", "grad_rollout"): ex.controls["method"].value = m          # fill the cache
    rows.append(("attention explorer (frame, clip, opacity)",
                 median_update(ex.controls, [("frame", [0, 1]), ("clip", [0, 1, 2]), ("opacity", [0.2, 0.8])], n_updates)))

    fcg = FCGDetector(FCGConfig.from_preset("tiny")).eval(); T = fcg.config.T
    recs_T = [ClipDataset(suite, T=T)[i] for i in ids]; imgs = np.stack([r.frames for r in recs_T])
    ib = IBDetector(IBConfig.from_preset("tiny")).eval()
    caches = {n: ViewCache(d, ClipCollate(d.backbone.preprocess_cfg)(recs_T), imgs) for n, d in [("ln", det), ("fcg", fcg), ("ib", ib)]}
    cmp = detector_comparison(caches, methods=["rollout"])
    rows.append(("detector comparison, 3 detectors (frame, clip, opacity)",
                 median_update(cmp.controls, [("frame", [0, 1, 2, 3]), ("clip", [0, 1, 2]), ("opacity", [0.2, 0.8])], n_updates)))

    fx = fcg_explorer(FCGViews(fcg, caches["fcg"].batch, imgs))
    rows.append(("FCG explorer (frame, part, layer, head, patch row)",
                 median_update(fx.controls, [("frame", [0, 1, 2, 3]), ("part", ["lips", "skin", "eyes", "nose"]), ("layer", [None, 0, 1, 2]),
                                             ("head", [None, 0, 1]), ("row", [0, 3, 7])], n_updates)))

    summary = ib_summary(collect_ib(ib, ClipDataset(suite.subset("test"), T=1), ClipCollate(ib.backbone.preprocess_cfg)))
    ix = ib_explorer(caches["ib"], summary)
    rows.append(("information-bottleneck explorer (frame, clip, block)",
                 median_update(ix.controls, [("frame", [0, 1, 2, 3]), ("clip", [0, 1, 2]), ("block", [0, 1, 2, 3])], n_updates)))
    forwards = sum(c.forwards for c in caches.values())

    print("| what | ms | ratio to the uncached view |\n|---|---:|---:|")
    for what, s in rows:
        label = what if what.startswith("first") else f"{what}: median of {n_updates} updates"
        print(f"| {label} | {s * 1e3:.1f} | {s / first:.2f} |")
    print(f"\nforwards computed by the caches of the comparison and the information-bottleneck explorer: {forwards} "
          f"(3 rollouts and 4 block maps, each once)")


if __name__ == "__main__":
    main()
