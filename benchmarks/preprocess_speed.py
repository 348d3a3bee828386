"""Face preprocessing speed and memory on CPU: the pipeline against bare MediaPipe on the same sampled frames.

    DFW_ASSETS=/work/shared python benchmarks/preprocess_speed.py [--frames 32] [--videos 8]

Every ratio compares two things measured in this one run, so that the numbers travel between machines
better than raw timings do:
- decoding the sampled frames: OpenCV reading every frame up to the last sampled one (the first
  version) against PyAV's index-and-seek (`iter_frames`);
- the whole pipeline (`extract_faces`: decode, landmarks, tracking, smoothing, alignment) against
  bare MediaPipe (the landmarker alone, VIDEO mode, on frames decoded beforehand);
- memory of one worker process cropping a 1080p video (peak and private resident memory, Linux
  /proc), after its imports and after the cropping.
The 1080p test videos are made here from pexels_face.mp4 (scaled up, libx264) and talking_face.mp4
(a small face in a large frame), in a temporary folder.
"""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path

import cv2
import numpy as np

from dfworkbench.faces import (PreprocessJob, extract_faces, face_landmarker, iter_frames, probe_video, run_preprocess,
                               sample_indices)


def timed(f, *a, **k):
    t = time.perf_counter(); r = f(*a, **k); return r, time.perf_counter() - t


def make_1080p(src, dst, n=300, scale=None, at=(1300, 640)):
    "Write `n` frames of `src` as a 1920 x 1080 libx264 video: scaled up to fill it, or scaled by `scale` into a grey frame."
    import av
    out = av.open(str(dst), "w"); s = out.add_stream("libx264", rate=24); s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
    for k, (_, f) in enumerate(iter_frames(src)):
        if k >= n: break
        if scale is None: g = cv2.resize(f, (1920, 1080))
        else:
            g = np.full((1080, 1920, 3), 90, np.uint8); small = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            g[at[1]:at[1] + small.shape[0], at[0]:at[0] + small.shape[1]] = small
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(g), format="rgb24")): out.mux(p)
    for p in s.encode(): out.mux(p)
    out.close(); return dst


def opencv_sequential(path, idx):
    "The first version: OpenCV reads every frame up to the last sampled one, converting the sampled ones."
    cap, want, out = cv2.VideoCapture(str(path)), set(idx.tolist()), []
    for i in range(idx.max() + 1):
        if i in want: ok, f = cap.read(); out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        else: ok = cap.grab()
        if not ok: break
    cap.release(); return out


def bare_mediapipe(frames, idx, fps):
    "The landmarker alone on frames decoded beforehand (VIDEO mode, 2 faces max): what the pipeline is compared with."
    import mediapipe as mp
    with face_landmarker(None, 2, video=True) as lm:
        for f, i in zip(frames, idx):
            lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f)), int(round(i * 1000 / fps)))


WORKER = """
import re, sys
from pathlib import Path
def mem():   # MB: peak resident, resident now, of which private (anonymous) memory
    t = Path("/proc/self/status").read_text()
    return [int(re.search(k + r":\\s+(\\d+)", t).group(1)) // 1024 for k in ("VmHWM", "VmRSS", "RssAnon")]
from dfworkbench.faces import extract_faces
import mediapipe.tasks.python.vision
before = mem()
extract_faces(sys.argv[1], int(sys.argv[2]))
print(*before, *mem())
"""


def worker_memory(path, n):
    "Memory (MB) of a fresh process after its imports and after cropping `n` frames of `path` (Linux /proc)."
    r = subprocess.run([sys.executable, "-c", WORKER, str(path), str(n)], capture_output=True, text=True, check=True)
    return list(map(int, r.stdout.split()[-6:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    ap.add_argument("--videos", type=int, default=8, help="videos in the batch rows (copies of the test videos)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median time is kept")
    a = ap.parse_args()
    vdir = Path(os.environ.get("DFW_ASSETS", "../shared")) / "videos"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        tests = {"pexels_face.mp4 (640x360, 472 frames)": vdir / "pexels_face.mp4",
                 "pexels 1080p (libx264, 300 frames)": make_1080p(vdir / "pexels_face.mp4", d / "big.mp4"),
                 "small face in 1080p (talking_face at 2/3 size, 72 frames)": make_1080p(vdir / "talking_face.mp4", d / "small.mp4", scale=2 / 3)}
        print(f"cpu cores: {os.cpu_count()}, {a.frames} sampled frames per video, median of {a.repeats}\n")
        print("| video | what | frames/s | ratio |\n|---|---|---:|---:|")
        for name, path in tests.items():
            info = probe_video(path); idx = sample_indices(info.n_frames, a.frames)
            t = {k: [] for k in ("cv", "av", "bare", "pipe")}
            for _ in range(a.repeats):                                   # interleaved, so that load changes hit all alike
                frames, s = timed(lambda: [f for _, f in iter_frames(path, idx)]); t["av"].append(s)
                t["cv"].append(timed(opencv_sequential, path, idx)[1])
                t["bare"].append(timed(bare_mediapipe, frames, idx, info.fps)[1])
                c, s = timed(extract_faces, path, a.frames); t["pipe"].append(s)
            fps = {k: len(idx) / np.median(v) for k, v in t.items()}
            print(f"| {name} | decode: OpenCV, every frame to the last sampled (reference) | {fps['cv']:.1f} | 1.000 |")
            print(f"| {name} | decode: PyAV index + seek | {fps['av']:.1f} | {fps['av'] / fps['cv']:.2f} |")
            print(f"| {name} | bare MediaPipe landmarker on the decoded frames (reference) | {fps['bare']:.1f} | 1.000 |")
            print(f"| {name} | pipeline `extract_faces` ({len(c.frames)}/{c.n_sampled} aligned) | {fps['pipe']:.1f} | {fps['pipe'] / fps['bare']:.2f} |")
        m = worker_memory(tests["pexels 1080p (libx264, 300 frames)"], a.frames)
        print(f"\none worker on the 1080p video, MB: after its imports peak {m[0]}, resident {m[1]} (private {m[2]}); "
              f"after cropping {a.frames} frames peak {m[3]}, resident {m[4]} (private {m[5]}): cropping added {m[3] - m[0]} to the peak")
        src = d / "src"; src.mkdir()
        names = ["pexels_face.mp4", "talking_face.mp4"]
        for i in range(a.videos): (src / f"v{i}.mp4").symlink_to(vdir / names[i % 2])
        print("\n| batch | frames/s |\n|---|---:|")
        for k, (w, iso, what) in enumerate([(1, False, "1 worker, in process"), (2, True, "2 worker processes, one per video")]):
            man, s = timed(run_preprocess, src, d / f"out{k}", PreprocessJob(n_frames=a.frames), w, False, iso)
            print(f"| {a.videos} videos x {a.frames} frames, {what} | {sum(v['n_frames'] for v in man['videos']) / s:.1f} |")


if __name__ == "__main__":
    main()
