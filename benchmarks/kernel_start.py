"""What a lesson kernel costs before its first line of work: a new Python against a fork of the preloaded kernel server.

`run_lesson` forks each lesson's kernel from a `KernelServer` that imported torch, open_clip,
scikit-learn, pandas and plotly once (`KERNEL_PRELOAD`). This script runs a two-cell lesson that
imports what most lessons import, with the kernel forked and as a new process, interleaved, and
prints the median wall time and CPU time of each (the CPU time counts the lesson's kernel, read from
the kernel itself). Ratios are within this one run; the first forked run starts the server and is
left out (a tour pays it once per worker).

    python benchmarks/kernel_start.py               # 5 repeats each
    python benchmarks/kernel_start.py --repeats 9
"""
import argparse, os, statistics, tempfile, time
from pathlib import Path

from dfworkbench.lessons import KERNEL_PRELOAD, _demo_lesson, kernel_server, run_lesson

BODY = ("import numpy, pandas, torch, open_clip, accelerate, sklearn.metrics, plotly.graph_objects\n"
        "import resource\nr = resource.getrusage(resource.RUSAGE_SELF)\nx = round(r.ru_utime + r.ru_stime, 3)")


def once(d:Path, k:int, fork:bool) -> tuple:
    src = _demo_lesson(d/f"{k:02d}_start.ipynb", body=BODY)
    t = time.perf_counter(); res = run_lesson(src, d/"out"/src.name, fork=fork)
    assert res.ok, res.error
    return time.perf_counter() - t, res.records["demo.x"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); t = time.perf_counter(); kernel_server(); start = time.perf_counter() - t
        runs = {True: [], False: []}
        for k in range(a.repeats):
            for fork in (True, False): runs[fork].append(once(d, 2 * k + fork, fork))
    med = {f: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for f, r in runs.items()}
    print(f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, {a.repeats} runs each, medians")
    print(f"kernel server start (imports {', '.join(KERNEL_PRELOAD)}): {start:.2f} s, once per process\n")
    print("| kernel | lesson wall time (s) | kernel CPU time (s) | ratio of wall times |\n|---|---:|---:|---:|")
    print(f"| new Python (`python -m ipykernel_launcher`, reference) | {med[False][0]:.2f} | {med[False][1]:.2f} | 1.00 |")
    print(f"| forked from the preloaded server | {med[True][0]:.2f} | {med[True][1]:.2f} | {med[True][0] / med[False][0]:.2f} |")


if __name__ == "__main__":
    main()
