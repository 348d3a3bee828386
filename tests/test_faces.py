"The face pipeline on the shared test videos (skipped with the reason when DFW_ASSETS or the files are absent)."
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfworkbench.core import asset_path_or_skip
from dfworkbench.faces import (CROP_PRESETS, FIVE_POINTS, PARTS, NoFaceError, VideoError, align_face, extract_faces,
                               eye_error, five_points, frame_scrubber, main_face, part_mask, read_frames,
                               scrub_image, self_blend, self_blend_clip, smooth_landmarks, transform_points, umeyama)


def video(name):
    d = os.environ.get("DFW_ASSETS")
    if not d: pytest.skip("DFW_ASSETS is not set (CI sets it to ../shared)")
    p = Path(d) / "videos" / name
    if not p.is_file(): pytest.skip(f"{p} is absent")
    asset_path_or_skip("face_landmarker")
    return p


@pytest.fixture(scope="module")
def crops():
    return {n: extract_faces(video(n), 12, "lntuning") for n in ("pexels_face.mp4", "talking_face.mp4")}


@pytest.mark.parametrize("name", ["pexels_face.mp4", "talking_face.mp4"])
def test_face_in_every_frame_eyes_on_template_parts_nonempty(crops, name):
    c = crops[name]
    assert len(c.frames) == c.n_sampled == 12                       # a face in every sampled frame
    assert c.frames.shape == (12, 256, 256, 3) and c.landmarks.shape == (12, 478, 2)
    assert eye_error(c).max() < 6                                    # px in the 256-px crop
    parts = c.parts()
    assert parts.shape == (12, 256, 256) and parts.max() < len(PARTS)
    for i, name_ in enumerate(PARTS[1:6], 1):
        assert (parts == i).any((1, 2)).all(), f"{name_} empty in some frame"
    assert not (parts == PARTS.index("hair")).any()                  # hair is not claimed from landmarks


def test_landmarks_in_crop_coordinates(crops):
    c = crops["talking_face.mp4"]
    frames, _ = read_frames(video("talking_face.mp4"), c.frame_idx[:1])
    # the crop landmarks are the frame landmarks moved by M: re-warping the frame reproduces the crop
    crop = cv2.warpAffine(frames[0], c.M[0], (256, 256), flags=cv2.INTER_LINEAR)
    assert np.abs(crop.astype(int) - c.frames[0]).mean() < 1
    assert ((c.landmarks > 0) & (c.landmarks < 256)).all()


def test_fcg_preset_tighter(crops):
    c = extract_faces(video("talking_face.mp4"), 4, "fcg")
    assert c.frames.shape[1:] == (224, 224, 3)
    iod = lambda cc: np.linalg.norm(cc.landmarks[:, 468] - cc.landmarks[:, 473], axis=1).mean() / cc.preset.size
    assert iod(c) > iod(crops["talking_face.mp4"])                   # the face fills more of the crop


def test_no_face_and_truncated(tmp_path):
    with pytest.raises(NoFaceError, match="no face"): extract_faces(video("no_face.mp4"), 6)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video("pexels_face.mp4").read_bytes()[:800_000])
    with pytest.raises(VideoError, match="truncated"): extract_faces(cut, 8)
    (tmp_path / "junk.mp4").write_bytes(os.urandom(3000))
    with pytest.raises(VideoError, match="junk.mp4: cannot be opened as a video"): extract_faces(tmp_path / "junk.mp4", 8)


def _scaled_video(path, out, size, at, frame=(1920, 1080), n=None):
    "Write `path`'s frames resized to `size` (w, h) at `at` (x, y) in a grey frame, as mp4v."
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, frame)
    cap = cv2.VideoCapture(str(path)); k = 0
    while n is None or k < n:
        ok, f = cap.read()
        if not ok: break
        g = np.full((frame[1], frame[0], 3), 90, np.uint8)
        g[at[1]:at[1] + size[1], at[0]:at[0] + size[0]] = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
        w.write(g); k += 1
    w.release(); return out


def test_small_face_in_1080p_found_on_tiles(tmp_path):
    src = _scaled_video(video("talking_face.mp4"), tmp_path / "small.mp4", (427, 240), (1300, 640))   # face ~100 px, off centre
    c = extract_faces(src, 20)
    assert len(c.frames) >= 0.95 * c.n_sampled and c.n_sampled == 20
    assert eye_error(c).max() < 4                                        # px in the 256-px crop
    width = np.ptp(c.landmarks[0][:, 0]) / np.sqrt(abs(np.linalg.det(c.M[0][:, :2])))
    assert 85 < width < 120                                              # the face is about 100 px wide in the frame
    with pytest.raises(NoFaceError): extract_faces(src, 4, tiles=False)  # the full frame alone finds nothing


def test_tiny_video_kept_with_a_note(tmp_path):
    src = _scaled_video(video("talking_face.mp4"), tmp_path / "tiny.mp4", (96, 54), (0, 0), frame=(96, 54), n=12)
    c = extract_faces(src, 4)
    assert any("upscaled" in n for n in c.notes), c.notes


def test_truncated_tail_kept_with_a_note(tmp_path):
    from dfworkbench.faces import probe_video
    p = video("pexels_face.mp4"); data = p.read_bytes()
    cut = tmp_path / "tail.mp4"; cut.write_bytes(data[:int(len(data) * 0.96)])
    info = probe_video(cut)
    assert 0.9 * info.n_header <= info.n_frames < info.n_header
    c = extract_faces(cut, 4)
    assert any("truncated near its end" in n for n in c.notes), c.notes


def test_sbi_on_real_crops(crops):
    c = crops["talking_face.mp4"]
    fake, manip = self_blend_clip(c.frames[:4], c.landmarks[:4], seed=0)
    assert fake.shape == c.frames[:4].shape and manip.shape == (4, 256, 256)
    assert manip.max() > 0.2 and (manip[:, :5, :5] == 0).all()
    assert (fake[manip == 0] == c.frames[:4][manip == 0]).all()          # untouched outside the mask
    inside = manip > 0.5
    assert np.abs(fake.astype(int) - c.frames[:4])[inside].mean() > 1   # changed inside


def test_scrubber_widget(crops):
    c = crops["talking_face.mp4"]
    box = frame_scrubber(c)
    slider, toggle, image = box.children[0].children[0], box.children[1], box.children[2]
    before = image.value
    slider.value = 5
    assert image.value != before
    toggle.value = "landmarks"
    assert image.value and scrub_image(c, 5, "none").shape == (256, 256, 3)


# --- no assets needed below --------------------------------------------------------------------------

def test_umeyama_matches_opencv():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 200
    M = np.array([[1.2, -0.4, 10.0], [0.4, 1.2, -5.0]])
    dst = transform_points(src, M) + rng.normal(0, 0.2, (5, 2))
    M_cv, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    assert np.allclose(umeyama(src, dst), M_cv, atol=0.05)
    assert np.allclose(umeyama(src, transform_points(src, M)), M)


def test_align_on_template_face():
    lms = np.zeros((478, 3), np.float32)
    T = CROP_PRESETS["lntuning"].template()
    lms[list(FIVE_POINTS), :2] = T * 0.5 + 30
    crop, lc, M = align_face(np.zeros((300, 300, 3), np.uint8), lms, "lntuning")
    assert crop.shape == (256, 256, 3) and np.allclose(five_points(lc), T, atol=1e-3)


def test_main_face_prefers_the_long_lived_face():
    def face(cx, s): return np.c_[np.linspace(cx - s / 2, cx + s / 2, 478), np.linspace(100 - s / 2, 100 + s / 2, 478), np.zeros(478)].astype(np.float32)
    dets = [[face(100 + i, 80)] for i in range(8)]
    dets[3] = [face(400, 150), face(103, 80)]                        # a bigger face for one frame, listed first
    lms, ok = main_face(dets)
    assert ok.all() and np.allclose(lms[3], face(103, 80))
    with pytest.raises(NoFaceError): main_face([[]] * 3)


def test_smoothing_keeps_position():
    rng = np.random.default_rng(0)
    lms = np.repeat(rng.random((1, 478, 3)).astype(np.float32) * 100, 6, 0) + rng.normal(0, 1, (6, 478, 3)).astype(np.float32)
    sm = smooth_landmarks(lms, np.arange(6), window=2)
    assert np.allclose(sm.mean(1), lms.mean(1), atol=1e-3)
    assert sm.std(0).mean() < lms.std(0).mean()


def test_part_mask_paints_in_order():
    # a synthetic face: every landmark on a circle, so the oval fills and the parts are degenerate but valid
    ang = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    lms = np.c_[64 + 50 * np.cos(ang), 64 + 50 * np.sin(ang)]
    m = part_mask(lms, 128)
    assert m.dtype == np.uint8 and m.shape == (128, 128) and m[0, 0] == 0 and m.max() <= 6


def test_self_blend_is_identity_outside_mask():
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ring = np.c_[32 + 12 * np.cos(np.linspace(0, 6.3, 478)), 32 + 12 * np.sin(np.linspace(0, 6.3, 478))]
    from dfworkbench.faces import sample_sbi
    fake, mask = self_blend(img, ring, sample_sbi(np.random.default_rng(1)))
    assert (fake[mask == 0] == img[mask == 0]).all() and mask[32, 32] > 0


@pytest.mark.parametrize("name", ["pexels_face.mp4", "talking_face.mp4", "no_face.mp4"])
def test_sparse_decoding_is_frame_exact(name):
    from dfworkbench.faces import iter_frames, probe_video, sample_indices
    p = video(name)
    n = probe_video(p).n_frames
    pick = sample_indices(n, 32)
    sparse = dict(iter_frames(p, pick))
    assert sorted(sparse) == pick.tolist()
    seen = 0
    for i, f in iter_frames(p):                                      # a full decode, streamed
        if i in sparse: assert (f == sparse[i]).all(), f"frame {i} differs"; seen += 1
    assert seen == len(pick) and i == n - 1


def test_crops_are_the_frames_warped_by_M(crops):
    c = crops["pexels_face.mp4"]
    full, _ = read_frames(video("pexels_face.mp4"), c.frame_idx)
    rewarp = np.stack([cv2.warpAffine(f, m, (256, 256), flags=cv2.INTER_LINEAR) for f, m in zip(full, c.M)])
    assert np.abs(rewarp.astype(int) - c.frames).max() <= 1                  # float32 M rounding only


def test_sbi_pairs_one_video_becomes_a_training_set(crops):
    from dfworkbench.data import ClipRecord
    from dfworkbench.faces import sbi_pairs
    pairs = sbi_pairs(crops["talking_face.mp4"], "shared/talking_face", clip_len=4)
    assert len(pairs) == 6 and [p.label for p in pairs] == [0, 1] * 3 and all(isinstance(p, ClipRecord) for p in pairs)
    assert {p.video_id for p in pairs} == {"shared/talking_face", "shared/talking_face/sbi"}
    for p in pairs:
        assert p.frames.shape == (4, 256, 256, 3) and p.parts.shape == p.manip.shape == (4, 256, 256)
        assert (p.manip.max() > 0) == (p.label == 1) and p.meta["family"] == ("sbi" if p.label else "real")


def test_dense_frames_smoothed_and_decoded_twice():
    c = extract_faces(video("talking_face.mp4"), None, "lntuning", frame_idx=range(8))
    assert c.frame_idx.tolist() == list(range(8)) and c.frames.shape == (8, 256, 256, 3)
    raw = extract_faces(video("talking_face.mp4"), None, "lntuning", smooth=0, frame_idx=range(8))
    assert not np.allclose(c.M, raw.M)                                     # smoothing moved the crops
    full, _ = read_frames(video("talking_face.mp4"), range(8))
    rewarp = np.stack([cv2.warpAffine(f, m, (256, 256), flags=cv2.INTER_LINEAR) for f, m in zip(full, c.M)])
    assert np.abs(rewarp.astype(int) - c.frames).max() <= 1


def test_stills_become_one_frame_records(tmp_path):
    from dfworkbench.data import FrameDataset
    from dfworkbench.faces import crop_records
    f, _ = read_frames(video("pexels_face.mp4"), [100])
    for ext in ("jpg", "png", "webp", "bmp"):
        cv2.imwrite(str(tmp_path / f"face.{ext}"), f[0][:, :, ::-1])
        c = extract_faces(tmp_path / f"face.{ext}")
        assert c.n_sampled == 1 and c.frames.shape == (1, 256, 256, 3) and c.frame_idx.tolist() == [0]
        assert eye_error(c).max() < 6 and (c.parts()[0] == PARTS.index("lips")).any()
    recs = crop_records(c, "stills/face.bmp", label=0, clip_len=1)
    ds = FrameDataset(recs, per_clip=1)
    assert len(ds) == 1 and ds[0].frames.shape == (1, 256, 256, 3) and ds[0].parts.shape == (1, 256, 256)
    frames = [tmp_path / f"face.{e}" for e in ("jpg", "png")]                 # a frame folder (DeepfakeBench)
    assert extract_faces(frames, 32).frame_idx.tolist() == [0, 1]


def test_face_pipeline_imports_no_torch():
    "The face workers (`dfworkbench.faces` and what it imports) stay free of torch, whose import alone is about 500 MB resident."
    import subprocess, sys
    code = "import sys, dfworkbench.faces, dfworkbench.readers, mediapipe.tasks.python.vision; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout[:500]
