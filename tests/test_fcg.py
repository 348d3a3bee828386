"FCG: parameter counts, vectorised modules against the official forms, losses, refusals, the state cache, checkpoints."
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfworkbench.backbone import LAB_BACKBONE, LayerState, load_backbone
from dfworkbench.core import DFWError
from dfworkbench.data import ClipBatch, ClipRecord, PARTS
from dfworkbench.detector import load_detector
from dfworkbench.learner import read_checkpoint, write_checkpoint
from dfworkbench.methods.fcg import (FACE_PARTS, ClipWindows, FCGConfig, FCGDetector, PairCollate, PairedClips, SpatialModule,
                                     StateCache, TemporalModule, build_prototypes, conv_matrix, fcg_loss, focal_loss,
                                     load_prototypes, part_shares, temporal_affinities)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Small tensors: one thread is fastest on a shared CPU (restored afterwards)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def micro():
    return load_backbone(LAB_BACKBONE, "lab")


def lab_batches(n=3, B=4, T=2, seed=0):
    "Clip batches with random frames and part maps drawing every face part."
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        parts = torch.randint(0, len(PARTS), (B, T, 64, 64), generator=g, dtype=torch.uint8)
        yield ClipBatch(torch.randn(B, T, 3, 64, 64, generator=g), torch.tensor([0, 1] * (B // 2)), [str(i) for i in range(B)], parts)


@pytest.fixture(scope="module")
def proto(micro):
    return build_prototypes(micro, lab_batches())


def n_trainable(det): return sum(p.numel() for p in det.trainable_parameters())


def test_trainable_count_vit_b16():
    det = FCGDetector(FCGConfig.from_preset("faithful", backbone="ViT-B-16", pretrained=None))
    assert n_trainable(det) == 111_198
    assert sum(p.numel() for p in det.parameters() if p.requires_grad) == 111_198
    assert tuple(det.heads.a_head.weight.shape) == (2, 768 + 196)


def temporal_official(block, q, k, v):
    b, t, l, h, d = q[:, :, 1:].shape; p = int(round(math.sqrt(l)))
    affs = []
    for a in (q, k, v):
        a = a[:, :, 1:].permute(0, 2, 1, 3, 4)
        aff = torch.einsum("nlqhc,nlkhc->nlqkh", a / d ** 0.5, a).softmax(dim=-2)
        affs.append(aff.flatten(0, 1).permute(0, 3, 1, 2))
    aff = block.t_conv(torch.cat(affs, dim=1)).unflatten(0, (b, p, p)).flatten(3)
    aff = aff + block.t_proj(aff)
    return block.p_conv(aff.permute(0, 3, 1, 2)).flatten(1)


def test_temporal_module_matches_the_official_form():
    g = torch.Generator().manual_seed(0)
    tm = TemporalModule(2, 3, (3, 3))
    with torch.no_grad():
        for c in (tm.t_conv, tm.p_conv): c.weight.normal_(0, 0.3, generator=g); c.bias.normal_(0, 0.3, generator=g)
    qkv = [torch.randn(2, 3, 10, 2, 4, generator=g) for _ in range(3)]
    got = tm(temporal_affinities(*qkv))
    assert got.shape == (2, 9)
    assert torch.allclose(got, temporal_official(tm, *qkv), atol=1e-5)
    x = torch.randn(5, 6, 3, 3, generator=g)
    assert torch.allclose((x.flatten(1) @ conv_matrix(tm.t_conv, 3) + tm.t_conv.bias).view(5, 1, 3, 3), tm.t_conv(x), atol=1e-5)


def test_spatial_module_matches_normalised_attention_and_grads():
    g = torch.Generator().manual_seed(1)
    sm = SpatialModule(4, 8)
    with torch.no_grad(): sm.queries.normal_(generator=g)
    k, emb = torch.randn(2, 3, 5, 2, 4, generator=g), torch.randn(2, 3, 5, 8, generator=g)
    y, A = sm(k, emb)
    K, Q = F.normalize(k[:, :, 1:].flatten(-2), dim=-1, eps=1e-4), F.normalize(sm.queries, dim=-1, eps=1e-4)
    A0 = torch.einsum("pd,btnd->btpn", Q, K).mul(100).softmax(-1)
    y0 = torch.einsum("btpn,btnd->btpd", A0, emb[:, :, 1:]).flatten(1, 2).mean(1)
    assert torch.allclose(A, A0, atol=1e-5) and torch.allclose(y, y0, atol=1e-5)


def test_focal_clamp_case_and_fcg_loss():
    z = torch.tensor([[0.0, -6.0]], requires_grad=True)
    loss = focal_loss(z, torch.tensor([1]))
    assert abs(loss.item() - 4.867) < 5e-4
    assert torch.equal(torch.autograd.grad(loss.sum(), z)[0], torch.zeros(1, 2))
    q = torch.randn(3, 4, 6)
    logits = 30 * F.normalize(q, dim=-1) @ F.normalize(q, dim=-1).transpose(1, 2)
    want = -torch.stack([logits[l].log_softmax(-1).diagonal() for l in range(3)]).mean()
    assert torch.allclose(fcg_loss(q, q), want, atol=1e-5)


def test_prototypes_round_trip_and_refusals(micro, proto, tmp_path):
    assert proto.keys.shape == (4, 4, 192) and (proto.keys.norm(dim=-1) <= 1 + 1e-5).all()
    back = load_prototypes(proto.save(tmp_path / "p.safetensors"))
    assert torch.equal(back.keys, proto.keys) and (back.backbone, back.digest, back.frames) == (proto.backbone, proto.digest, proto.frames)
    other = load_backbone(LAB_BACKBONE, None)
    with pytest.raises(DFWError, match=f"were made for backbone '{LAB_BACKBONE}'.*this detector's backbone is '{LAB_BACKBONE}'"):
        FCGDetector(FCGConfig.from_preset("tiny"), backbone=other, prototypes=proto)
    with pytest.raises(DFWError, match="no prototype file"):
        load_prototypes(tmp_path / "missing.safetensors")
    assert part_shares(torch.full((1, 64, 64), PARTS.index("lips"), dtype=torch.uint8), (8, 8))[0, :, FACE_PARTS.index("lips")].eq(1).all()


def test_clip_length_architecture_and_missing_prototypes(micro, proto, tmp_path):
    det = FCGDetector(FCGConfig.from_preset("tiny"), backbone=micro, prototypes=proto)
    b6 = ClipBatch(torch.randn(2, 6, 3, 64, 64), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(DFWError, match="built for clips of T=4 frames.*got a clip of T=6"):
        det(b6)
    write_checkpoint(tmp_path / "ck", FCGDetector(FCGConfig.from_preset("tiny", T=6), backbone=micro, prototypes=proto), {"step": 0})
    with pytest.raises(DFWError, match="another architecture"):
        read_checkpoint(tmp_path / "ck", det)
    with pytest.raises(DFWError, match="has none"):
        FCGDetector(FCGConfig.from_preset("tiny"), backbone=micro).train()(ClipBatch(torch.randn(2, 4, 3, 64, 64), torch.tensor([0, 1]), ["a", "b"]))


def test_gradients_reach_the_side_network_only_and_checkpoint_round_trip(micro, proto, tmp_path):
    det = FCGDetector(FCGConfig.from_preset("tiny"), backbone=micro, prototypes=proto).train()
    batch = next(lab_batches(1, B=2, T=4))
    out = det(batch)
    assert set(out.extras["maps"]) == {f"query_{p}" for p in FACE_PARTS} | {"temporal_evidence"}
    assert out.extras["maps"]["query_lips"].shape == out.extras["maps"]["temporal_evidence"].shape == (2, 4, 8, 8)
    det.loss(out, batch).total.backward()
    assert all(p.grad is None for p in det.backbone.parameters()) and not det.backbone.training
    assert all(p.grad is not None for p in det.trainable_parameters())
    det.eval()
    write_checkpoint(tmp_path / "ck", det, {"step": 0})
    back = load_detector(tmp_path / "ck")
    assert torch.equal(back.prototypes, det.prototypes)
    with torch.no_grad(): assert torch.allclose(back(batch).logits, det(batch).logits, atol=1e-5)


def test_state_cache_gives_the_uncached_output(micro, proto):
    plain = FCGDetector(FCGConfig.from_preset("tiny"), backbone=micro, prototypes=proto).eval()
    cache = StateCache(8)
    cached = FCGDetector(FCGConfig.from_preset("tiny"), backbone=micro, prototypes=proto, state_cache=cache).eval()
    cached.load_state_dict(plain.state_dict())
    b = next(lab_batches(1, B=2, T=4))
    with torch.no_grad():
        want = plain(b).logits
        assert torch.allclose(cached(b).logits, want, atol=1e-5)
        flipped = ClipBatch(b.frames.flip(0), b.label, b.video_id)
        assert torch.allclose(cached(flipped).logits, want.flip(0), atol=1e-5)
    assert (cache.misses, cache.hits) == (2, 2)


class _Src:
    "Four records: two identities, each a real and a fake clip."
    def __init__(self):
        self.recs = [ClipRecord(np.zeros((6, 8, 8, 3), np.uint8), lab, f"{i}/{lab}", meta={"identity": str(i), "label": lab})
                     for i in range(2) for lab in (0, 1)]
    def __len__(self): return len(self.recs)
    def __getitem__(self, i): return self.recs[i]


def test_pairs_match_their_target_and_windows_cover_the_clip():
    src = _Src()
    pairs = PairedClips(src, T=2)
    assert len(pairs) == 4
    for f, r in (pairs[i] for i in range(4)):
        assert (f.label, r.label) == (1, 0) and f.meta["identity"] == r.meta["identity"]
    w = ClipWindows(src, T=2, span=3)
    assert len(w) == 8 and w[1].meta["frame_idx"] == [3, 5]
    from dfworkbench.core import PreprocessCfg
    b = PairCollate(PreprocessCfg(size=8))([pairs[0], w[0]])
    assert b.frames.shape[:2] == (3, 2)
