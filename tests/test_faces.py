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
    with pytest.raises(VideoError, match="truncated"): extract_faces(cut, 8, max_memory_mb=0)   # streaming path
    (tmp_path / "junk.mp4").write_bytes(os.urandom(3000))
    with pytest.raises(VideoError, match="junk.mp4: OpenCV cannot open"): extract_faces(tmp_path / "junk.mp4", 8)


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


def test_two_pass_decoding_matches(crops):
    c = crops["pexels_face.mp4"]
    c2 = extract_faces(video("pexels_face.mp4"), 12, "lntuning", max_memory_mb=0)   # frames not kept: decoded twice
    assert (c2.frames == c.frames).all() and np.allclose(c2.landmarks, c.landmarks) and (c2.frame_idx == c.frame_idx).all()


def test_sbi_pairs_one_video_becomes_a_training_set(crops):
    from dfworkbench.data import ClipRecord
    from dfworkbench.faces import sbi_pairs
    pairs = sbi_pairs(crops["talking_face.mp4"], "shared/talking_face", clip_len=4)
    assert len(pairs) == 6 and [p.label for p in pairs] == [0, 1] * 3 and all(isinstance(p, ClipRecord) for p in pairs)
    assert {p.video_id for p in pairs} == {"shared/talking_face", "shared/talking_face/sbi"}
    for p in pairs:
        assert p.frames.shape == (4, 256, 256, 3) and p.parts.shape == p.manip.shape == (4, 256, 256)
        assert (p.manip.max() > 0) == (p.label == 1) and p.meta["family"] == ("sbi" if p.label else "real")
