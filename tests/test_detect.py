"""`dfw detect` (dfworkbench.detect): scores equal the evaluate path, reports that work offline in a real browser, and inputs
without a face or that cannot be read are reported, never scored. Real videos are skipped, saying why, without DFW_ASSETS."""
import argparse
import contextlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfworkbench.core import asset_path_or_skip
from dfworkbench.data import ClipCollate, ClipRecord
from dfworkbench.detect import (Records, detect, detect_clips, detect_command, detect_parser, load_checkpoint,
                                tiny_checkpoint)
from dfworkbench.faces import extract_faces, read_frames, sample_indices
from dfworkbench.metrics import SingleClassWarning, evaluate



@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    "A real checkpoint: the micro-CLIP LN-tuning detector after 4 steps on lab frames, with its run's validation threshold."
    return tiny_checkpoint(tmp_path_factory.mktemp("detect-ck") / "runs", steps=4, device="cpu")


@pytest.fixture(scope="session")
def det(ckpt):
    return load_checkpoint(ckpt, "cpu")


@pytest.fixture(scope="module")
def videos():
    d = os.environ.get("DFW_ASSETS")
    if not d: pytest.skip("DFW_ASSETS is not set (CI sets it to ../shared)")
    v = Path(d) / "videos"
    if not (v / "talking_face.mp4").is_file(): pytest.skip(f"{v / 'talking_face.mp4'} is absent")
    asset_path_or_skip("face_landmarker")
    return v


def _evaluate_path(detector, recs):
    "Clip and video p(fake) of `recs` through the project's evaluate (labels set to 0: evaluate needs 0/1)."
    lab = [ClipRecord(r.frames, 0, r.video_id, meta=r.meta) for r in recs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)         # one real video: no AUROC, only its scores are used
        rep = evaluate(detector, Records(lab), collate_fn=ClipCollate(detector.backbone.preprocess_cfg), n_boot=0, device="cpu")
    return rep.predictions["clip"].p_fake.values, float(rep.predictions["video"].p_fake.iloc[0])


def _crop_clips(crops, T=1):
    return [ClipRecord(crops.frames[s:s + T], 0, "v", meta={"frame_idx": crops.frame_idx[s:s + T].tolist()})
            for s in range(0, len(crops.frames) // T * T, T)]


def _report(out, row):
    return json.loads((Path(out) / row["report"]).with_name("report.json").read_text())


def test_checkpoint_carries_its_validation_threshold_and_digest(det, ckpt):
    import hashlib
    assert det.name == "LNTuningDetector" and {"clip", "video"} <= set(det.threshold)
    assert det.decision("video")[2] is False and "validation split" in det.threshold_source
    assert det.sha256 == hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()


def test_lab_clips_scored_as_evaluate_scores_them(det, tmp_path):
    from dfworkbench.lab import load_suite
    suite = load_suite("ffpp", "smoke", res=64)
    idx = [i for i, m in enumerate(suite.meta) if m["split"] == "test"][:2]
    s = detect_clips([suite.record(i) for i in idx], det, tmp_path / "out", "cpu", overlays=3)
    assert s["exit_code"] == 0 and [r["status"] for r in s["rows"]] == ["scored", "scored"]
    for i, row in zip(idx, s["rows"]):
        rep = _report(tmp_path / "out", row)
        rec = suite.record(i)
        clips, video = _evaluate_path(det.detector, [rec.select([t]) for t in range(rec.T)])
        np.testing.assert_allclose([c["p_fake"] for c in rep["clips"]], clips, atol=1e-6)
        assert rep["video"]["p_fake"] == pytest.approx(video, abs=1e-7)
        assert rep["video"]["verdict"] == ("fake" if video >= det.threshold["video"] else "real")
        assert rep["detector"]["sha256"] == det.sha256 and rep["threshold"]["default"] is False
        assert (tmp_path / "out" / row["report"]).read_text().count("class='crop overlay'") == 3


def test_checkpoint_without_threshold_says_so(det, tmp_path):
    from dfworkbench.learner import write_checkpoint
    bare = write_checkpoint(tmp_path / "bare", det.detector, {"step": 1}, weights="trainable")
    s = detect_clips(np.zeros((2, 64, 64, 3), np.uint8) + 128, bare, tmp_path / "out", "cpu", method=None)
    rep = _report(tmp_path / "out", s["rows"][0])
    assert rep["threshold"]["default"] is True and rep["threshold"]["video"] == 0.5
    assert rep["threshold"]["source"].startswith("0.5 default, not a validation threshold")
    assert "no validation threshold: 0.5 is a default" in (tmp_path / "out" / s["rows"][0]["report"]).read_text()


@pytest.fixture(scope="module")
def real_run(videos, tmp_path_factory, ckpt):
    "detect on a real face video and on a folder of its frames as jpg and png stills, into one output folder."
    det = load_checkpoint(ckpt, "cpu")
    work = tmp_path_factory.mktemp("detect-real")
    idx = sample_indices(72, 4)
    frames, got = read_frames(videos / "talking_face.mp4", idx)
    stills = work / "stills"; stills.mkdir()
    for k, (f, i) in enumerate(zip(frames, got)):
        cv2.imwrite(str(stills / f"frame{i:03d}.{'jpg' if k % 2 else 'png'}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    s = detect([videos / "talking_face.mp4", stills], det, work / "out", "cpu", frames=8, overlays=3, progress=False)
    return det, work, s, videos


def test_real_video_and_stills_match_the_evaluate_path(real_run):
    det, work, s, videos = real_run
    assert s["exit_code"] == 0, s["rows"]
    assert [r["name"] for r in s["rows"]] == ["talking_face.mp4", "stills_frame000.png", "stills_frame023.jpg", "stills_frame047.png",
                                              "stills_frame071.jpg"]
    video = _report(work / "out", s["rows"][0])
    crops = extract_faces(videos / "talking_face.mp4", 8, "lntuning", tiles=True)      # the same face pipeline, run again
    clips, vp = _evaluate_path(det.detector, _crop_clips(crops))
    np.testing.assert_allclose([c["p_fake"] for c in video["clips"]], clips, atol=1e-5)
    assert video["video"]["p_fake"] == pytest.approx(vp, abs=1e-6)
    assert (video["faces"]["found"], video["faces"]["sampled"], video["skipped"]) == (8, 8, [])
    assert video["heat_maps"]["method"] == "rollout" and len(video["heat_maps"]["frames"]) == 3
    for row in s["rows"][1:]:
        rep = _report(work / "out", row)
        c = extract_faces(row["input"], 8, "lntuning", tiles=True)
        clips, vp = _evaluate_path(det.detector, _crop_clips(c))
        assert rep["faces"]["kind"] == "image" and len(rep["clips"]) == 1
        assert rep["video"]["p_fake"] == pytest.approx(vp, abs=1e-6) == pytest.approx(clips[0], abs=1e-6)
    csv_rows = (work / "out" / "summary.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 5 and (work / "out" / "index.html").is_file()


def test_report_page_offline_in_chromium(real_run, tmp_path, offline_page):
    det, work, s, _ = real_run
    page_file = work / "out" / s["rows"][0]["report"]
    page = offline_page.page
    page.set_viewport_size({"width": 1200, "height": 1400})
    page.goto(page_file.as_uri()); page.wait_for_load_state("load")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    clips = page.locator("#timeline g.clip").count()
    box = page.locator("#timeline").bounding_box()
    imgs = page.evaluate("() => [...document.querySelectorAll('img.overlay')].map(i => [i.className, i.complete, i.naturalWidth])")
    verdict = page.locator(".verdict").inner_text()
    page.goto((work / "out" / "index.html").as_uri()); page.wait_for_load_state("load")
    links = page.locator("table a").count()
    assert offline_page.blocked == [] and offline_page.failed == [], (offline_page.blocked, offline_page.failed)
    assert clips == 8 and box and box["width"] > 300 and box["height"] > 100
    assert len(imgs) == 6 and all(ok and w > 0 for _, ok, w in imgs), imgs          # 3 frames: the whole frame and the crop, each with its map
    assert sum("whole" in c for c, _, _ in imgs) == 3
    assert verdict.startswith(("FAKE", "REAL")) and links == len(s["rows"])
    png = cv2.imread(str(shot))
    assert shot.stat().st_size > 50_000 and png.shape[0] > 1000 and png.std() > 20, (shot, png.shape, png.std())


def _colour_video(path, n=40, size=(160, 120)):
    "A video with no face: drifting colour noise."
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert w.isOpened(), "OpenCV cannot write mp4v here"
    rng = np.random.default_rng(0)
    for t in range(n):
        f = np.zeros((size[1], size[0], 3), np.uint8) + np.uint8(t * 5 % 255)
        w.write(cv2.GaussianBlur(f + rng.integers(0, 60, f.shape, dtype=np.uint8), (0, 0), 3))
    w.release()
    return path


def _cli(*argv):
    args = detect_parser(argparse.ArgumentParser()).parse_args([str(a) for a in argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = detect_command(args)
    return code, out.getvalue(), err.getvalue()


def test_video_without_a_face_exits_3_unscored(ckpt, tmp_path):
    asset_path_or_skip("face_landmarker")
    vid = _colour_video(tmp_path / "noise.mp4")
    code, out, err = _cli(vid, "--checkpoint", ckpt, "--out", tmp_path / "out", "--frames", "5", "--device", "cpu", "--quiet")
    assert code == 3, (out, err)
    assert "no face was found in 1 input(s); they were not scored" in err and "NO FACE" in out
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = s["rows"][0]
    assert row["status"] == "no_face" and row["p_fake"] is None and row["verdict"] is None
    assert "no face in any of the 5 sampled frames" in row["message"] and "a 0.5 would read as a verdict" in row["message"]
    rep = _report(tmp_path / "out", row)
    assert "video" not in rep and "clips" not in rep
    assert "NOT SCORED: no face" in (tmp_path / "out" / row["report"]).read_text()


def test_corrupt_file_reported_and_the_others_scored(ckpt, videos, tmp_path, capfd):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    shutil.copy(videos / "talking_face.mp4", tmp_path / "in" / "talk.mp4")
    code, out, err = _cli(tmp_path / "in", "--checkpoint", ckpt.parent.parent, "--out", tmp_path / "out", "--frames", "4",
                          "--device", "cpu", "--method", "none", "--quiet")
    assert code == 4, (out, err)
    assert "1 input(s) could not be read or scored" in err and "the others were scored" in err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    by = {r["name"]: r for r in s["rows"]}
    assert by["in_broken.mp4"]["status"] == "unreadable" and "broken.mp4" in by["in_broken.mp4"]["message"]
    assert "cannot be opened as a video" in by["in_broken.mp4"]["message"]
    assert by["in_talk.mp4"]["status"] == "scored" and 0 <= by["in_talk.mp4"]["p_fake"] <= 1
    assert "1 scored, 0 without a face (not scored), 1 failed" in out
    terminal = capfd.readouterr().err                                                # what reached descriptor 2 itself
    for noise in ("W0000", "XNNPACK", "inference_feedback_manager", "face_landmarker_graph"):
        assert noise not in terminal, (noise, terminal[-2000:])                     # MediaPipe's C++ lines stay off the terminal...
    assert (tmp_path / "out" / "native.log").exists()                                # ...in the run's own log
    # a second run into the same folder keeps the first one's reports and rows
    before = (tmp_path / "out" / by["in_talk.mp4"]["report"]).read_bytes()
    code, out, err = _cli(tmp_path / "in" / "talk.mp4", "--checkpoint", ckpt, "--out", tmp_path / "out", "--frames", "4",
                          "--device", "cpu", "--method", "none", "--quiet")
    s2 = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 0 and s2["rows"][0]["name"] == "talk.mp4" and len(s2["earlier"]) == 2
    assert (tmp_path / "out" / by["in_talk.mp4"]["report"]).read_bytes() == before


def test_usage_errors_exit_2(tmp_path):
    code, out, err = _cli(tmp_path / "x.mp4", "--checkpoint", tmp_path / "nowhere")
    assert code == 2 and "no such checkpoint folder" in err
