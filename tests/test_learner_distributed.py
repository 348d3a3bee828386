"""Two CPU processes (gloo, through Accelerate) train like one process on the same global batches.

The processes are started by torchrun (`python -m torch.distributed.run`); inside them the Learner's
`Accelerator` finds the torchrun environment and becomes MULTI_CPU with the gloo backend. (In accelerate 1.x
`accelerate launch --cpu --num_processes 2` starts a single process unless MPI is configured;
`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs is equivalent to torchrun.)
This file is also the script the two processes run: `python -m torch.distributed.run ... this_file OUT`.
"""
import os, socket, subprocess, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STEPS, BATCH = 4, 8  # 26 clips: global batches of 8, 8, 8 and 2 (4, 4, 4 and 1 per process)


def train(out: Path):
    "Seeded toy training; each process saves its final weights and its step count."
    from dfworkbench.learner import Learner, LearnerConfig, ToyDetector, toy_clips
    torch.manual_seed(0)
    det = ToyDetector(hidden=8)
    cfg = LearnerConfig(epochs=1, batch_size=BATCH, lr=0.1, grad_clip=0.5, weight_decay=0.01,
                        shuffle=True, seed=3, progress=False, device="cpu", monitor="valid_auroc")
    learn = Learner(det, toy_clips(n_videos=13, clips_per_video=2, seed=1), toy_clips(n_videos=6, seed=2), cfg).fit()
    rank = learn.accelerator.process_index
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in learn.detector.state_dict().items()}
    save_file(sd, str(out/f"rank{rank}.safetensors"),
              metadata={"world": str(learn.accelerator.num_processes), "steps": str(learn.step),
                        "valid_auroc": repr(learn.history[-1]["valid_auroc"])})
    return learn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), __file__, str(tmp_path/"two")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one = train(tmp_path/"one")
    w0, w1, w = (load_file(str(p)) for p in (tmp_path/"two"/"rank0.safetensors", tmp_path/"two"/"rank1.safetensors",
                                                tmp_path/"one"/"rank0.safetensors"))
    from safetensors import safe_open
    with safe_open(str(tmp_path/"two"/"rank0.safetensors"), "pt") as f: meta = f.metadata()
    assert meta["world"] == "2" and meta["steps"] == str(STEPS) and one.step == STEPS
    for k in w:
        assert torch.equal(w0[k], w1[k]), f"{k}: the two processes disagree"
        torch.testing.assert_close(w0[k], w[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: two processes differ from one: {m}")
    torch.manual_seed(0); from dfworkbench.learner import ToyDetector
    init = ToyDetector(hidden=8).state_dict()
    assert not torch.equal(init["head.1.weight"], w["head.1.weight"])      # the head trained
    assert torch.equal(init["backbone.0.weight"], w0["backbone.0.weight"])  # the frozen part did not move
    assert float(meta["valid_auroc"]) == one.history[-1]["valid_auroc"]     # validation gathered from both processes


if __name__ == "__main__":
    train(Path(sys.argv[1]))
