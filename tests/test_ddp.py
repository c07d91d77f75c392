"""Multi-process training (Lightning DDP on CPU with gloo, through the real CLI in a subprocess,
since ``ddp`` relaunches the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DID, REPO

SMALL = {
    "world_model": ["--model.init_args.hidden", "[32, 32]", "--model.init_args.reward_hidden",
                    "[16]", "--model.init_args.diffusion_steps", "4",
                    "--model.init_args.sample_steps", "2"],
    "meanflow": ["--model.init_args.eta", "0", "--model.init_args.hidden", "[32, 32]",
                 "--model.init_args.reward_hidden", "[16]"],
    "rebrac": ["--model.init_args.hidden", "[32, 32]",
               "--trainer.callbacks.init_args.num_episodes", "3",
               "--trainer.callbacks.init_args.max_episode_steps", "5"],
}  # fmt: skip


@pytest.mark.parametrize(
    "stage, strategy",
    [
        ("world_model", "ddp"),
        # MeanFlow's target comes from torch.func.jvp; the prediction is a plain forward, so the
        # loss's backward runs through DDP's hooks (METHOD.md's trap: a JVP that bypassed DDP
        # would let the replicas drift apart).
        ("meanflow", "ddp"),
        # ReBRAC's critic and actor steps each leave the other's parameters without gradients.
        ("rebrac", "ddp_find_unused_parameters_true"),
    ],
)
def test_two_processes_keep_replicas_in_sync(stage, strategy, tiny_root, tmp_path):
    """Two ranks draw different batches and must hold identical weights after training."""
    root, _ = tiny_root
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = [
        sys.executable, "-m", "lit_itpo", "fit",
        "--config", str(REPO / f"conf/embedded/{stage}.yaml"),
        "--data.dataset_id", DID, "--data.data_dir", str(root), "--data.batch_size", "64",
        *SMALL[stage],
        "--trainer.max_steps", "6", "--trainer.val_check_interval", "6",
        "--trainer.strategy", strategy, "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
        str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=tests.ddp_helpers.WeightSyncProbe",
    ]  # fmt: skip
    env = dict(os.environ, LIT_ITPO_PROBE_DIR=str(probe), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["first_batch"] != r1["first_batch"]  # the ranks trained on different data
    assert r0["sums"].keys() == r1["sums"].keys() and len(r0["sums"]) > 0
    for name, value in r0["sums"].items():
        assert value == r1["sums"][name], name
