"`dfw preprocess SRC DST` (via `python -m dfworkbench.faces`): reports, atomic outputs, resumable reruns."
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from dfworkbench.core import asset_path_or_skip
from dfworkbench import faces
from dfworkbench.faces import PreprocessJob, preprocess_video, run_preprocess, video_dir
from dfworkbench.readers import read_dataset


@pytest.fixture
def videos():
    d = os.environ.get("DFW_ASSETS")
    if not d: pytest.skip("DFW_ASSETS is not set (CI sets it to ../shared)")
    v = Path(d) / "videos"
    missing = [n for n in ("pexels_face.mp4", "talking_face.mp4", "no_face.mp4") if not (v / n).is_file()]
    if missing: pytest.skip(f"absent from {v}: {missing}")
    asset_path_or_skip("face_landmarker")
    return v


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "dfworkbench.faces", "preprocess", *map(str, args), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout


def test_batch_reports_skips_and_resumes(videos, tmp_path):
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True); (src / "fake").mkdir()
    (src / "real/talk.mp4").symlink_to(videos / "talking_face.mp4")
    (src / "real/blank.mp4").symlink_to(videos / "no_face.mp4")
    (src / "fake/cut.mp4").write_bytes((videos / "pexels_face.mp4").read_bytes()[:800_000])   # truncated
    (src / "fake/junk.mp4").write_bytes(os.urandom(5000))                                       # corrupt
    (src / "fake/dir.mp4").mkdir()                                                              # unreadable path
    dst = tmp_path / "out"
    rc, out = cli(src, dst, "--frames", "4", "--parts", "--workers", "2")
    assert rc == 0, out
    man = json.loads((dst / "manifest.json").read_text())
    assert [v["video_id"] for v in man["videos"]] == ["src/real/talk"]
    why = {Path(s["path"]).name: s["reason"] for s in man["skipped"]}
    assert set(why) == {"blank.mp4", "cut.mp4", "junk.mp4", "dir.mp4"}
    assert "no face" in why["blank.mp4"] and "truncated" in why["cut.mp4"]
    assert "cannot be opened" in why["junk.mp4"] and "not a file" in why["dir.mp4"]
    for name, reason in why.items():
        assert str(src) in reason and name in reason                  # every reason names the path
        assert f"skipped {src}" in out and name in out                 # and the report lists it
    assert not list(dst.rglob("blank*"))                              # no crops for the faceless video
    talk = video_dir(dst, "src/real/talk")
    assert len(list((talk / "frames").glob("*.png"))) == 4
    assert np.load(talk / "landmarks.npy").shape == (4, 478, 2) and np.load(talk / "parts.npy").shape == (4, 256, 256)
    meta = json.loads((talk / "meta.json").read_text())
    assert meta["entry"]["label"] == 0 and len(meta["M"]) == 4
    before = (talk / "meta.json").stat().st_mtime_ns
    back = read_dataset(dst)                                           # the output reads back as a dataset
    assert [(e.video_id, e.label, e.family) for e in back] == [("src/real/talk", 0, "real")] and len(back[0].frames) == 4

    # the fix: a complete copy replaces the truncated file; the junk is removed
    shutil.copy(videos / "pexels_face.mp4", src / "fake/cut.mp4"); (src / "fake/junk.mp4").unlink()
    rc, out = cli(src, dst, "--frames", "4", "--workers", "2")
    assert rc == 2                                                     # without --parts: other settings, refused
    rc, out = cli(src, dst, "--frames", "4", "--parts", "--workers", "2")
    assert rc == 0, out
    man = json.loads((dst / "manifest.json").read_text())
    assert man["counts"] == {"done": 1, "exists": 1, "skipped": 2}     # only the fixed video was processed
    assert sorted(v["video_id"] for v in man["videos"]) == ["src/fake/cut", "src/real/talk"]
    assert (talk / "meta.json").stat().st_mtime_ns == before           # finished output untouched
    assert any(s.get("reused") for s in man["skipped"])                # no-face verdict remembered, not redone
    assert "(file unchanged since the last run)" in out
    rc, _ = cli(src, dst, "--frames", "4", "--parts", "--strict")
    assert rc == 1                                                     # --strict: skips fail the batch


def test_manifest_row_pointing_nowhere(videos, tmp_path):
    (tmp_path / "m.csv").write_text(f"path,label,split\n{videos/'talking_face.mp4'},0,test\nmissing/nowhere.mp4,1,test\n")
    rc, out = cli(tmp_path / "m.csv", tmp_path / "o", "--frames", "3", "--format", "avi", "--workers", "1")
    assert rc == 0
    man = json.loads((tmp_path / "o/manifest.json").read_text())
    assert len(man["videos"]) == 1 and len(man["skipped"]) == 1
    s = man["skipped"][0]
    assert s["path"] == str(tmp_path / "missing/nowhere.mp4") and "file not found" in s["reason"]
    assert (Path(man["videos"][0]["dir"]) / "crops.avi").stat().st_size > 0
    back = read_dataset(tmp_path / "o")
    assert back[0].path.name == "crops.avi" and back[0].split == "test" and back[0].frames == ()


def test_interrupted_write_leaves_nothing(videos, tmp_path, monkeypatch):
    (tmp_path / "src").mkdir(); (tmp_path / "src/a.mp4").symlink_to(videos / "talking_face.mp4")
    e = read_dataset(tmp_path / "src")[0]
    dst = tmp_path / "out"
    def boom(out, c, job):
        (out / "frames").mkdir(); (out / "frames/000000.png").write_bytes(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(faces, "_write_crops", boom)
    with pytest.raises(KeyboardInterrupt): preprocess_video(e, dst, PreprocessJob(n_frames=3))
    assert not video_dir(dst, e.video_id).exists() and not list(dst.rglob("*.tmp-*"))
    # a run killed hard (SIGKILL) leaves its temp folder; it does not count as done and is cleaned
    stale = video_dir(dst, e.video_id).parent / f".{video_dir(dst, e.video_id).name}.tmp-99999"
    stale.mkdir(parents=True)
    monkeypatch.undo()
    man = run_preprocess(tmp_path / "src", dst, PreprocessJob(n_frames=3), workers=1, progress=False)
    assert man["counts"]["done"] == 1 and not stale.exists()


def test_bad_src_is_one_clear_error(tmp_path):
    rc, _ = cli(tmp_path / "nope", tmp_path / "o")
    assert rc == 2


def test_missing_model_stops_the_batch(tmp_path):
    (tmp_path / "src").mkdir(); (tmp_path / "src/a.mp4").write_bytes(b"x")
    rc, _ = cli(tmp_path / "src", tmp_path / "o", "--model", tmp_path / "nowhere.task")
    assert rc == 2 and not (tmp_path / "o/manifest.json").exists()
