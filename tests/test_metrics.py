"""Metrics outside their notebook: scikit-learn parity, hand-computed cases, the one-class rule, evaluate()."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dfworkbench.core import DFWError
from dfworkbench.learner import ToyDetector, toy_clips
from dfworkbench.metrics import (SingleClassWarning, accuracy, auroc, average_precision, binary_metrics, bootstrap_ci,
                                 bootstrap_loop, choose_threshold, eer, evaluate, video_table)


@pytest.mark.parametrize("seed", range(5))
def test_sklearn_parity_on_random_data(seed):
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, 500); p = np.round(r.random(500) + 0.3 * y, 2)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    lo, hi = bootstrap_ci(y, p, n_boot=200, seed=seed)
    assert (lo, hi) == pytest.approx(bootstrap_loop(y, p, n_boot=200, seed=seed), abs=1e-12)


def test_hand_computed_cases():
    y, p = [0, 0, 0, 0, 1, 1, 1, 1], [.1, .2, .3, .8, .4, .5, .6, .9]
    assert eer(y, p) == pytest.approx(0.25) and choose_threshold(y, p) == 0.5
    assert accuracy(y, p) == 0.75 and accuracy(y, p, 0.4) == 7 / 8
    assert eer([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert eer([0, 0, 0, 1], [0.1, 0.2, 0.7, 0.6]) == pytest.approx(1 / 3)
    assert auroc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == 0.75


def test_one_class_is_nan_with_a_warning_never_half():
    with pytest.warns(SingleClassWarning, match="0 real and 3 fake"):
        m = binary_metrics([1, 1, 1], [0.2, 0.5, 0.9], name="suite X")
    assert np.isnan([m["auroc"], m["ap"], m["eer"]]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        assert np.isnan(bootstrap_ci([0, 0], [0.1, 0.2], n_boot=20)).all()


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DFWError, match=r"labels must be 0 \(real\) or 1 \(fake\)"): auroc([0, 2], [0.1, 0.2])
    with pytest.raises(DFWError, match="NaN or infinite"): auroc([0, 1], [0.1, float("nan")])
    import pandas as pd
    clips = pd.DataFrame(dict(video_id=["a", "a"], label=[0, 1], p_fake=[.1, .9], family=["real", "x"], source=["s", "s"]))
    with pytest.raises(DFWError, match="both real and fake"): video_table(clips)


def test_evaluate_levels_and_threshold_transfer():
    torch.manual_seed(0)
    det = ToyDetector()
    valid, test = toy_clips(12, seed=1, signal=1.0), toy_clips(16, seed=2, signal=1.0, families=("a", "b"), source="S")
    rv = evaluate(det, valid, n_boot=50)
    rt = evaluate(det, test, threshold=rv.thresholds, n_boot=50)
    assert set(rt.table.level) == {"frame", "clip", "video"}
    v = rt.predictions["video"]
    assert len(v) == 16 and rt.get("auroc", "video") == pytest.approx(roc_auc_score(v.label, v.p_fake))
    assert rt.get("acc_thr", "video") == pytest.approx(accuracy(v.label, v.p_fake, rv.thresholds["video"]))
    assert set(rt.table.query("by == 'family'").group) == {"a", "b"}
    assert set(rt.table.query("by == 'source'").group) == {"S"}
