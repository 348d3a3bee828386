"""Face preprocessing speed on CPU: frames per second of each stage and of the `dfw preprocess` batch job.

    DFW_ASSETS=/work/shared python benchmarks/preprocess_speed.py [--videos 4] [--frames 32]

Speeds are reported as frames/s and as ratios against decoding alone, measured in the same process
(the reference run), so that the numbers travel between machines better than raw timings do.
"""
import argparse, os, tempfile, time
from pathlib import Path


from dfworkbench.faces import (PreprocessJob, align_face, detect_landmarks, main_face, part_mask, probe_video,
                               read_frames, run_preprocess, smooth_landmarks)


def timed(f, *a, **k):
    t = time.perf_counter(); r = f(*a, **k); return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8, help="videos in the batch (copies of the test videos)")
    ap.add_argument("--frames", type=int, default=32, help="frames per video in the batch")
    a = ap.parse_args()
    vdir = Path(os.environ.get("DFW_ASSETS", "../shared")) / "videos"
    path = vdir / "pexels_face.mp4"
    info = probe_video(path)
    rows = []
    (frames, idx), t_dec = timed(read_frames, path)                          # every frame of the video
    n = len(frames)
    rows.append(("decode (OpenCV, reference)", n / t_dec))
    dets, t_lm = timed(detect_landmarks, frames, idx, info.fps)
    rows.append(("landmarks (MediaPipe VIDEO mode, 2 faces max)", n / t_lm))
    def track_align():
        lms, ok = main_face(dets); lms = smooth_landmarks(lms, idx, 2)
        return [align_face(f, l, "lntuning") for f, l in zip(frames[ok], lms[ok])]
    al, t_al = timed(track_align)
    rows.append(("track + smooth + align + crop 256 px", n / t_al))
    _, t_pm = timed(lambda: [part_mask(c[1], 256) for c in al])
    rows.append(("part masks", n / t_pm))
    rows.append(("one video end to end (sum of the stages)", n / (t_dec + t_lm + t_al + t_pm)))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src"; src.mkdir()
        names = ["pexels_face.mp4", "talking_face.mp4"]
        for i in range(a.videos): (src / f"v{i}.mp4").symlink_to(vdir / names[i % 2])
        # 1 worker runs in this process; 2 workers start a fork server (imports torch, dfworkbench, MediaPipe)
        # the first time, which a second batch in the same process reuses
        for k, (w, what) in enumerate([(1, "in process"), (2, "cold: incl. fork-server start-up"), (2, "warm fork server")]):
            man, t = timed(run_preprocess, src, Path(d) / f"out{k}", PreprocessJob(n_frames=a.frames), w, False)
            nf = sum(v["n_frames"] for v in man["videos"])
            rows.append((f"batch, {a.videos} videos x {a.frames} frames, {w} worker(s), {what}", nf / t))
    ref = rows[0][1]
    print(f"cpu cores: {os.cpu_count()}, video: {path.name} {info.width}x{info.height}, {n} frames\n")
    print("| stage | frames/s | ratio to decode |\n|---|---:|---:|")
    for name, fps in rows: print(f"| {name} | {fps:.1f} | {fps / ref:.3f} |")


if __name__ == "__main__":
    main()
