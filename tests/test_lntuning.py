"LN-tuned CLIP: trainable sets, the linear probe's feature cache, and the config's refusals."
import pytest
import torch
import torch.nn.functional as F

from dfworkbench.core import DFWError
from dfworkbench.data import ClipBatch
from dfworkbench.methods.lntuning import (FeatureCache, LNTuningConfig, LNTuningDetector, alignment_loss, n_trainable,
                                          slerp_augment)


def test_trainable_counts_vit_b16():
    det = LNTuningDetector(LNTuningConfig(backbone="ViT-B-16", pretrained=None))
    assert n_trainable(det) == 39_936 + 1_538
    assert sum(p.numel() for p in det.parameters() if p.requires_grad) == 39_936 + 1_538


def test_feature_cache_matches_the_tower_and_counts_each_frame_once():
    torch.manual_seed(0)
    plain = LNTuningDetector(LNTuningConfig(pretrained=None, variant="linear_probe")).eval()
    cached = LNTuningDetector(LNTuningConfig(pretrained=None, variant="linear_probe", feature_cache=8),
                              backbone=plain.backbone).eval()
    x = torch.randn(2, 2, 3, 64, 64)
    want = plain.features(x)
    assert torch.allclose(cached.features(x), want, atol=1e-5)
    assert torch.allclose(cached.features(x.flip(0)), want.flip(0), atol=1e-5)   # same frames, other order: all hits
    assert (cached.feature_cache.misses, cached.feature_cache.hits) == (4, 4)


def test_feature_cache_bound_and_identical_frames():
    calls = []
    def enc(x):
        calls.append(len(x)); return x.flatten(1)[:, :3]
    fc = FeatureCache(2)
    fr = torch.randn(3, 3, 4, 4)
    fc(enc, fr)
    assert len(fc.store) == 2 and calls == [3]
    out = fc(enc, torch.stack([fr[2], fr[2]]))                              # most recent frame kept: no call
    assert calls == [3] and torch.equal(out[0], out[1])


def test_feature_cache_refused_where_the_tower_trains():
    for v in ("ln", "lora", "full"):
        with pytest.raises(DFWError, match="needs a frozen backbone"):
            LNTuningConfig(variant=v, feature_cache=100)
    with pytest.raises(DFWError, match="feature_cache must be"):
        LNTuningConfig(variant="linear_probe", feature_cache=-1)
    with pytest.raises(DFWError, match="positive number of frames"):
        FeatureCache(0)


def test_slerp_augment_stays_on_the_sphere_and_in_class():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 8, generator=g), torch.tensor([0, 1] * 8)
    out = slerp_augment(z, y, generator=g)
    assert torch.allclose(out.norm(dim=-1), torch.ones(16), atol=1e-5)
    zn = F.normalize(z, dim=-1)
    for i in range(16):                       # each output is a combination of its own class's points
        same = zn[y == y[i]].T
        sol = torch.linalg.lstsq(same, out[i][:, None]).solution
        assert torch.allclose((same @ sol).squeeze(1), out[i], atol=1e-4)


def test_alignment_is_two_minus_twice_mean_same_label_cosine():
    z = F.normalize(torch.randn(6, 4), dim=-1); y = torch.tensor([0, 0, 0, 1, 1, 1])
    cos = z @ z.T
    pairs = [cos[i, j] for i in range(6) for j in range(i + 1, 6) if y[i] == y[j]]
    assert torch.allclose(alignment_loss(z, y), 2 - 2 * torch.stack(pairs).mean(), atol=1e-5)


def test_linear_probe_with_cache_trains_the_head_only():
    det = LNTuningDetector(LNTuningConfig(pretrained=None, variant="linear_probe", feature_cache=64))
    batch = ClipBatch(torch.randn(4, 1, 3, 64, 64), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])
    det.train()
    out = det(batch)
    det.loss(out, batch).total.backward()
    assert det.head.fc.weight.grad is not None
    assert all(p.grad is None for p in det.backbone.parameters())


def test_load_detector_round_trips_an_lntuning_checkpoint(tmp_path):
    import json
    from dfworkbench.detector import load_detector
    from dfworkbench.learner import write_checkpoint
    torch.manual_seed(0)
    det = LNTuningDetector(LNTuningConfig.from_preset("tiny", pretrained=None, variant="lora")).eval()
    with torch.no_grad():
        for p in det.trainable_parameters(): p.add_(0.01 * torch.randn_like(p))   # moved away from any init
    ck = write_checkpoint(tmp_path / "ck", det, {"step": 3})
    back = load_detector(ck)
    assert type(back) is LNTuningDetector and back.config == det.config and not back.training
    x = ClipBatch(torch.randn(3, 2, 3, 64, 64), torch.tensor([0, 1, 0]), ["a", "b", "c"])
    with torch.no_grad(): assert torch.equal(back(x).logits, det(x).logits)
    st = json.loads((ck / "state.json").read_text()); st["detector_class"] = "FCGDetector2"
    (ck / "state.json").write_text(json.dumps(st))
    with pytest.raises(DFWError, match="unknown detector class 'FCGDetector2'"): load_detector(ck)
