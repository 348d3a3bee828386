"""The learner outside its notebook: exact resume, checkpoint layout, selection, and the clear errors."""
import json, warnings

import pytest
import torch

from dfworkbench.core import DFWError
from dfworkbench.learner import (Callback, CancelFitException, Learner, LearnerConfig, ToyDetector, find_checkpoint,
                                 read_checkpoint, toy_clips)
from dfworkbench.metrics import SingleClassWarning


class Crash(Callback):
    def __init__(self, at): self.at = at
    def after_step(self, learn):
        if learn.step == self.at: raise RuntimeError(f"simulated crash after step {self.at}")


def _run(run_dir, callbacks=(), resume=False, **kw):
    torch.manual_seed(0)
    det = ToyDetector(hidden=6, dropout=0.25)
    cfg = LearnerConfig(**{**dict(epochs=3, batch_size=6, lr=0.05, seed=7, run_dir=str(run_dir), checkpoint_every=2,
                                  progress=False, device="cpu", warmup_steps=2), **kw})
    return Learner(det, toy_clips(20, seed=1), toy_clips(8, seed=2), cfg, callbacks).fit(resume=resume)


def _same_weights(a, b):
    sa, sb = a.detector.state_dict(), b.detector.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kw", [{}, {"optimizer": "sgd", "save_weights": "trainable", "weight_decay": 0.1}])
def test_resume_mid_epoch_reaches_the_same_weights(tmp_path, kw):
    full = _run(tmp_path/"full", **kw)
    with pytest.raises(RuntimeError, match="simulated crash"): _run(tmp_path/"cut", [Crash(9)], **kw)
    assert json.loads((tmp_path/"cut"/"last.json").read_text())["step"] == 8  # 7 steps per epoch: step 8 is mid-epoch 2
    res = _run(tmp_path/"cut", resume=True, **kw)
    assert res.step == full.step == 21
    _same_weights(full, res)
    assert [r["valid_loss"] for r in res.history] == [r["valid_loss"] for r in full.history]
    assert [r["step"] for r in res.step_log] == list(range(1, 22))


def test_resume_after_a_finished_run_does_nothing_more(tmp_path):
    full = _run(tmp_path/"r")
    again = _run(tmp_path/"r", resume=True)
    assert again.step == full.step and len(again.history) == len(full.history)
    _same_weights(full, again)


def test_max_steps_stops_mid_epoch_and_validates(tmp_path):
    learn = _run(tmp_path/"m", max_steps=5)
    assert learn.step == 5 and len(learn.history) == 1 and learn.history[-1]["step"] == 5
    assert "valid_video_auroc" in learn.history[-1]


def test_checkpoint_folder_holds_no_pickle(tmp_path):
    _run(tmp_path/"c")
    ck = find_checkpoint(tmp_path/"c")
    assert sorted(p.name for p in ck.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    for p in ck.iterdir(): assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    state = json.loads((ck/"state.json").read_text())
    assert state["step"] == 21 and state["detector_class"] == "ToyDetector" and state["config"]["lr"] == 0.05
    assert find_checkpoint(tmp_path/"c", "best") is not None
    assert len(list((tmp_path/"c"/"checkpoints").iterdir())) <= 2


def test_best_checkpoint_is_the_best_validation_epoch(tmp_path):
    learn = _run(tmp_path/"b", monitor="valid_loss", epochs=4)
    losses = [r["valid_loss"] for r in learn.history]
    assert learn.best == min(losses) and learn.best_epoch == losses.index(min(losses))
    state = learn.load_best()
    assert state["step"] == learn.history[learn.best_epoch]["step"]


def test_only_trainable_parameters_move(tmp_path):
    torch.manual_seed(0); det = ToyDetector()
    before = {k: v.clone() for k, v in det.state_dict().items()}
    Learner(det, toy_clips(12), None, LearnerConfig(epochs=2, batch_size=4, lr=0.1, progress=False, device="cpu", monitor="valid_loss")).fit()
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone"))
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])


def test_cancel_fit_still_runs_after_fit():
    seen = []
    class Stop(Callback):
        def after_step(self, learn): raise CancelFitException()
        def after_cancel_fit(self, learn): seen.append("cancel")
        def after_fit(self, learn): seen.append("after")
    learn = Learner(ToyDetector(), toy_clips(12), None, LearnerConfig(progress=False, device="cpu"), [Stop()]).fit()
    assert learn.step == 1 and seen == ["cancel", "after"]


def test_errors_are_clear(tmp_path):
    bad = toy_clips(8); bad.labels = bad.labels * 3
    with pytest.raises(DFWError, match=r"labels must be 0 \(real\) or 1 \(fake\)"):
        Learner(ToyDetector(), bad, None, LearnerConfig(progress=False, device="cpu")).fit()
    badv = toy_clips(8); badv.labels = badv.labels - 1
    with pytest.raises(DFWError, match="valid batch .* labels"):
        Learner(ToyDetector(), toy_clips(8), badv, LearnerConfig(progress=False, device="cpu")).fit()
    with pytest.raises(DFWError, match="the train split is empty"): Learner(ToyDetector(), toy_clips(0), None)
    with pytest.raises(DFWError, match="the valid split is empty"): Learner(ToyDetector(), toy_clips(8), toy_clips(0))
    with pytest.raises(DFWError, match="early stopping .* needs a validation split"):
        Learner(ToyDetector(), toy_clips(8), None, LearnerConfig(patience=2))
    _run(tmp_path/"a")
    with pytest.raises(DFWError, match="another architecture"):
        read_checkpoint(find_checkpoint(tmp_path/"a"), ToyDetector(hidden=5))
    other = Learner(ToyDetector(hidden=5), toy_clips(8), None, LearnerConfig(run_dir=str(tmp_path/"a"), progress=False, device="cpu"))
    with pytest.raises(DFWError, match="another architecture"): other.fit(resume=True)
    with pytest.raises(DFWError, match="already holds a run"): _run(tmp_path/"a")
    with pytest.raises(DFWError, match="not a validation metric"): _run(tmp_path/"x", monitor="valid_f1")


def test_single_class_validation_warns_and_never_selects(tmp_path):
    fakes = toy_clips(8); fakes.labels = torch.ones_like(fakes.labels)
    with pytest.warns(SingleClassWarning, match="0 real"):
        learn = Learner(ToyDetector(), toy_clips(8), fakes,
                        LearnerConfig(epochs=2, batch_size=4, progress=False, device="cpu", run_dir=str(tmp_path/"s"))).fit()
    assert learn.best is None and find_checkpoint(tmp_path/"s", "best") is None
    assert all(r["valid_video_auroc"] != r["valid_video_auroc"] for r in learn.history)  # NaN, not 0.5


def test_a_split_too_small_for_one_batch_is_an_error():
    with pytest.raises(DFWError, match="makes no batch of 16"):
        Learner(ToyDetector(), toy_clips(4), None, LearnerConfig(batch_size=16, drop_last=True))
    with pytest.raises(DFWError, match="max_steps must be an integer >= 1"): LearnerConfig(max_steps=0)


def _lab_like_records(n_videos=10, clips=2, T=4, size=20, seed=0):
    "ClipRecords of random uint8 frames (fakes brighter), in the shape 02_data expects."
    import numpy as np
    from dfworkbench.data import ClipRecord
    r = np.random.default_rng(seed); recs = []
    for v in range(n_videos):
        y = v % 2
        for c in range(clips):
            f = np.clip(r.normal(110 + 25 * y, 40, (T, size, size, 3)), 0, 255).astype(np.uint8)
            recs.append(ClipRecord(f, y, f"vid{v:03d}", meta=dict(family="swap" if y else "real", source="lab-test")))
    return recs


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_with_02_data_augmentations(tmp_path, workers):
    from dfworkbench.core import PreprocessCfg
    from dfworkbench.data import ClipAugment, ClipCollate, FrameDataset
    pp = PreprocessCfg(size=16)

    def run(d, cbs=(), resume=False):
        torch.manual_seed(0)
        train = FrameDataset(_lab_like_records(seed=1), per_clip=2, augment=ClipAugment(), train=True, seed=5)
        valid = FrameDataset(_lab_like_records(6, seed=2), per_clip=1)
        cfg = LearnerConfig(epochs=2, batch_size=8, lr=0.05, seed=1, run_dir=str(d), checkpoint_every=3, progress=False,
                            device="cpu", num_workers=workers)
        return Learner(ToyDetector(dropout=0.1), train, valid, cfg, cbs, collate_fn=ClipCollate(pp)).fit(resume=resume)

    full = run(tmp_path/"full")
    with pytest.raises(RuntimeError): run(tmp_path/"cut", [Crash(7)])
    res = run(tmp_path/"cut", resume=True)
    assert full.step == res.step == 10
    _same_weights(full, res)
    assert full.history[-1]["valid_loss"] == res.history[-1]["valid_loss"]
    assert full.train_data.epoch == res.train_data.epoch == 1  # the learner moved the augmentations to epoch 1
