"""How big a tour's run folder is: the report rebuilt from executed lessons, and where the bytes go.

Takes the executed notebooks of a `dfw lessons` (or `dfw tour`) run, copies them into a new folder,
compacts them as `run_lesson` does, writes the report (`write_summary`: a page per lesson, index.html,
plotly.js and nbconvert's CSS once) and prints the folder's size by kind of file. Runs no lesson, so it
measures the report of any earlier run in seconds rather than the 20 minutes of a tour.

    python benchmarks/tour_size.py runs/20261203-120000-smoke /tmp/tour-size
    python benchmarks/tour_size.py RUN OUT --json sizes.json
"""
import argparse, json, shutil, sys, time
from pathlib import Path

from dfworkbench.core import read_records
from dfworkbench.lessons import LessonResult, RunReport, compact_notebook, write_summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder holding executed LESSON.ipynb files")
    ap.add_argument("out", type=Path, help="a new, empty folder for the rebuilt report")
    ap.add_argument("--json", type=Path, default=None, help="also write the sizes here")
    a = ap.parse_args(argv)
    nbs = sorted(p for p in a.run.glob("*.ipynb") if not p.name.startswith("."))
    if not nbs: print(f"{a.run}: no executed lessons (*.ipynb) here", file=sys.stderr); return 2
    if a.out.exists() and any(a.out.iterdir()): print(f"{a.out} is not empty: name a new folder", file=sys.stderr); return 2
    a.out.mkdir(parents=True, exist_ok=True)
    rep, raw = RunReport(a.out, "smoke", "cpu"), 0
    for nb in nbs:
        raw += nb.stat().st_size
        dst = a.out / nb.name; shutil.copy(nb, dst); compact_notebook(dst)
        rep.results.append(LessonResult(nb.stem, True, 0.0, read_records(dst), "", str(dst)))
    t = time.time(); write_summary(rep); took = time.time() - t
    sizes = {p.name: p.stat().st_size for p in a.out.iterdir() if p.is_file()}
    kinds = {}
    for n, s in sizes.items():
        k = "index.html" if n == "index.html" else n.rsplit(".", 1)[-1]
        kinds[k] = kinds.get(k, 0) + s
    total = sum(sizes.values())
    print(f"{len(nbs)} lessons; executed notebooks as found: {raw / 1e6:.1f} MB; report folder: {total / 1e6:.1f} MB "
          f"(write_summary {took:.0f} s)")
    for k, s in sorted(kinds.items(), key=lambda kv: -kv[1]): print(f"  {k:12} {s / 1e6:6.2f} MB")
    print("largest files:")
    for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]: print(f"  {n:32} {s / 1e6:6.2f} MB")
    if a.json: a.json.write_text(json.dumps({"lessons": len(nbs), "raw": raw, "total": total, "kinds": kinds, "files": sizes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
