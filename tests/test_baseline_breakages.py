"""The regression baseline must catch a broken detector: three deliberate breakages of the LN-tuning lesson's
experiment each make the baseline check fail, and the failure names the record.

Each breakage runs the lesson's own code (`lab_ln_splits`, `run_lab_variant`, `lab_records`, smoke preset, seed 0)
with one thing broken, and compares the records with the shipped baseline's entries for them, as `dfw lessons
--baseline` does. The unbroken run is the lesson itself, checked against the same baseline by tests/test_lessons.py.
"""
import pytest
import torch

from dfworkbench.backbone import layer_norms
from dfworkbench.core import data_dir
from dfworkbench.detector import DetectorOutput
from dfworkbench.lessons import compare_records, format_checks, load_baseline
from dfworkbench.methods.lntuning import LNTuningConfig, LNTuningDetector, lab_ln_splits, lab_records, run_lab_variant

BASELINE = data_dir() / "regression" / "baseline.json"


class AlwaysHalf(LNTuningDetector):
    "Answers p(fake) = 0.5 for every clip (zero logits; the graph is kept, so training runs and changes nothing)."
    def forward(self, batch):
        out = super().forward(batch)
        return DetectorOutput(0 * out.logits, {**out.extras, "frame_logits": 0 * out.extras["frame_logits"]})


class HeadLrZero(LNTuningDetector):
    "The head's parameters sit in an optimiser group whose learning rate is scaled by 0."
    def param_groups(self, cfg):
        head = {id(p) for p in self.head.parameters()}
        groups = []
        for g in super().param_groups(cfg):
            mine, rest = [p for p in g["params"] if id(p) in head], [p for p in g["params"] if id(p) not in head]
            if rest: groups.append({**g, "params": rest})
            if mine: groups.append({**g, "name": g["name"] + "_head", "params": mine, "lr_scale": 0.0})
        return groups


class LayerNormsNoGrad(LNTuningDetector):
    "Every LayerNorm parameter's gradient is replaced by zeros before the optimiser sees it."
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        for m in layer_norms(self.backbone.visual).values():
            for p in m.parameters(): p.register_hook(torch.zeros_like)


BREAKAGES = {  # name -> (broken class, the record whose baseline entry must fail)
    "detector answers 0.5": (AlwaysHalf, "lntuning.ln.microclip.in_domain_video_auroc"),
    "head learning rate 0": (HeadLrZero, "lntuning.ln.microclip.head_moved"),
    "LayerNorms get no gradient": (LayerNormsNoGrad, "lntuning.ln.microclip.ln_moved"),
}


@pytest.fixture(scope="module")
def splits():
    return lab_ln_splits("smoke")


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_breakage_fails_the_baseline_naming_the_record(breakage, splits, tmp_path):
    cls, must_fail = BREAKAGES[breakage]
    base = load_baseline(BASELINE)["records"]["10_lntuning"]
    cfg = LNTuningConfig.from_preset("tiny", pretrained="lab", variant="ln", normalize=False, slerp=False)
    torch.manual_seed(0)
    res = run_lab_variant("LN-tuning", "lab", splits, "smoke", seed=0, device="cpu", detector=cls(cfg), root=tmp_path)
    recs = lab_records("LN-tuning", "lab", res)
    rows = compare_records({"10_lntuning": recs}, {"records": {"10_lntuning": {k: base[k] for k in recs if k in base}}})
    failed = {r.name for r in rows if not r.ok}
    assert must_fail in failed, f"{breakage}: the baseline did not catch it\n" + format_checks(rows)
