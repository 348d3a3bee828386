"""`explain` on every detector, not only LN-tuning: FCG (states from `forward_layers`), the information-bottleneck
detector (frozen tokens behind a token cache) and the linear probe (features behind a feature cache). Each method
gives a finite map that is not all zero, and a cache never stands in for the pixels or the weights."""
import pytest
import torch

from dfworkbench.data import ClipBatch
from dfworkbench.interpret.attention import explain
from dfworkbench.interpret.attributions import randomisation_check
from dfworkbench.methods.fcg import FCGConfig, FCGDetector
from dfworkbench.methods.infobottleneck import IBConfig, IBDetector
from dfworkbench.methods.lntuning import LNTuningConfig, LNTuningDetector

METHODS = {"attention": {}, "rollout": {}, "grad_rollout": {}, "gradcam": {}, "integrated_gradients": dict(n_steps=4),
           "smoothgrad": dict(nt_samples=2), "occlusion": dict(window=16)}


def _batch(det, T, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClipBatch(frames=torch.randn(B, T, 3, *det.backbone.visual.image_size, generator=g), label=torch.tensor([0, 1][:B]),
                     video_id=[f"v{i}" for i in range(B)])


def _detectors():
    torch.manual_seed(0)
    fcg = FCGDetector(FCGConfig.from_preset("tiny")).eval()
    ib = IBDetector(IBConfig.from_preset("tiny")).eval()
    probe = LNTuningDetector(LNTuningConfig.from_preset("tiny", variant="linear_probe", feature_cache=64)).eval()
    return {"fcg": (fcg, fcg.config.T, "query_lips"), "ib": (ib, 1, "lib0"), "probe": (probe, 1, None)}


DETS = _detectors()


@pytest.mark.parametrize("name", list(DETS))
@pytest.mark.parametrize("method", list(METHODS) + ["detector_map", "detector_map_2"])
def test_every_method_gives_a_map(name, method):
    det, T, own = DETS[name]
    if method.startswith("detector_map") and own is None: pytest.skip("the linear probe has no maps of its own")
    if method == "detector_map_2":                                                   # a second map of its own: FCG's temporal evidence, a later block
        own, method = {"fcg": "temporal_evidence", "ib": "lib3"}[name], "detector_map"
    xb = _batch(det, T)
    kw = dict(name=own) if method == "detector_map" else METHODS[method]
    e = explain(det, xb, method, **kw)
    gh, gw = det.backbone.grid
    assert tuple(e.maps.shape) == (2, T, gh, gw) and tuple(e.frame_maps.shape[-2:]) == tuple(xb.frames.shape[-2:])
    assert torch.isfinite(e.maps).all() and e.maps.abs().sum() > 0, (name, method)


@pytest.mark.parametrize("name", ["ib", "probe"])
def test_a_cache_never_hides_the_weights(name):
    "With a cache of frozen features by pixel content, randomising the tower changed nothing (Spearman exactly 1)."
    det, T, _ = DETS[name]
    xb = _batch(det, T, seed=1)
    det(xb)                                                                          # the cache now holds these frames
    cache = det.token_cache if name == "ib" else det.feature_cache
    assert cache is not None and len(cache.store) > 0
    s = randomisation_check(det, xb, "occlusion", ks=(det.backbone.n_layers,))
    assert s.iloc[0] < 0.99, s                                                       # the randomised tower's map differs
    assert (det.token_cache if name == "ib" else det.feature_cache) is cache         # and the cache is back after explain
