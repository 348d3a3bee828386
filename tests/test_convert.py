"`dfw import` (dfworkbench.convert): ViT-B/16 parity with transformers, plain and PEFT LN-tuned; pickles; the official FCG layout."
import argparse, json, types

import pytest
import torch
import torch.nn.functional as F

from dfworkbench.convert import import_command, import_parser, to_official_fcg
from dfworkbench.detector import load_detector

LN_TARGETS = ["pre_layrnorm", "layer_norm1", "layer_norm2", "post_layernorm", "layernorm"]   # lntuning.md §1.4


def dfw_import(*argv):
    "Run `dfw import ARGV...` through the parser and command the CLI wires; (exit code)."
    return import_command(import_parser(argparse.ArgumentParser(prog="dfw import")).parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def b16():
    "A random transformers CLIPVisionModel of ViT-B/16 shape (OpenAI's: QuickGELU), fp32, and two images."
    transformers = pytest.importorskip("transformers", reason="transformers is not importable (pip install -e '.[dev]')")
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                        patch_size=16, image_size=224, hidden_act="quick_gelu")
    return transformers.CLIPVisionModel(cfg).eval(), torch.randn(2, 3, 224, 224)


def pooled_diff(folder, ref_pooled, x):
    det = load_detector(folder)
    with torch.no_grad(): return det, (det.features(x[:, None])[:, 0] - ref_pooled).abs().max().item()


def test_vit_b16_hf_folder_matches_pooler_output(b16, tmp_path, capsys):
    model, x = b16
    model.save_pretrained(tmp_path / "hf")                       # model.safetensors + config.json, as on the Hub
    assert dfw_import("hf-clip", tmp_path / "hf", "--out", tmp_path / "ours") == 0
    assert "backbone ViT-B-16-quickgelu" in capsys.readouterr().out
    with torch.no_grad(): ref = model(pixel_values=x).pooler_output
    det, diff = pooled_diff(tmp_path / "ours", ref, x)
    print(f"ViT-B/16 plain: max |ours - pooler_output| = {diff:.2e}")
    assert diff < 1e-4
    assert det.config.backbone == "ViT-B-16-quickgelu" and det.config.pretrained is None


@pytest.fixture(scope="module")
def b16_lntuned(b16, tmp_path_factory):
    "The ViT-B/16 wrapped with PEFT LN-tuning, tuned LayerNorms moved off the base, plus a head, saved as the authors' Lightning checkpoint."
    pytest.importorskip("peft", reason="peft is not importable (pip install -e '.[dev]')")
    from peft import LNTuningConfig, get_peft_model
    model, x = b16
    wrapped = get_peft_model(model, LNTuningConfig(target_modules=LN_TARGETS)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if ".ln_tuning_layers." in n: p.add_(0.2 * torch.randn(p.shape, generator=g))
        pooled = wrapped(pixel_values=x).pooler_output
    head = torch.nn.Linear(768, 2)
    sd = {**{f"feature_extractor.{k}": v for k, v in wrapped.state_dict().items()},
          "model.linear.weight": head.weight.detach(), "model.linear.bias": head.bias.detach()}
    assert sum(".base_layer." in k for k in sd) == sum(".ln_tuning_layers.default." in k for k in sd) == 2 * 26
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {"head": "LinearNorm", "lr": 8e-5}, "epoch": 9}, path)
    with torch.no_grad(): logits = head(F.normalize(pooled, dim=-1))
    yield path, pooled, logits, x
    wrapped.unload()                                              # hand the plain model back to the other tests


def test_pickle_refused_without_allow_pickle(b16_lntuned, tmp_path, capsys):
    path = b16_lntuned[0]
    assert dfw_import("hf-clip", path, "--out", tmp_path / "ours") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--allow-pickle" in err
    assert not (tmp_path / "ours").exists()


def test_vit_b16_peft_lightning_ckpt_matches_the_tuned_model(b16_lntuned, tmp_path, capsys):
    path, pooled, logits, x = b16_lntuned
    assert dfw_import("lntuning", path, "--out", tmp_path / "ours", "--allow-pickle", "--act", "quick_gelu") == 0
    out = capsys.readouterr().out
    assert "52 tuned LayerNorm tensors taken" in out and "head LinearNorm (hyper_parameters)" in out
    det, diff = pooled_diff(tmp_path / "ours", pooled, x)
    with torch.no_grad():
        got = det(types.SimpleNamespace(frames=x[:, None], label=torch.zeros(2, dtype=torch.long))).extras["frame_logits"][:, 0]
    print(f"ViT-B/16 PEFT LN-tuned: features {diff:.2e}, logits {(got - logits).abs().max().item():.2e}")
    assert diff < 1e-4 and torch.allclose(got, logits, atol=1e-4)
    state = json.loads((tmp_path / "ours" / "state.json").read_text())
    assert state["imported"]["format"] == "lntuning" and state["weights"] == "all"


def test_taking_the_base_layer_would_fail_parity(b16_lntuned, tmp_path):
    "A converter that unwrapped PEFT's base_layer (the frozen originals) instead of the tuned copy misses the reference."
    path, pooled, _, x = b16_lntuned
    sd = torch.load(path, weights_only=True)["state_dict"]
    naive = {k.replace(".base_layer.", "."): v for k, v in sd.items() if ".ln_tuning_layers." not in k}
    torch.save(naive, tmp_path / "naive.pt")
    assert dfw_import("hf-clip", tmp_path / "naive.pt", "--out", tmp_path / "ours", "--allow-pickle", "--act", "quick_gelu") == 0
    _, diff = pooled_diff(tmp_path / "ours", pooled, x)
    print(f"ViT-B/16 PEFT, base_layer taken instead: features off by {diff:.3f}")
    assert diff > 1e-2, diff


def test_weights_only_failure_names_the_file_and_the_way_out(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": argparse.Namespace(head="linear")}, tmp_path / "weights.ckpt")
    assert dfw_import("fcg", tmp_path / "weights.ckpt", "--out", tmp_path / "ours", "--allow-pickle") == 2
    err = capsys.readouterr().err
    assert "weights.ckpt could not be read with torch.load(weights_only=True)" in err and "weights_only=False" in err
    assert not (tmp_path / "ours").exists()


def test_official_fcg_ckpt_converts_without_missing_or_unexpected_keys(tmp_path, capsys):
    from dfworkbench.methods.fcg import FCGConfig, FCGDetector
    torch.manual_seed(0)
    src = FCGDetector(FCGConfig.from_preset("tiny", backbone="micro-clip", pretrained=None, query_init="zeros", w_fcg=0)).eval()
    with torch.no_grad():
        for p in src.trainable_parameters(): p.add_(0.05 * torch.randn_like(p))
    torch.save({"state_dict": to_official_fcg(src), "hyper_parameters": {"num_frames": 4}}, tmp_path / "weights.ckpt")
    assert dfw_import("fcg", tmp_path / "weights.ckpt", "--out", tmp_path / "ours", "--allow-pickle", "--act", "gelu") == 0
    det = load_detector(tmp_path / "ours")                         # strict: a missing or unexpected key would fail here
    clips = types.SimpleNamespace(frames=torch.randn(2, 4, 3, 64, 64), label=torch.tensor([0, 1]))
    with torch.no_grad(): a, b = src(clips), det(clips)
    assert torch.equal(a.logits, b.logits)
    assert dfw_import("fcg", tmp_path / "weights.ckpt", "--out", tmp_path / "ours", "--allow-pickle", "--act", "gelu") == 2
    assert "not empty" in capsys.readouterr().err                  # never written over


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    assert dfw_import("timm", tmp_path / "x.safetensors", "--out", tmp_path / "o") == 2
    assert "unknown format 'timm'" in capsys.readouterr().err
    assert dfw_import("fcg", tmp_path / "missing.safetensors", "--out", tmp_path / "o") == 2
    assert "missing.safetensors does not exist" in capsys.readouterr().err
    from safetensors.torch import save_file
    save_file({"model.encoder.model.conv1.weight": torch.zeros(8, 3, 4, 4)}, str(tmp_path / "odd.safetensors"))
    assert dfw_import("fcg", tmp_path / "odd.safetensors", "--out", tmp_path / "o") == 2
    assert "odd.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
