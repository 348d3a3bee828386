"The information-bottleneck detector: losses against independent computations, stop-gradients, trainable sets, refusals, checkpoints."
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfworkbench.backbone import LAB_BACKBONE, load_backbone
from dfworkbench.core import DFWError
from dfworkbench.data import ClipBatch
from dfworkbench.methods.infobottleneck import (IBConfig, IBDetector, IBHeads, AutoWeights, gil_loss, lil_loss, linear_cka,
                                                mixup, part_mass, posterior_kl)


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return load_backbone(LAB_BACKBONE, None)


def batch(B=2, T=2, res=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClipBatch(torch.randn(B, T, 3, res, res, generator=g), torch.tensor([0, 1, 1, 0][:B]), [f"v{i}" for i in range(B)])


def tiny(tower, **kw):
    return IBDetector(IBConfig.from_preset("tiny", pretrained=None, token_cache=0, **kw), backbone=tower)


def test_posterior_kl_is_the_code_kl_div_and_halves_the_mean_kl():
    s, t = torch.randn(5, 2), torch.randn(5, 2)
    ps, pt = F.softmax(s / 1.5, -1), F.softmax(t / 1.5, -1)
    kl = (ps * (ps.log() - pt.log())).sum(-1)                              # per-sample KL(P_s || P_t)
    assert torch.allclose(posterior_kl(s, t, 1.5, "batchmean"), kl.mean(), atol=1e-6)
    assert torch.allclose(posterior_kl(s, t, 1.5, "mean"), kl.mean() / 2, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(posterior_kl(s, t), F.kl_div(pt.log(), ps, reduction="mean"), atol=1e-6)   # the code's call


def test_cmi_equals_expected_kl_on_a_discrete_problem():
    g = torch.Generator().manual_seed(3)
    joint = torch.rand(2, 2, 2, generator=g, dtype=torch.float64); joint /= joint.sum()     # p(z1, z2, y)
    H = lambda p: float(-(p[p > 0] * p[p > 0].log()).sum())
    cmi = (H(joint.sum(0)) - H(joint.sum((0, 2)))) - (H(joint) - H(joint.sum(-1)))       # I(z1; y | z2) = H(y|z2) - H(y|z1,z2)
    post = joint / joint.sum(-1, keepdim=True)
    rest = joint.sum(0) / joint.sum((0, 2))[:, None]
    full = post.reshape(4, 2).log(); loo = rest.repeat(2, 1).log()                        # rows (z1, z2) in order
    w = joint.sum(-1).reshape(4)
    kl = (full.exp() * (full - loo)).sum(-1)
    assert abs(float((w * kl).sum()) - cmi) < 1e-12
    rows = torch.multinomial(w, 100_000, replacement=True, generator=g)
    assert abs(float(posterior_kl(full[rows], loo[rows], 1.0, "batchmean")) - cmi) < 3e-3


def test_lil_by_hand_and_stop_gradients():
    zl = torch.tensor([[0.0, math.log(3)]], requires_grad=True)
    loo = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]], requires_grad=True)
    L, kls = lil_loss(loo, zl, T=1.0)
    assert abs(float(L.detach()) - 2 ** -0.5) < 1e-6
    L.backward()
    assert zl.grad is None and loo.grad.abs().sum() > 0
    assert abs(float(gil_loss(loo[0], zl, T=1.0).detach()) - 0.25 * math.log(4 / 3)) < 1e-6


def test_detector_gradients_reach_what_each_loss_should(tower):
    torch.manual_seed(0)
    det = tiny(tower).train(); xb = batch()
    def grads(fn):
        det.zero_grad(set_to_none=True); fn(det(xb)).backward()
        return {n for n, p in det.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    all_ = grads(lambda o: det.loss(o, xb).total)
    assert {"heads.a.weight", "heads.b.3.weight", "heads.g.0.weight", "heads.h.1.weight", "auto.sigma"} <= all_
    assert not any(n.startswith("backbone") for n in all_)
    lil = grads(lambda o: lil_loss(o.extras["ib"].loo, o.extras["ib"].Z)[0])
    assert not any(n.startswith(("heads.a", "heads.g", "heads.h")) for n in lil) and any(n.startswith("libs") for n in lil)
    gil = grads(lambda o: gil_loss(o.extras["ib"].G, o.extras["ib"].Z))
    assert not any(n.startswith(("heads.a", "heads.b")) for n in gil) and "heads.g.0.weight" in gil


def test_lil_only_trains_head_a_and_n1_has_no_lil(tower):
    det = tiny(tower, gil=False).train(); xb = batch()
    parts = det.loss(det(xb), xb).parts
    assert "ce_Z" in parts and "gil" not in parts and "lil" in parts          # the code's bug (no CE on head a) fixed
    with pytest.raises(DFWError, match="needs n_blocks >= 2"): IBConfig(n_blocks=1)
    one = tiny(tower, n_blocks=1, lil=False).train()
    assert one(xb).extras["ib"].loo.shape == (0, 4, 2)


def test_hyper_weights_follow_the_code_order(tower):
    det = tiny(tower, weighting="hyper").train(); xb = batch()
    L = det.loss(det(xb), xb); p = L.parts
    assert torch.allclose(L.total, p["ce_G"] + p["ce_Z"] + p["ce_loo"] + 2 * p["gil"] + 10 * p["lil"], atol=1e-5)
    assert det.auto is None


def test_param_groups_give_sigmas_their_own_rate(tower):
    from dfworkbench.learner import LearnerConfig
    det = tiny(tower, sigma_lr_scale=0.1)
    groups = det.param_groups(LearnerConfig(weight_decay=1e-6))
    by = {g["name"]: g for g in groups}
    assert by["sigma"]["lr_scale"] == 0.1 and by["sigma"]["weight_decay"] == 0.0 and by["sigma"]["params"][0] is det.auto.sigma
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(det.trainable_parameters())


def test_eval_is_deterministic_and_the_token_cache_exact(tower):
    torch.manual_seed(0)
    det = tiny(tower).eval(); xb = batch()
    cached = IBDetector(IBConfig.from_preset("tiny", pretrained=None, token_cache=16), backbone=tower).eval()
    cached.load_state_dict(det.state_dict())
    with torch.no_grad():
        a, b = det(xb).logits, cached(xb).logits
        assert torch.equal(det(xb).logits, a) and torch.allclose(a, b, atol=1e-5)
    assert det(xb).extras["mix"] == (None, 1.0)


def test_batch_of_one_with_batchnorm_is_refused_layernorm_is_not(tower):
    one = batch(B=1, T=1)
    with pytest.raises(DFWError, match="cannot train on a batch of 1 frame"): tiny(tower).train()(one)
    tiny(tower, fusion_norm="layer").train()(one)


def test_unknown_backbones_and_configs_are_refused():
    with pytest.raises(DFWError, match="unknown backbone 'resnet50'"): IBConfig(lib="resnet", backbone="resnet50", pretrained=None)
    with pytest.raises(DFWError, match="unknown backbone 'ViT-Q-99'"): IBDetector(IBConfig(backbone="ViT-Q-99", pretrained=None))
    with pytest.raises(DFWError, match="mixes the pixels"): IBConfig(token_cache=10)
    with pytest.raises(DFWError, match="no frozen tokens"): IBConfig(lib="resnet", backbone="resnet34", pretrained=None, mixup_at="tokens")


def test_wrong_n_checkpoint_is_refused_and_load_detector_round_trips(tower, tmp_path):
    from dfworkbench.detector import load_detector
    from dfworkbench.learner import read_checkpoint, write_checkpoint
    torch.manual_seed(0)
    two = tiny(tower, n_blocks=2).eval()
    ck = write_checkpoint(tmp_path / "ck", two, {"step": 1})
    with pytest.raises(DFWError, match="another architecture"): read_checkpoint(ck, tiny(tower))
    back = load_detector(ck)
    xb = batch()
    with torch.no_grad(): assert torch.allclose(back(xb).logits, two(xb).logits, atol=1e-6)


def test_resnet_path_without_weights_warns_and_trains():
    with pytest.warns(UserWarning, match="random weights"):
        det = IBDetector(IBConfig(lib="resnet", backbone="resnet34", pretrained="imagenet", n_blocks=2, fusion_hidden=(16, 8)))
    det.train(); xb = batch(B=2, T=1, res=16)
    out = det(xb); det.loss(out, xb).total.backward()
    assert det.d == 512 and det.libs[1].conv1.weight.grad is not None and out.extras["maps"] == {}


def test_mixup_and_small_helpers():
    x = torch.arange(6.0)[:, None]
    xm, perm, lam = mixup(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[perm])
    aw = AutoWeights(2)
    assert abs(float(aw([torch.tensor(1.0), torch.tensor(3.0)]).detach()) - (2.0 + 2 * math.log(2))) < 1e-6
    X = torch.randn(40, 5)
    assert abs(linear_cka(X, 2 * X + 1) - 1) < 1e-9
    maps = torch.full((1, 2, 2), 0.25); parts = torch.zeros(1, 4, 4, dtype=torch.uint8); parts[:, :2] = 4
    assert torch.allclose(part_mass(maps, parts)[0, [0, 4]], torch.tensor([0.5, 0.5]))
    assert IBHeads(3, 4).eval()(torch.randn(2, 3, 4)).loo.shape == (3, 2, 2)


def _reference_lrs(base_lrs, epochs, steps, T_max):
    "The official loop's LRs: a new Adam and CosineAnnealingLR(T_max) each epoch, the scheduler stepped after every optimiser step."
    out = []
    for _ in range(epochs):
        opt = torch.optim.Adam([dict(params=[torch.zeros(1, requires_grad=True)], lr=b) for b in base_lrs])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_max)
        for _ in range(steps):
            out.append([g["lr"] for g in opt.param_groups]); opt.step(); sched.step()
    return out


def test_reference_schedule_equals_cosineannealinglr_stepped_per_iteration_and_restarted_per_epoch():
    from dfworkbench.learner import Callback, Learner, LearnerConfig, ToyDetector, toy_clips
    from dfworkbench.methods.infobottleneck import IBCosineSchedule

    class TwoRates(ToyDetector):
        def param_groups(self, cfg):
            return [dict(name="w", params=[self.head[1].weight]), dict(name="b", params=[self.head[1].bias], lr_scale=0.25)]

    class Seen(Callback):
        def before_fit(self, learn): self.lrs = []
        def after_step(self, learn): self.lrs.append([g["lr"] for g in learn.opt.param_groups])

    seen, data = Seen(), toy_clips(14, 1)
    cfg = LearnerConfig(epochs=2, batch_size=2, lr=1e-3, schedule="constant", reset_optimizer="epoch", progress=False, device="cpu")
    learn = Learner(TwoRates(), data, None, cfg, callbacks=[IBCosineSchedule(3), seen], collate_fn=data.collate_fn).fit()
    ref = _reference_lrs([1e-3, 2.5e-4], epochs=2, steps=7, T_max=3)               # 7 steps: down at 3, back up at 6, restart at 7
    assert len(seen.lrs) == 14 and max(abs(a - b) for r, s in zip(ref, seen.lrs) for a, b in zip(r, s)) < 1e-15
    assert [r["lr"] for r in learn.step_log] == [s[0] for s in seen.lrs]
    assert seen.lrs[3][0] < 1e-18 and seen.lrs[6][0] == pytest.approx(1e-3) and seen.lrs[7][0] == pytest.approx(1e-3)
    with pytest.raises(DFWError, match="sets the learning rate itself"):
        Learner(TwoRates(), data, None, cfg.replace(schedule="cosine"), callbacks=[IBCosineSchedule(3)], collate_fn=data.collate_fn).fit()


def test_faithful_preset_selects_the_reference_schedule_and_augmentation_others_do_not():
    from dfworkbench.methods.infobottleneck import IBCosineSchedule, ReferenceAugment
    f, t = IBConfig.from_preset("faithful"), IBConfig.from_preset("tiny")
    assert f.learner_config().schedule == "constant" and [type(c) for c in f.callbacks()] == [IBCosineSchedule]
    assert f.callbacks()[0].T_max == 150 and f.callbacks()[0].eta_min == 0.0 and f.learner_config().reset_optimizer == "epoch"
    assert isinstance(f.augmentation(224), ReferenceAugment)
    assert t.learner_config().schedule == "cosine" and t.callbacks() == [] and t.augmentation(64) is None
    opt_in = IBConfig.from_preset("tiny", lr_schedule="reference", cosine_t_max=40)
    assert opt_in.learner_config().schedule == "constant" and opt_in.callbacks()[0].T_max == 40
    with pytest.raises(DFWError, match="unknown lr_schedule"): IBConfig(lr_schedule="plateau")


def test_reference_augment_has_the_reference_parameters_and_only_touches_training_items():
    import numpy as np
    from dfworkbench.data import ClipRecord, FrameDataset
    from dfworkbench.methods.infobottleneck import reference_augment, reference_extras
    a = reference_augment(224)
    assert (a.noise_var, a.noise_p, a.grey_p, a.shift, a.scale, a.rotate, a.affine_p) == ((10.0, 50.0), 0.1, 0.2, 0.1, 0.2, 10.0, 0.5)
    assert (a.base.jpeg, a.base.jpeg_p, a.base.blur_p, a.base.flip, a.base.colour_p, a.base.crop_p) == ((60, 100), 0.5, 0.05, 0.5, 0.7, 0.0)
    draws = [a.draw_extra(np.random.default_rng(s)) for s in range(3000)]
    for k, p in (("noise", 0.1), ("grey", 0.2), ("affine", 0.5)):
        assert abs(np.mean([bool(d[k]) for d in draws]) - p) < 4 * (p * (1 - p) / 3000) ** 0.5
    img = np.random.default_rng(0).integers(0, 256, (7, 7, 3), dtype=np.uint8)
    off = dict(noise=None, grey=False, affine=None)
    assert np.array_equal(reference_extras(img, None, None, {**off, "affine": (-90.0, 1.0, 0.0, 0.0)}, None)[0], np.rot90(img, -1))
    grey = reference_extras(img, None, None, {**off, "grey": True}, None)[0]
    assert (grey == grey[..., :1]).all()
    clips = [ClipRecord(np.random.default_rng(i).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8), i % 2, f"v{i}") for i in range(4)]
    cfg = IBConfig.from_preset("faithful")
    train = FrameDataset(clips, per_clip=2, train=True)
    view = cfg.training_split(train, labels=[c.label for c in clips for _ in range(2)], seed=3)
    assert len(view) == 2 * 2 * 4 + 2 * 2
    assert np.mean([not np.array_equal(view[k].frames, view.dataset[k].frames) for k in range(len(view))]) > 0.8
    assert np.array_equal(view[2].frames, view[2].frames)                                   # seeded by (seed, epoch, index)
    evals = FrameDataset(clips, per_clip=2)
    assert all(np.array_equal(evals[k].frames, clips[k // 2].frames[[k % 2]]) for k in range(len(evals)))   # evaluation: untouched
    assert IBConfig.from_preset("tiny").training_split(train) is train


def test_branches_copied_by_copy_blocks_share_nothing_and_train_only_lora_and_projections(tower):
    import copy
    from dfworkbench.detector import add_lora
    from dfworkbench.methods.infobottleneck import BranchLIBs
    torch.manual_seed(0); br = BranchLIBs(tower.visual, n=2, k=2, d=8)
    tower_ptrs = {t.data_ptr() for t in list(tower.parameters()) + list(tower.buffers())}
    own = list(br.named_parameters(remove_duplicate=False)) + list(br.named_buffers(remove_duplicate=False))
    assert not any(t.data_ptr() in tower_ptrs for _, t in own)
    assert len({t.data_ptr() for _, t in own}) == len(own)
    assert {n for n, p in br.named_parameters() if p.requires_grad} == \
        {n for n, _ in br.named_parameters() if n.endswith((".A", ".B")) or n.startswith("proj.")}
    assert not any("parametrizations" in n for n, _ in tower.named_parameters())
    blocks = tower.visual.transformer.resblocks; L = len(blocks)
    old = nn.ModuleList(copy.deepcopy(blocks[i]) for i in range(L - 2, L)).requires_grad_(False); add_lora(old, 4, 8.0)
    new = br.branches[0]
    assert [(n, p.shape, p.requires_grad) for n, p in new.named_parameters()] == [(n, p.shape, p.requires_grad) for n, p in old.named_parameters()]
    for (n, a), (_, b) in zip(new.state_dict().items(), old.state_dict().items()):
        assert torch.equal(a, b) or n.endswith(".A"), n                                   # all equal but LoRA's random A
