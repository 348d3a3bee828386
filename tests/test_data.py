"The data layer: records, frame sampling, clip-consistent augmentation, preprocessing, datasets and loaders."
import numpy as np
import pytest
import torch

from dfworkbench.core import DFWError, PreprocessCfg
from dfworkbench.data import (ClipAugment, ClipBatch, ClipCollate, ClipDataset, ClipRecord, FrameDataset, augment_clip,
                              frame_indices, make_loader, to_model_input)
from dfworkbench.lab import make_suite


@pytest.fixture(scope="module")
def suite():
    return make_suite("dfdc", "smoke", res=32, n_frames=8)


def test_frame_indices():
    assert frame_indices(30, 10).tolist() == np.linspace(0, 29, 10).round().astype(int).tolist()
    assert frame_indices(8, 3, "window", stride=2).tolist() == [0, 2, 4]
    rng = np.random.default_rng(0)
    for _ in range(20):
        ix = frame_indices(16, 4, "window", rng=rng)
        assert ix[0] >= 0 and ix[-1] < 16 and (np.diff(ix) == 1).all()
    with pytest.raises(DFWError, match="T=9"): frame_indices(8, 9)
    with pytest.raises(DFWError, match="T"): frame_indices(8, -1)


def test_record_checks():
    with pytest.raises(DFWError, match="uint8"): ClipRecord(np.zeros((2, 4, 4, 3)), 0, "a")
    with pytest.raises(DFWError, match="manip"): ClipRecord(np.zeros((2, 4, 4, 3), np.uint8), 0, "a", manip=np.zeros((2, 4, 5)))


def test_augment_same_across_frames(suite):
    rec = suite.record(1)
    same = ClipRecord(np.repeat(rec.frames[:1], rec.T, 0), rec.label, rec.video_id, np.repeat(rec.parts[:1], rec.T, 0),
                      np.repeat(rec.manip[:1], rec.T, 0), rec.meta)
    aug = ClipAugment(flip=1, crop_p=1, colour_p=1, jpeg_p=1, blur_p=1)
    out = augment_clip(same, aug, np.random.default_rng(0))
    assert (out.frames == out.frames[:1]).all() and (out.parts == out.parts[:1]).all() and (out.manip == out.manip[:1]).all()
    flip = augment_clip(rec, ClipAugment(flip=1, crop_p=0, colour_p=0, jpeg_p=0, blur_p=0), np.random.default_rng(0))
    assert np.array_equal(flip.frames, rec.frames[:, :, ::-1]) and np.array_equal(flip.parts, rec.parts[:, :, ::-1])


def test_preprocessing_from_cfg(suite):
    rec = suite.record(0)
    cfg = PreprocessCfg(size=224)
    x = to_model_input(rec.frames, cfg)
    assert x.shape == (rec.T, 3, 224, 224)
    same = to_model_input(rec.frames, PreprocessCfg(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    ref = torch.from_numpy(rec.frames).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    assert torch.allclose(same, ref, atol=1e-6)


def test_clip_batch_contract(suite):
    dl = make_loader(ClipDataset(suite, T=4), PreprocessCfg(size=48, interpolation="bilinear"), batch_size=6)
    b = next(iter(dl))
    assert isinstance(b, ClipBatch)
    assert b.frames.shape == (6, 4, 3, 48, 48) and b.frames.dtype == torch.float32
    assert b.label.dtype == torch.long and b.label.tolist() == suite.labels[:6].tolist()
    assert b.parts.shape == (6, 4, 48, 48) and b.parts.dtype == torch.uint8
    assert b.manip.shape == (6, 4, 48, 48) and b.manip.dtype == torch.float32
    assert b.video_id == suite.video_ids[:6] and b.meta[0]["family"] in ("real", "sbi")
    fb = next(iter(make_loader(FrameDataset(suite, per_clip=2), PreprocessCfg(size=32), batch_size=4)))
    assert fb.frames.shape == (4, 1, 3, 32, 32)


def test_dataset_errors(suite):
    with pytest.raises(DFWError, match="T=9"): ClipDataset(suite, T=9)
    with pytest.raises(DFWError, match="per_clip"): FrameDataset(suite, per_clip=0)
    short = FrameDataset(suite, per_clip=suite.n_frames + 1)            # clips shorter than per_clip give each frame once
    assert len(short) == suite.n_frames * len(suite)
    assert [short[k].meta["frame_idx"] for k in range(suite.n_frames)] == [[t] for t in range(suite.n_frames)]
    with pytest.raises(DFWError, match="same T"): ClipCollate(PreprocessCfg(size=32))([suite.record(0, [0, 1]), suite.record(1, [0])])


def test_workers_match_in_process(suite):
    ds = ClipDataset(suite, T=3, sampling="window", augment=ClipAugment(), train=True, seed=7)
    cfg = PreprocessCfg(size=32)
    a = [b.frames for b in make_loader(ds, cfg, batch_size=8, shuffle=True, seed=1)]
    b = [b.frames for b in make_loader(ds, cfg, batch_size=8, shuffle=True, seed=1, num_workers=2)]
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
