"The forgery lab: determinism, masks, part maps, errors, and the suite cache under two processes."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfworkbench.core import DFWError
from dfworkbench.lab import (FAMILIES, PARTS, SUITES, describe, caption, load_suite, make_spec, make_suite, manipulate,
                             random_faces, render_clips, render_real, sample_identity, suite_path)

SMALL = dict(size="smoke", res=32, n_frames=4)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DFW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _pair(seed=0, res=64):
    ids = [sample_identity(np.random.default_rng([seed, k])) for k in range(2)]
    return render_real(make_spec(ids[0], [seed, 0]), res), make_spec(ids[1], [seed, 1])


def test_same_seed_same_bytes_other_seed_other_people():
    a, b = make_suite("dfdc", seed=3, **SMALL), make_suite("dfdc", seed=3, **SMALL)
    assert a.frames.tobytes() == b.frames.tobytes() and a.parts.tobytes() == b.parts.tobytes()
    assert a.manip.tobytes() == b.manip.tobytes() and a.meta == b.meta
    c = make_suite("dfdc", seed=4, **SMALL)
    assert [m["attributes"] for m in a.meta] != [m["attributes"] for m in c.meta]
    assert not np.array_equal(a.frames, c.frames)


def test_identity_disjoint_splits():
    s = make_suite("ffpp", **SMALL)
    ids = {sp: {m["identity"] for m in s.meta if m["split"] == sp} for sp in ("train", "val", "test")}
    assert all(ids.values())
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert {m["family"] for m in s.meta} == {"real", "faceswap", "reenact", "lipsync", "gan"}
    assert set(SUITES) == {"ffpp", "celebdf", "c40", "shift", "dfdc"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fake_masks_nonempty_and_inside_face(family):
    tgt, other = _pair()
    x, m, p = manipulate(family, tgt, other, rng=0)
    assert x.shape == tgt["rgb"].shape and m.shape == tgt["parts"].shape
    assert (m > 0.5).sum() > 20
    inside = (tgt["parts"] >= 1) & (tgt["parts"] <= 5)
    assert float((m * ~inside).sum() / m.sum()) < 0.03
    assert not ((m > 0.5) & (p == 0)).any()


def test_real_masks_zero_and_fakes_nonzero_in_suite():
    s = make_suite("c40", **SMALL)
    real = s.labels == 0
    assert real.any() and (~real).any()
    assert (s.manip[real] == 0).all()
    assert all((m > 127).any() for m in s.manip[~real])


def test_frontal_face_has_every_part():
    spec = make_spec(sample_identity(np.random.default_rng(5)), 5, n_frames=1)
    spec["motion"].update(yaw=np.zeros(1), pitch=np.zeros(1), roll=np.zeros(1), blink=np.ones(1), mouth=np.full(1, 0.3))
    for res in (64, 224):
        assert set(np.unique(render_real(spec, res)["parts"].numpy())) == set(range(len(PARTS)))


def test_clear_errors():
    tgt, other = _pair(res=32)
    with pytest.raises(DFWError, match="family"): manipulate("neuraltextures", tgt, other)
    with pytest.raises(DFWError, match="amplitud"): manipulate("gan", tgt, amplitud=1)
    with pytest.raises(DFWError, match="res"): make_suite("dfdc", res=-8)
    with pytest.raises(DFWError, match="res"): render_clips([other], res=0)
    with pytest.raises(DFWError, match="suite"): make_suite("ffpp++")
    with pytest.raises(DFWError, match="size"): make_suite("dfdc", size="huge")
    with pytest.raises(DFWError, match="n_frames"): make_suite("dfdc", size="smoke", n_frames=0)
    s = make_suite("dfdc", **SMALL)
    with pytest.raises(DFWError, match="n_frames"): s.record(0, frames=[0, 9])
    with pytest.raises(DFWError, match="split"): s.subset(split="train")


def test_random_faces_and_captions():
    f, p, att = random_faces(3, res=32, n_frames=2, seed=1)
    assert f.shape == (3, 2, 32, 32, 3) and f.dtype == np.uint8 and p.shape == (3, 2, 32, 32)
    assert len(att) == 3 and all(isinstance(caption(a), str) for a in att)
    json.dumps(att)
    assert np.array_equal(random_faces(3, res=32, n_frames=2, seed=1)[0], f)


def test_record_roundtrip(cache):
    s = load_suite("dfdc", **SMALL)
    r = s.record(1, frames=[0, 2])
    assert r.frames.shape == (2, 32, 32, 3) and r.manip.dtype == np.float32 and r.meta["frame_idx"] == [0, 2]
    assert r.label == s.labels[1] and r.video_id == s.video_ids[1]


_LOADER = ("import os, sys; from dfworkbench.lab import load_suite; "
           "s = load_suite('celebdf', 'smoke', res=32, n_frames=4); print(len(s), s.frames.sum())")


def test_cache_two_processes(cache):
    env = {**os.environ, "DFW_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _LOADER], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    path = suite_path("celebdf", "smoke", 32, 4)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    s = load_suite("celebdf", "smoke", res=32, n_frames=4)
    assert outs[0] == f"{len(s)} {s.frames.sum()}"
