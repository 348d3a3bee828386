"Unit tests for dfworkbench.backbone that are too fiddly for the lesson: pinned hook names, safe loading, hook hygiene."
import json, logging

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from dfworkbench.backbone import (BLOCK_HOOKS, MICROCLIP_CFG, HookedViT, attn_impl_as, expected_hook_names,
                                  load_backbone, n_layernorm_params, read_state_dict)
from dfworkbench.core import DFWError

logging.getLogger().setLevel(logging.ERROR)

TINY = dict(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
            text_cfg=dict(context_length=8, vocab_size=49408, width=32, heads=1, layers=1))

# The hook-name API, pinned: changing this list is a breaking change for detectors and lessons.
PINNED_BLOCK_HOOKS = ("hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                      "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
                      "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")
PINNED_GLOBAL_PRE = ["hook_patch_embed", "hook_embed", "ln_pre.hook_normalized"]
PINNED_GLOBAL_POST = ["ln_post.hook_normalized", "hook_pooled", "hook_image_embed"]


@pytest.fixture(scope="module")
def tiny():
    "A tiny random open_clip CLIP and its HookedViT (shared parameters)."
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(**TINY).eval()
    return clip, HookedViT(clip.visual, clip=clip, name="tiny")


@pytest.fixture()
def local_dir(tmp_path, tiny):
    "An open_clip local-dir folder holding the tiny model."
    clip, _ = tiny
    save_file({k: t.contiguous() for k, t in clip.state_dict().items()}, tmp_path/"open_clip_model.safetensors")
    (tmp_path/"open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {"interpolation": "bilinear"}}))
    return tmp_path


def test_hook_names_pinned(tiny):
    _, h = tiny
    assert BLOCK_HOOKS == PINNED_BLOCK_HOOKS
    want = PINNED_GLOBAL_PRE + [f"blocks.{i}.{n}" for i in range(2) for n in PINNED_BLOCK_HOOKS] + PINNED_GLOBAL_POST
    assert h.hook_names == want == expected_hook_names(2)
    assert "blocks.1.attn.hook_pattern" in h.hook_names and len(h.hook_names) == 36


def test_every_hook_fires_and_shapes(tiny):
    _, h = tiny
    with torch.no_grad(): _, cache = h.run_with_cache(torch.randn(3, 3, 32, 32))
    assert sorted(cache) == sorted(h.hook_names)
    L, D, H, dh = 17, 64, 2, 32
    assert cache["hook_patch_embed"].shape == (3, L - 1, D)
    assert cache["blocks.0.attn.hook_q"].shape == (3, L, H, dh)
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, H, L, L)
    assert cache["blocks.1.mlp.hook_pre"].shape == (3, L, 4 * D)
    assert cache["hook_pooled"].shape == (3, D) and cache["hook_image_embed"].shape == (3, 32)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"].sum(-1), torch.ones(3, H, L))


def test_shared_parameters(tiny):
    clip, h = tiny
    assert h.visual is clip.visual
    ours = dict(h.named_parameters())
    for n, p in clip.visual.named_parameters():
        assert ours[f"visual.{n}"] is p and ours[f"visual.{n}"].data_ptr() == p.data_ptr()
    assert len(ours) == len(list(clip.visual.parameters()))  # no text tower, no copies


def test_parity_both_paths(tiny):
    clip, h = tiny
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = clip.encode_image(x)
        for impl in ("fused", "explicit"):
            with attn_impl_as(h, impl): torch.testing.assert_close(h(x), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(h.encode_image(x, normalize=True), clip.encode_image(x, normalize=True), atol=1e-5, rtol=0)
    assert h.attn_impl == "auto"


def test_hooks_removed_on_exception(tiny):
    _, h = tiny
    def boom(t, hook): raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        h.run_with_hooks(torch.randn(1, 3, 32, 32), [(lambda n: n.endswith("hook_resid_post"), boom)])
    with pytest.raises(RuntimeError, match="inside"):
        with h.hooks([("blocks.0.attn.hook_pattern", lambda t, hook: t)]):
            assert h.hook_dict["blocks.0.attn.hook_pattern"].active
            raise RuntimeError("inside")
    assert not any(hp.active for hp in h.hook_dict.values())


def test_hook_can_replace_activation(tiny):
    clip, h = tiny
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = h.run_with_hooks(x, [("hook_pooled", lambda t, hook: torch.zeros_like(t))])
    assert torch.count_nonzero(out) == 0


def test_forward_layers_clips(tiny):
    _, h = tiny
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        states = list(h.forward_layers(clips))
        exp = list(h.forward_layers(clips, attention=True, layers=[-1]))
        _, cache = h.run_with_cache(clips, names=["blocks.1.hook_resid_post", "blocks.1.attn.hook_v"])
    assert [s.layer for s in states] == [0, 1] and [s.layer for s in exp] == [1]
    s = states[1]
    assert s.q.shape == s.k.shape == s.v.shape == (2, 3, 17, 2, 32)
    assert s.attn_out.shape == s.resid_post.shape == (2, 3, 17, 64) and s.pattern is None
    assert exp[0].pattern.shape == (2, 3, 2, 17, 17)
    torch.testing.assert_close(s.resid_post, cache["blocks.1.hook_resid_post"].reshape(2, 3, 17, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.v, cache["blocks.1.attn.hook_v"].reshape(2, 3, 17, 2, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(exp[0].resid_post, s.resid_post, atol=1e-5, rtol=0)


def test_pattern_on_autograd_path(tiny):
    _, h = tiny
    got = {}
    def keep(t, hook): t.retain_grad(); got["p"] = t
    h.run_with_hooks(torch.randn(1, 3, 32, 32), [("blocks.0.attn.hook_pattern", keep)]).sum().backward()
    assert got["p"].grad is not None and got["p"].grad.abs().sum() > 0
    h.zero_grad(set_to_none=True)


def test_bad_input_and_names(tiny):
    _, h = tiny
    with pytest.raises(DFWError, match=r"expects \[N,3,32,32\]"): h(torch.randn(1, 3, 64, 64))
    with pytest.raises(DFWError, match="unknown hook name"): h.run_with_cache(torch.randn(1, 3, 32, 32), names=["nope"])
    with attn_impl_as(h, "fused"), pytest.raises(DFWError, match="never fire"):
        h.run_with_cache(torch.randn(1, 3, 32, 32), names="blocks.0.attn.hook_q")


def test_layernorm_counts():
    # counting needs no forward: build the vision towers only
    cfg = open_clip.get_model_config("ViT-B-16")
    assert n_layernorm_params(open_clip.model._build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])) == 39_936
    assert n_layernorm_params(load_backbone("ViT-B-16")) == 39_936


def test_local_dir_and_file_roundtrip(tiny, local_dir):
    clip, _ = tiny
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): ref = clip.encode_image(x)
    a = load_backbone(f"local-dir:{local_dir}")
    with torch.no_grad(): torch.testing.assert_close(a(x), ref, atol=1e-5, rtol=0)
    assert a.preprocess_cfg.interpolation == "bilinear" and a.preprocess_cfg.size == 32
    assert not a.training and a.clip is None
    t = load_backbone(f"local-dir:{local_dir}", text=True)
    tok = open_clip.get_tokenizer("ViT-B-16", context_length=8)(["a face"])
    with torch.no_grad(): torch.testing.assert_close(t.encode_text(tok), clip.encode_text(tok), atol=1e-5, rtol=0)
    with pytest.raises(DFWError, match="text=True"): a.encode_text(tok)
    with pytest.raises(DFWError, match="pretrained=None"): load_backbone(f"local-dir:{local_dir}", "openai")


def test_wrong_shape_and_missing_key_name_the_key(tmp_path):
    torch.manual_seed(0)
    ref = load_backbone("micro-clip")
    sd = {f"visual.{k}": t.contiguous() for k, t in ref.visual.state_dict().items()}
    save_file(sd, tmp_path/"ok.safetensors")
    ok = load_backbone("micro-clip", tmp_path/"ok.safetensors")
    assert torch.equal(ok.visual.proj, ref.visual.proj)
    bad = dict(sd); bad["visual.transformer.resblocks.2.attn.in_proj_weight"] = torch.zeros(3, 3)
    save_file(bad, tmp_path/"shape.safetensors")
    with pytest.raises(DFWError, match=r"'transformer\.resblocks\.2\.attn\.in_proj_weight' has shape \(3, 3\)"):
        load_backbone("micro-clip", tmp_path/"shape.safetensors")
    bad = dict(sd); del bad["visual.ln_post.weight"]
    save_file(bad, tmp_path/"missing.safetensors")
    with pytest.raises(DFWError, match="missing key 'ln_post.weight'"):
        load_backbone("micro-clip", tmp_path/"missing.safetensors")
    bad = dict(sd); bad["visual.extra.weight"] = torch.zeros(1)
    save_file(bad, tmp_path/"extra.safetensors")
    with pytest.raises(DFWError, match="unexpected key 'extra.weight'"):
        load_backbone("micro-clip", tmp_path/"extra.safetensors")
    with pytest.raises(DFWError, match="vision tower only"):
        load_backbone("micro-clip", tmp_path/"ok.safetensors", text=True)


def test_pickles_refused_unless_allowed(tmp_path, capsys):
    ref = load_backbone("micro-clip")
    sd = {f"visual.{k}": t for k, t in ref.visual.state_dict().items()}
    for suffix in (".bin", ".pt", ".pth"):
        torch.save({"state_dict": {f"module.{k}": t for k, t in sd.items()}}, tmp_path/f"w{suffix}")
        with pytest.raises(DFWError, match="allow_pickle=True"): load_backbone("micro-clip", tmp_path/f"w{suffix}")
        got = load_backbone("micro-clip", tmp_path/f"w{suffix}", allow_pickle=True)
        assert torch.equal(got.visual.conv1.weight, ref.visual.conv1.weight)

    class Evil:
        def __reduce__(self): return (print, ("PICKLED CODE RAN",))
    torch.save({"visual.proj": Evil()}, tmp_path/"evil.pt")
    with pytest.raises(DFWError, match=r"weights_only=True"): read_state_dict(tmp_path/"evil.pt", allow_pickle=True)
    assert "PICKLED CODE RAN" not in capsys.readouterr().out
    (tmp_path/"w.npz").write_bytes(b"x")
    with pytest.raises(DFWError, match="unknown weights format"): read_state_dict(tmp_path/"w.npz")
    (tmp_path/"junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DFWError, match="not a readable safetensors"): read_state_dict(tmp_path/"junk.safetensors")


def test_names_tags_and_offline(monkeypatch, tmp_path):
    with pytest.raises(DFWError, match="unknown backbone"): load_backbone("ViT-Nope")
    with pytest.raises(DFWError, match="known tag"): load_backbone("ViT-B-16", "no_such_tag")
    with pytest.raises(DFWError, match="hf download"): load_backbone("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K")
    monkeypatch.setenv("DFW_DATA", str(tmp_path))  # a data folder without the shipped checkpoint
    with pytest.raises(DFWError, match="05_microclip"): load_backbone("micro-clip", "lab")
    monkeypatch.setenv("DFW_OFFLINE", "1")
    with pytest.raises(DFWError, match="DFW_OFFLINE"): load_backbone("ViT-B-16", "openai")


def test_openai_mode_quickgelu():
    mc = load_backbone("micro-clip", openai=True)
    acts = {type(b.mlp.gelu).__name__ for b in mc.visual.transformer.resblocks}
    assert acts == {"QuickGELU"}
    assert {type(b.mlp.gelu).__name__ for b in load_backbone("micro-clip").visual.transformer.resblocks} == {"GELU"}


def test_microclip_random_shaped():
    mc = load_backbone("micro-clip")  # build time is measured by benchmarks/load_speed.py, never asserted here
    assert (mc.n_layers, mc.d_model, mc.n_heads, mc.d_head, mc.n_tokens) == (4, 192, 3, 64, 65)
    assert mc.preprocess_cfg.size == MICROCLIP_CFG["vision_cfg"]["image_size"] == 64
    with torch.no_grad(): assert mc(torch.randn(2, 5, 3, 64, 64)).shape == (2, 5, MICROCLIP_CFG["embed_dim"])
