"""Forgery-lab speed on one CPU core: frames rendered per second at 64 and 224 px, forging, and whole suites.

Run: `.venv/bin/python benchmarks/lab_speed.py` (prints a markdown table for BENCHMARKS.md).
Ratios are against a JPEG round trip of the same frames (OpenCV, quality 80) in the same process,
so they stay comparable on a busy machine.
"""
import time

import numpy as np
import torch

from dfworkbench.lab import jpeg, make_spec, make_suite, manipulate, render_clips, render_real, sample_identity, FAMILIES, _to_uint8


def best(fn, reps=3):
    "Best wall time of `reps` calls."
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)


def main(n_clips=8, n_frames=16):
    torch.set_num_threads(1)
    specs = [make_spec(sample_identity(np.random.default_rng([0, k])), [0, k], n_frames) for k in range(n_clips)]
    N = n_clips * n_frames
    rows = []
    for res in (64, 224):
        t_render = best(lambda: render_clips(specs, res))
        frames = _to_uint8(render_clips(specs, res)[1][0])
        t_jpeg = best(lambda: jpeg(frames, 80))
        rows.append((f"render {res} px ({N} frames, {n_clips} clips batched)", N / t_render, t_jpeg / t_render))
        rows.append((f"JPEG round trip {res} px (reference)", N / t_jpeg, 1.0))
        tgt, other = render_real(specs[0], res), specs[1]
        for fam in FAMILIES:
            t = best(lambda: manipulate(fam, tgt, other, rng=0))
            rows.append((f"forge {fam} {res} px (one clip of {n_frames} frames, renders included)", n_frames / t, t_jpeg / N * n_frames / t))
    t = best(lambda: make_suite("dfdc", "smoke", res=64, n_frames=n_frames), reps=1)
    s = make_suite("dfdc", "smoke", res=64, n_frames=n_frames)
    rows.append((f"suite dfdc/smoke 64 px ({len(s)} clips, real + forged + JPEG)", s.frames.shape[0] * n_frames / t, None))
    t = best(lambda: make_suite("ffpp", "smoke", res=64, n_frames=n_frames), reps=1)
    s = make_suite("ffpp", "smoke", res=64, n_frames=n_frames)
    rows.append((f"suite ffpp/smoke 64 px ({len(s)} clips, {len(s) / t:.0f} clips/s)", s.frames.shape[0] * n_frames / t, None))
    print("| what | frames/s | ratio to JPEG round trip |\n|---|---:|---:|")
    for name, fps, ratio in rows: print(f"| {name} | {fps:.0f} | {'' if ratio is None else f'{ratio:.3f}'} |")


if __name__ == "__main__":
    main()
