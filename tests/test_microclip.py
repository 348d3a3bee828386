"The shipped micro-CLIP: loads by name offline and fast, carries its config, and its helpers behave."
import json, socket
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfworkbench.backbone import BACKBONES, MICROCLIP_CFG, load_backbone
from dfworkbench.core import DFWError, PreprocessCfg
from dfworkbench.data import to_model_input
from dfworkbench.lab import random_faces
from dfworkbench.microclip import (PRETRAIN_RECIPES, PretrainCfg, ZS_FAMILIES, caption_vocab, checkpoint_info, checkpoint_path, clip_loss,
                                   cls_attention, image_embeddings, microclip_tokenizer, random_caption, save_microclip,
                                   zero_shot)


@pytest.fixture(scope="module")
def mc():
    return load_backbone("micro-clip", "lab", text=True)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k): raise AssertionError("the micro-CLIP tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["micro-clip", "micro-clip-hp"])
def test_checkpoint_ships_and_loads_by_name_offline(no_network, name):
    p = checkpoint_path(name)
    assert p.is_file() and p.suffix == ".safetensors" and p == p.parent.parent / BACKBONES[name].tags["lab"]
    assert p.stat().st_size < 30 * 2**20
    m = load_backbone(name, "lab", text=True)  # load time: benchmarks/load_speed.py
    assert m.clip is not None and not m.training


@pytest.mark.parametrize("name", ["micro-clip", "micro-clip-hp"])
def test_checkpoint_carries_config_and_recipe(name):
    info = checkpoint_info(checkpoint_path(name))
    assert info["model_cfg"] == json.loads(json.dumps(MICROCLIP_CFG))
    assert PreprocessCfg.from_dict(info["preprocess_cfg"]) == BACKBONES[name].preprocess
    as_json = lambda cfg: json.loads(json.dumps(asdict(cfg)))
    # shipped weights = the notebook's recipe (the micro-CLIP's header predates the `backbone` field, whose default it has)
    assert as_json(PretrainCfg(**info["pretrain_cfg"])) == as_json(PRETRAIN_RECIPES[name])
    assert PRETRAIN_RECIPES[name].backbone == name
    assert json.loads(checkpoint_path(name).with_suffix(".json").read_text())["model_cfg"] == info["model_cfg"]


def test_checkpoint_path_names_the_known_backbones():
    with pytest.raises(DFWError, match="micro-clip-hp"): checkpoint_path("ViT-B-16")


def test_broken_checkpoint_fails_naming_the_key(tmp_path):
    from safetensors.torch import load_file, save_file
    sd = load_file(str(checkpoint_path()))
    bad = dict(sd); bad["visual.proj"] = bad["visual.proj"][:, :-1].contiguous()
    save_file(bad, str(tmp_path / "shape.safetensors"))
    with pytest.raises(DFWError, match="visual.proj"): load_backbone("micro-clip", tmp_path / "shape.safetensors", text=True)
    miss = {k: v for k, v in sd.items() if k != "ln_final.weight"}
    save_file(miss, str(tmp_path / "missing.safetensors"))
    with pytest.raises(DFWError, match="ln_final.weight"): load_backbone("micro-clip", tmp_path / "missing.safetensors", text=True)


def test_clip_loss_matches_open_clip():
    import open_clip
    g = torch.Generator().manual_seed(0)
    u, v = F.normalize(torch.randn(8, 16, generator=g), dim=1), F.normalize(torch.randn(8, 16, generator=g), dim=1)
    s = torch.tensor(20.0)
    torch.testing.assert_close(clip_loss(u, v, s), open_clip.ClipLoss()(u, v, s))


def test_captions_fit_context_and_vocab():
    _, _, attrs = random_faces(3, seed=5)
    rng, tok = np.random.default_rng(0), microclip_tokenizer()
    caps = [random_caption(a, rng) for a in attrs for _ in range(30)]
    t = tok(caps)
    assert (t[:, -1] == 0).all()  # nothing truncated at the context length
    assert set(t.unique().tolist()) <= set(caption_vocab().tolist())
    prompts = [p for fam in ZS_FAMILIES.values() for p in fam.values()]
    assert set(tok(prompts).unique().tolist()) <= set(caption_vocab().tolist())


@pytest.mark.parametrize("name", ["micro-clip", "micro-clip-hp"])
def test_zero_shot_beats_chance_on_new_people(name):
    m = load_backbone(name, "lab", text=True)
    frames, _, attrs = random_faces(100, seed=4242)  # people never seen in pretraining (seed 0)
    emb = image_embeddings(m, to_model_input(frames[:, 0], m.preprocess_cfg))
    for fam in ("hair_colour", "skin_tone"):
        r = zero_shot(m, emb, attrs, fam)
        assert r["balanced_acc"] > 1.5 * r["chance"], (name, fam, r["balanced_acc"])


def test_cls_attention_shape_and_hooks_removed(mc):
    frames, _, _ = random_faces(2, seed=7)
    att = cls_attention(mc, to_model_input(frames[:, 0], mc.preprocess_cfg))
    assert att.shape == (2, mc.n_layers, *mc.grid)
    assert not any(h.active for h in mc.hook_dict.values())


def test_save_is_atomic_and_loadable(tmp_path, mc):
    p = save_microclip(mc.clip, PretrainCfg(steps=1), tmp_path / "m.safetensors")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    assert checkpoint_info(p)["pretrain_cfg"]["steps"] == 1
    back = load_backbone("micro-clip", p)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(back(x), mc(x), atol=1e-6, rtol=0)  # shipped weights are fp16 already
