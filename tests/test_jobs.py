"""`dfw train` and `dfw eval` (dfworkbench.jobs) through their parsers: runs written into new folders, reports whose scores
are `evaluate`'s, pages that work with the network off, one clear error (exit 2) per bad input, the LN-tuning lesson's
numbers reproduced exactly, and two processes training like one."""
import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dfworkbench.data import ClipCollate, FrameDataset
from dfworkbench.detect import resolve_checkpoint
from dfworkbench.detector import load_detector
from dfworkbench.jobs import (FaceClips, eval_command, eval_parser, fake_preprocessed, train_command, train_parser)
from dfworkbench.lab import load_suite
from dfworkbench.metrics import evaluate

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--preset", "tiny", "--variant", "ln", "--device", "cpu", "--n-boot", "0"]


def cli(parser, command, argv):
    "Exit code, stdout and stderr of `command` run on `argv` parsed by `parser`."
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = command(parser(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))
    return code, out.getvalue(), err.getvalue()


def only(folder: Path) -> Path:
    "The one run or report folder under `folder`."
    found = sorted({p.parent for n in ("result.json", "report.json") for p in folder.rglob(n)})
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    "`dfw train` on the lab, a few steps, then `dfw eval` of the run on the held-out celebdf suite."
    d = tmp_path_factory.mktemp("jobs")
    code, out, err = cli(train_parser, train_command, ["lntuning", "--data", "lab:ffpp@smoke", "--max-steps", "3", "--heldout", "none",
                                                       "--out", d / "runs", *FAST])
    assert code == 0, err
    run = Path(re.search(r"run folder: (.+)", out).group(1))
    code, out, err = cli(eval_parser, eval_command, [run, "--data", "lab:celebdf", "--per-clip", "2", "--n-boot", "100", "--device", "cpu"])
    assert code == 0, err
    rep = Path(re.search(r"report: (.+)/report.html", out).group(1))
    return run, rep, out


def test_train_writes_a_new_run(lab_run, tmp_path):
    run, _, _ = lab_run
    job = json.loads((run / "job.json").read_text())
    assert job["path"] == "fit_and_evaluate" and job["data"] == "lab:ffpp@smoke" and job["max_steps"] == 3
    assert set(json.loads((run / "result.json").read_text())["threshold"]) == {"frame", "clip", "video"}
    assert Path(job["best_checkpoint"]).is_dir() and (run / "tests.csv").is_file()
    assert [t["split"] for t in job["tests"]] == ["in-domain"]          # --heldout none
    assert not list(run.parent.glob(".*tmp*"))                          # atomic writes leave no temporary files


def test_eval_report_equals_evaluate(lab_run):
    run, rep, out = lab_run
    assert rep.parent.parent == run / "eval"
    js = json.loads((rep / "report.json").read_text())
    thr = json.loads((run / "result.json").read_text())["threshold"]
    assert js["threshold"] == thr and js["threshold_note"] == "accuracy at 0.5 and at the validation threshold"
    assert js["ci_unit"] == "video" and js["n_boot"] == 100 and "at the validation threshold" in out
    det = load_detector(resolve_checkpoint(run), "cpu")
    direct = evaluate(det, FrameDataset(load_suite("celebdf", "smoke", res=64), 2), threshold=thr,
                      collate_fn=ClipCollate(det.backbone.preprocess_cfg), device="cpu", n_boot=100)
    import pandas as pd
    csv = pd.read_csv(rep / "metrics.csv")
    assert len(csv) == len(direct.table)
    np.testing.assert_array_equal(csv.value.values, direct.table.value.values)   # the same scores, to the last bit
    np.testing.assert_array_equal(csv.lo.values, direct.table.lo.values)
    rows = {(m["level"], m["by"], m["group"], m["metric"]) for m in js["metrics"]}
    for level in ("frame", "clip", "video"):
        for metric in ("auroc", "ap", "eer", "acc", "acc_thr"): assert (level, "all", "all", metric) in rows
    assert any(r[1] == "family" for r in rows) and any(r[1] == "source" for r in rows)
    v = pd.read_csv(rep / "predictions_video.csv")
    np.testing.assert_allclose(v.p_fake.values, direct.predictions["video"].p_fake.values, rtol=0, atol=1e-12)


def test_eval_without_a_validation_threshold(lab_run, tmp_path):
    run, _, _ = lab_run
    lone = tmp_path / "lone"; shutil.copytree(resolve_checkpoint(run), lone)
    code, out, err = cli(eval_parser, eval_command, [lone, "--data", "lab:dfdc", "--per-clip", "1", "--n-boot", "0", "--device", "cpu",
                                                     "--out", tmp_path / "evals"])
    assert code == 0, err
    js = json.loads((only(tmp_path / "evals") / "report.json").read_text())
    assert js["threshold"] == {} and js["threshold_note"].startswith("accuracy at 0.5 only: no validation threshold stored")
    acc_thr = [m["value"] for m in js["metrics"] if m["metric"] == "acc_thr"]
    assert acc_thr and all(a is None for a in acc_thr)                  # empty, never silently 0.5
    assert "no validation threshold stored" in out


def test_report_page_has_no_network_reference(lab_run):
    _, rep, _ = lab_run
    page = (rep / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page)
    assert refs == ["plotly.min.js"], refs                               # plotly.js is the file beside the page, once
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)
    assert (rep / "plotly.min.js").stat().st_size > 1_000_000
    assert page.count("Plotly.newPlot") == 6                             # family and source curves at three levels


def test_report_page_offline_in_chromium(lab_run, offline_page):
    _, rep, _ = lab_run
    page = offline_page.page
    page.goto((rep / "report.html").as_uri()); page.wait_for_load_state("load"); page.wait_for_timeout(300)
    seen = page.evaluate("""() => ({plots: document.querySelectorAll('.js-plotly-plot').length,
        drawn: [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length,
        curves: document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length})""")
    assert (offline_page.blocked, offline_page.failed, offline_page.errors) == ([], [], [])
    assert seen["plots"] == 6 and seen["drawn"] == 6 and seen["curves"] >= 12, seen


def test_train_and_eval_a_preprocess_manifest(tmp_path):
    faces = fake_preprocessed(tmp_path / "faces", dict(train=8, val=4, test=6))
    code, out, err = cli(train_parser, train_command, ["lntuning", "--data", faces / "manifest.json", "--max-steps", "1",
                                                       "--out", tmp_path / "runs", *FAST])
    assert code == 0, err
    run = Path(re.search(r"run folder: (.+)", out).group(1))
    assert json.loads((run / "job.json").read_text())["data"] == str((faces / "manifest.json").resolve())
    code, out, err = cli(eval_parser, eval_command, [run, "--data", faces, "--n-boot", "0", "--device", "cpu"])
    assert code == 0, err
    rep = Path(re.search(r"report: (.+)/report.html", out).group(1))
    js = json.loads((rep / "report.json").read_text())
    assert js["split"] == "test" and js["n"]["video"] == 6
    det = load_detector(resolve_checkpoint(run), "cpu")
    thr = json.loads((run / "result.json").read_text())["threshold"]
    direct = evaluate(det, FrameDataset(FaceClips.from_manifest(faces).subset("test"), 4), threshold=thr,
                      collate_fn=ClipCollate(det.backbone.preprocess_cfg), device="cpu", n_boot=0)
    got = [m["value"] for m in js["metrics"]]
    want = [None if np.isnan(v) else v for v in direct.table.value.values]
    assert got == want


def test_train_and_eval_a_source_of_videos_and_stills(tmp_path, assets_dir):
    "A CSV of real face videos: cropped by the face pipeline, trained on; a second run reuses the crops; a folder of stills is scored."
    import cv2
    from dfworkbench.core import asset_path_or_skip
    asset_path_or_skip("face_landmarker")
    vids = [assets_dir / "videos" / n for n in ("talking_face.mp4", "pexels_face.mp4")]
    if not all(v.is_file() for v in vids): pytest.skip(f"the example face videos are absent from {assets_dir / 'videos'}")
    src = tmp_path / "src"; src.mkdir()
    rows = ["path,label,split"]
    for k, (label, split) in enumerate([(0, "train"), (1, "train"), (0, "train"), (1, "train"), (0, "val"), (1, "val"), (0, "test"), (1, "test")]):
        (src / f"v{k}.mp4").symlink_to(vids[k % 2])       # the same two faces under eight names: the path is tested, not the detector
        rows.append(f"v{k}.mp4,{label},{split}")
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    argv = ["lntuning", "--data", src / "list.csv", "--frames", "4", "--faces", tmp_path / "faces", "--max-steps", "1",
            "--heldout", "none", "--out", tmp_path / "runs", *FAST]
    code, out, err = cli(train_parser, train_command, argv)
    assert code == 0, err
    assert "8 cropped, 0 already there, 0 skipped" in out and "real: 4 ready, 0 skipped" in out, out
    run = Path(re.search(r"run folder: (.+)", out).group(1))
    job = json.loads((run / "job.json").read_text())
    assert (job["source"], job["source_layout"], job["frames"]) == (str((src / "list.csv").resolve()), "csv", 4)
    assert job["data"] == str((tmp_path / "faces" / "manifest.json").resolve())
    man = json.loads((tmp_path / "faces" / "manifest.json").read_text())
    assert len(man["videos"]) == 8 and man["job"]["preset"] == "lntuning" and man["job"]["n_frames"] == 4
    code, out, err = cli(train_parser, train_command, argv)                    # the crops are found, not made again
    assert code == 0 and "0 cropped, 8 already there" in out, err + out
    stills = tmp_path / "stills"
    for label, v in (("real", vids[0]), ("fake", vids[1])):
        (stills / label).mkdir(parents=True)
        cap = cv2.VideoCapture(str(v)); ok, frame = cap.read(); cap.release(); assert ok
        cv2.imwrite(str(stills / label / "a.png"), frame); cv2.imwrite(str(stills / label / "b.jpg"), frame)
    code, out, err = cli(eval_parser, eval_command, [run, "--data", stills, "--faces", tmp_path / "still-faces", "--n-boot", "0", "--device", "cpu"])
    assert code == 0 and "4 cropped" in out, err + out
    rep = Path(re.search(r"report: (.+)/report.html", out).group(1))
    js = json.loads((rep / "report.json").read_text())
    assert js["split"] == "all" and js["n"]["video"] == 4


@pytest.mark.parametrize("detector, data", [("fcg", "lab"), ("fcg", "faces"), ("infobottleneck", "lab")])
def test_train_fcg_and_the_information_bottleneck(detector, data, tmp_path):
    "FCG and the information bottleneck trained end to end by `dfw train` (two steps), FCG's prototypes built from DATA's real training clips."
    spec = "lab:ffpp@smoke" if data == "lab" else fake_preprocessed(tmp_path / "faces", dict(train=6, val=4, test=4), parts=True)
    code, out, err = cli(train_parser, train_command, [detector, "--data", spec, "--max-steps", "2", "--heldout", "none", "--device", "cpu",
                                                       "--n-boot", "0", "--out", tmp_path / "runs"])
    assert code == 0, err
    run = Path(re.search(r"run folder: (.+)", out).group(1))
    job = json.loads((run / "job.json").read_text())
    assert job["path"] == "fit_and_evaluate" and job["best_checkpoint"] and "in-domain" in out
    det = load_detector(resolve_checkpoint(run), "cpu")
    assert type(det).__name__ == job["detector_class"]
    if detector == "fcg":                                              # the prototypes travel with the checkpoint's weights
        assert det.has_prototypes and det.prototypes.abs().sum() > 0


@pytest.mark.parametrize("argv, message", [
    (["xception", "--data", "lab:ffpp"], "unknown detector 'xception': choose one of lntuning, fcg, infobottleneck"),
    (["lntuning", "--data", "lab:ffpp", "--preset", "huge"], "LNTuningConfig has no preset 'huge': choose one of"),
    (["fcg", "--data", "lab:ffpp", "--set", "speed=2"], "FCGConfig has no field(s) ['speed']"),
    (["fcg", "--data", "lab:ffpp", "--variant", "ln"], "FCGDetector has no variants; set its config fields with --set"),
    (["lntuning", "--data", "ffpp"], "DATA 'ffpp' is neither a lab suite nor an existing file or folder. Accepted forms: lab:SUITE[@SIZE]"),
    (["lntuning", "--data", "lab:ffhq"], "the lab has no suite 'ffhq'"),
    (["lntuning", "--data", "lab:ffpp@huge"], "unknown lab size 'huge'"),
    (["lntuning", "--data", "lab:celebdf"], "lab suite 'celebdf' has no train / val split"),
    (["lntuning", "--data", "TMP"], "has no labels: a folder needs real/ and fake/ sub-folders"),
])
def test_bad_train_input_is_one_clear_error(argv, message, tmp_path):
    argv = [str(tmp_path) if a == "TMP" else a for a in argv] + ["--out", tmp_path / "runs"]
    code, out, err = cli(train_parser, train_command, argv)
    assert code == 2 and message in err and err.startswith("dfw train: error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()                             # refused before any run folder was made


def test_bad_eval_input_is_one_clear_error(lab_run, tmp_path):
    run, _, _ = lab_run
    for argv, message in [([tmp_path / "nowhere", "--data", "lab:celebdf"], "no such checkpoint folder"),
                          ([tmp_path, "--data", "lab:celebdf"], "is neither a checkpoint folder"),
                          ([run, "--data", "lab:nowhere"], "the lab has no suite 'nowhere'"),
                          ([run, "--data", "lab:dfdc", "--split", "val"], "has no split 'val'")]:
        code, out, err = cli(eval_parser, eval_command, argv)
        assert code == 2 and message in err and err.startswith("dfw eval: error:"), (argv, err)


def test_reproduces_the_lntuning_lesson_exactly(tmp_path, monkeypatch):
    """`dfw train lntuning --preset tiny --variant ln --data lab:ffpp --size smoke` is the lesson's run_lab_variant: equal numbers.
    One epoch instead of the lesson's six, for time (both sides read LAB_SIZES); at the lesson's setting the same code gives the
    record 0.5466 (seed 0, measured when this test was written)."""
    from dfworkbench.methods import lntuning
    monkeypatch.setitem(lntuning.LAB_SIZES, "smoke", {**lntuning.LAB_SIZES["smoke"], "epochs": 1, "n_boot": 50})
    code, out, err = cli(train_parser, train_command, ["lntuning", "--preset", "tiny", "--variant", "ln", "--data", "lab:ffpp",
                                                       "--size", "smoke", "--seed", "0", "--device", "cpu", "--out", tmp_path / "cli"])
    assert code == 0, err
    run = Path(re.search(r"run folder: (.+)", out).group(1))
    job = json.loads((run / "job.json").read_text())
    assert job["path"] == "lesson: run_lab_variant('LN-tuning') of 10_lntuning" and run.parent.name == "ln-microclip"
    ref = lntuning.run_lab_variant("LN-tuning", "lab", lntuning.lab_ln_splits("smoke"), "smoke", seed=0, device="cpu", root=tmp_path / "ref")
    got = {t["split"]: t["auroc"] for t in job["tests"]}
    want = ref.table().auroc.to_dict()
    assert got == want, (got, want)                                      # exact, every split
    assert job["best_epoch"] == ref.best_epoch and job["threshold"] == ref.threshold
    a, b = load_file(str(resolve_checkpoint(run) / "model.safetensors")), load_file(str(resolve_checkpoint(ref.run_dir) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    """torchrun (what `accelerate launch --multi_gpu --num_processes 2` runs; see test_learner_distributed.py) with two gloo CPU
    processes gives the weights and validation AUROC of one process on the same global batches."""
    faces = fake_preprocessed(tmp_path / "faces", dict(train=16, val=8, test=2))       # 64 training frames: 2 global batches of 32
    args = ["train", "lntuning", "--data", faces, "--epochs", "1", "--heldout", "none", *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "dfworkbench.jobs", *map(str, args), "--out", str(tmp_path / "two")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = only(tmp_path / "two")                                        # both processes wrote into one run folder
    code, out, err = cli(train_parser, train_command, [*args[1:], "--out", tmp_path / "one"])
    assert code == 0, err
    one = only(tmp_path / "one")
    j2, j1 = (json.loads((d / "job.json").read_text()) for d in (two, one))
    assert j2["processes"] == 2 and j1["processes"] == 1
    r2, r1 = (json.loads((d / "result.json").read_text()) for d in (two, one))
    assert r2["best_step"] == r1["best_step"] == 2
    assert abs(r2["best"] - r1["best"]) <= 1e-6, (r2["best"], r1["best"])   # validation video AUROC
    w2, w1 = (load_file(str(resolve_checkpoint(d) / "model.safetensors")) for d in (two, one))
    assert w2.keys() == w1.keys()
    diff = max(float((w2[k] - w1[k]).abs().max()) for k in w1)
    assert diff <= 1e-6, diff
    print(f"two processes vs one: max |weight difference| {diff:.3g}, validation AUROC {r2['best']} vs {r1['best']}")
