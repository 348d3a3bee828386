"`dfw preprocess` with bad input and faults: colliding names, reruns, two runs at once, killed workers and main process, usage errors, stills, losses."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfworkbench.core import DFWError, asset_path_or_skip
from dfworkbench.faces import OutputBusy, PreprocessJob, main, read_frames, run_preprocess


@pytest.fixture
def videos():
    d = os.environ.get("DFW_ASSETS")
    if not d: pytest.skip("DFW_ASSETS is not set (CI sets it to ../shared)")
    v = Path(d) / "videos"
    missing = [n for n in ("pexels_face.mp4", "talking_face.mp4", "no_face.mp4") if not (v / n).is_file()]
    if missing: pytest.skip(f"absent from {v}: {missing}")
    asset_path_or_skip("face_landmarker")
    return v


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "dfworkbench.faces", "preprocess", *map(str, args), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def folder(root, **items):
    "real/ and fake/ items as symlinks to `items` {relative name: target}."
    for rel, target in items.items():
        p = root / rel; p.parent.mkdir(parents=True, exist_ok=True); p.symlink_to(target)
    return root


def children(pid):
    "Every descendant of process `pid` (Linux /proc)."
    kids = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try: kids.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
            except (OSError, IndexError, ValueError): pass
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []): out.append(k); todo.append(k)
    return out


def alive(pid):
    try: return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError: return False


def wait_for(cond, timeout=60.0):
    t = time.time()
    while time.time() - t < timeout:
        if (r := cond()): return r
        time.sleep(0.05)
    raise TimeoutError


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find worker processes")


# --- usage errors: exit 2, one message ------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [["--frames", "-1"], ["--num-faces", "0"], ["--smooth", "-1"], ["--workers", "0"]])
def test_usage_errors_exit_2(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as e: main(["preprocess", str(tmp_path), str(tmp_path / "o"), *flag])
    assert e.value.code == 2 and flag[0] in capsys.readouterr().err


def test_empty_source_is_a_usage_error(tmp_path, capsys):
    asset_path_or_skip("face_landmarker")
    (tmp_path / "src").mkdir()
    assert main(["preprocess", str(tmp_path / "src"), str(tmp_path / "o"), "--quiet"]) == 2
    assert "no videos or images here" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- names, reruns, sources ----------------------------------------------------------------------------------------

def test_colliding_names_get_their_own_folders(videos, tmp_path, capsys):
    src = folder(tmp_path / "src", **{"real/a b.mp4": videos / "talking_face.mp4", "real/a_b.mp4": videos / "talking_face.mp4"})
    man = run_preprocess(src, tmp_path / "o", PreprocessJob(n_frames=2), workers=1, progress=False, isolate=False)
    assert man["counts"] == {"done": 2, "exists": 0, "skipped": 0}
    dirs = {v["video_id"]: v["rel"] for v in man["videos"]}
    assert len(set(dirs.values())) == 2 and dirs["src/real/a_b"] == "src/real/a_b"
    man = run_preprocess(src, tmp_path / "o", PreprocessJob(n_frames=2), workers=1, progress=False, isolate=False)
    assert man["counts"] == {"done": 0, "exists": 2, "skipped": 0}
    assert {v["video_id"]: v["rel"] for v in man["videos"]} == dirs                  # stable between runs


def test_rerun_with_other_settings_refused_second_source_merged(videos, tmp_path):
    a = folder(tmp_path / "a", **{"real/x.mp4": videos / "talking_face.mp4"})
    b = folder(tmp_path / "b", **{"fake/y.mp4": videos / "talking_face.mp4"})
    dst = tmp_path / "o"
    run_preprocess(a, dst, PreprocessJob(n_frames=2), workers=1, progress=False, isolate=False)
    for other in (PreprocessJob(n_frames=3), PreprocessJob(n_frames=2, preset="fcg"), PreprocessJob(n_frames=2, parts=True)):
        with pytest.raises(DFWError, match="holds crops made with other settings"):
            run_preprocess(a, dst, other, workers=1, progress=False, isolate=False)
    man = run_preprocess(b, dst, PreprocessJob(n_frames=2), workers=1, progress=False, isolate=False)
    assert sorted(v["video_id"] for v in man["videos"]) == ["a/real/x", "b/fake/y"]    # the first source is kept
    assert man["sources"] == [str(a), str(b)]
    assert set(man["losses"]) == {"real", "fake"}


def test_same_id_from_another_file_is_a_conflict(videos, tmp_path):
    dst = tmp_path / "o"
    run_preprocess(folder(tmp_path / "one" / "src", **{"real/x.mp4": videos / "talking_face.mp4"}), dst, PreprocessJob(n_frames=2),
                   workers=1, progress=False, isolate=False)
    other = folder(tmp_path / "two" / "src", **{"real/x.mp4": videos / "pexels_face.mp4"})                 # same id src/real/x
    man = run_preprocess(other, dst, PreprocessJob(n_frames=2), workers=1, progress=False, isolate=False)
    assert [s["kind"] for s in man["skipped"]] == ["conflict"] and "another file" in man["skipped"][0]["reason"]


# --- stills and losses ---------------------------------------------------------------------------------------------

def test_folder_of_mixed_stills(videos, tmp_path):
    frames, _ = read_frames(videos / "pexels_face.mp4", [0, 200, 400])
    src = tmp_path / "stills"; (src / "real").mkdir(parents=True); (src / "fake").mkdir()
    for k, (f, ext) in enumerate(zip(frames, ("jpg", "png", "webp"))): cv2.imwrite(str(src / "real" / f"f{k}.{ext}"), f[:, :, ::-1])
    cv2.imwrite(str(src / "fake" / "f.bmp"), frames[0][:, :, ::-1])
    (src / "fake" / "zero.jpg").write_bytes(b""); (src / "fake" / "text.png").write_text("not an image")
    p = cli(src, tmp_path / "o", "--workers", "2", "--parts"); out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    man = json.loads((tmp_path / "o/manifest.json").read_text())
    assert man["counts"] == {"done": 4, "exists": 0, "skipped": 2}
    why = {Path(s["path"]).name: s["reason"] for s in man["skipped"]}
    assert "zero.jpg: empty file" in why["zero.jpg"] and "text.png: not a readable image" in why["text.png"]
    for v in man["videos"]:
        d = tmp_path / "o" / v["rel"]
        assert v["n_frames"] == 1 and np.load(d / "parts.npy").shape == (1, 256, 256) and (d / "frames/000000.png").is_file()
    assert "4 items ready" in out and "skipped " + str(src / "fake" / "text.png") in out
    assert "by label: real 3 ready, 0 skipped (0%); fake 1 ready, 2 skipped (67%)" in out
    assert "WARNING: 0% of real and 67% of fake items were skipped" in out                # label-correlated losses


# --- concurrency and killed processes ------------------------------------------------------------------------------

def test_two_runs_at_once_second_refused(videos, tmp_path):
    src = folder(tmp_path / "src", **{f"real/v{i}.mp4": videos / "talking_face.mp4" for i in range(2)})
    p = cli(src, tmp_path / "o", "--frames", "4", "--workers", "1")
    try:   # the lock is taken before the workers start (seconds), so the first run still holds it when we try
        wait_for(lambda: (tmp_path / "o/.lock").is_file() and "pid" in (tmp_path / "o/.lock").read_text())
        with pytest.raises(OutputBusy, match="being written by another"):
            run_preprocess(src, tmp_path / "o", PreprocessJob(n_frames=4), workers=1, progress=False)
        out, err = p.communicate(timeout=300)
    finally: p.kill()
    assert p.returncode == 0 and "2 items ready" in out, err


@needs_proc
def test_killed_worker_costs_only_its_video(videos, tmp_path):
    src = folder(tmp_path / "src", **{f"real/v{i}.mp4": videos / "pexels_face.mp4" for i in range(3)})
    p = cli(src, tmp_path / "o", "--frames", "8", "--workers", "1")
    def kill_a_worker():   # the fork server is a child of the main process; a worker is a grandchild
        for k in children(p.pid):
            if k not in children_of_main(p.pid):
                try: os.kill(k, signal.SIGKILL); return True
                except ProcessLookupError: pass                          # it had just finished: try the next one
    try:
        wait_for(kill_a_worker)
        out, err = p.communicate(timeout=300)
    finally: p.kill()
    assert p.returncode == 0, err
    man = json.loads((tmp_path / "o/manifest.json").read_text())
    assert man["counts"] == {"done": 2, "exists": 0, "skipped": 1}
    s = man["skipped"][0]
    assert s["kind"] == "crashed" and "SIGKILL" in s["reason"] and "the rest of the batch went on" in s["reason"]


def children_of_main(pid):
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _ppid(d) == pid]


def _ppid(d):
    try: return int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError): return None


@needs_proc
def test_killed_main_process_leaves_no_worker(videos, tmp_path):
    src = folder(tmp_path / "src", **{f"real/v{i}.mp4": videos / "talking_face.mp4" for i in range(4)})
    p = cli(src, tmp_path / "o", "--frames", "8", "--workers", "2")
    try:
        wait_for(lambda: len([k for k in children(p.pid) if k not in children_of_main(p.pid)]) >= 1)
        left = children(p.pid)
        os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
        wait_for(lambda: not any(alive(k) for k in left), timeout=20)                 # workers notice and exit
    finally:
        p.kill()
        for k in children(p.pid):
            try: os.kill(k, signal.SIGKILL)
            except OSError: pass


def test_deepfakebench_frame_folders_are_cropped(videos, tmp_path):
    frames, _ = read_frames(videos / "talking_face.mp4", [0, 20, 40, 60])
    for k, f in enumerate(frames): p = tmp_path / "dfb/FF-real/000" / f"{k * 20}.png"; p.parent.mkdir(parents=True, exist_ok=True); cv2.imwrite(str(p), f[:, :, ::-1])
    (tmp_path / "ds.json").write_text(json.dumps({"FF": {"FF-real": {"test": {"c23": {"000": {"label": "FF-real",
        "frames": [f"dfb/FF-real/000/{k * 20}.png" for k in range(4)]}}}}}}))
    man = run_preprocess(tmp_path / "ds.json", tmp_path / "o", PreprocessJob(n_frames=3), workers=1, progress=False, isolate=False)
    assert man["counts"] == {"done": 1, "exists": 0, "skipped": 0}
    v = man["videos"][0]
    assert v["video_id"] == "FF/FF-real/000" and v["n_frames"] == 3 and v["frame_idx"] == [0, 1, 3]


def test_notes_in_report_and_damaged_manifest_rebuilt(videos, tmp_path):
    from dfworkbench.faces import report
    tiny = tmp_path / "a" / "real" / "tiny.mp4"; tiny.parent.mkdir(parents=True)
    w = cv2.VideoWriter(str(tiny), cv2.VideoWriter_fourcc(*"mp4v"), 30, (96, 54))
    for f in read_frames(videos / "talking_face.mp4", range(0, 72, 6))[0]: w.write(cv2.resize(f, (96, 54), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    w.release()
    dst = tmp_path / "o"
    man = run_preprocess(tmp_path / "a", dst, PreprocessJob(n_frames=4), workers=1, progress=False, isolate=False)
    assert f"note {tiny}: small face" in report(man, dst) and "upscaled" in report(man, dst)
    (dst / "manifest.json").write_text("{ damaged")
    b = folder(tmp_path / "b", **{"fake/y.mp4": videos / "talking_face.mp4"})
    man = run_preprocess(b, dst, PreprocessJob(n_frames=4), workers=1, progress=False, isolate=False)
    assert sorted(v["video_id"] for v in man["videos"]) == ["a/real/tiny", "b/fake/y"]          # nothing lost
