"""How long the micro-CLIP takes to build (random weights) and to load from the shipped checkpoint.

Moved here from the tests and the micro-CLIP lesson, which no longer assert a wall-clock time
(a shared CPU makes such asserts flaky). Median of repeats, in one process; absolute seconds on this
machine only: compare runs of this script, not a threshold.

    python benchmarks/load_speed.py                 # 5 repeats each
    python benchmarks/load_speed.py --repeats 10 --json out.json
"""
import argparse, json, logging, platform, statistics, time

from dfworkbench.backbone import load_backbone

logging.getLogger().setLevel(logging.ERROR)


def timed(fn, repeats:int) -> list:
    out = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    a = ap.parse_args()
    load_backbone("micro-clip")  # warm imports
    runs = {"random init (vision)": timed(lambda: load_backbone("micro-clip"), a.repeats),
            "shipped checkpoint (vision + text)": timed(lambda: load_backbone("micro-clip", "lab", text=True), a.repeats)}
    res = {k: dict(median_s=round(statistics.median(v), 4), min_s=round(min(v), 4)) for k, v in runs.items()}
    print(f"micro-CLIP load times on {platform.processor() or platform.machine()}, {a.repeats} repeats")
    for k, v in res.items(): print(f"  {k:38s} median {v['median_s']:.3f} s   min {v['min_s']:.3f} s")
    if a.json: json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
