"""Every stage's fit and one ITPO validation on CUDA (``--trainer.accelerator gpu``): data,
normalisers and world-model noise on the device, evaluation envs on the CPU. Marked ``gpu``:
deselected by default, run with ``pytest -m gpu`` on a machine with a CUDA device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_itpo.cli import lightning_main
from tests.conftest import cli_args

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
SMALL = ["--model.init_args.hidden", "[32, 32]"]
EVAL = [
    "--trainer.callbacks.init_args.num_episodes",
    "2",
    "--trainer.callbacks.init_args.max_episode_steps",
    "10",
]
WM = ["--model.init_args.reward_hidden", "[32]", "--model.init_args.diffusion_steps", "4",
      "--model.init_args.sample_steps", "2"]  # fmt: skip


def _fit(config: str, root, out: Path, *extra: str):
    cli = lightning_main(cli_args("fit", config, root, out, 20, *GPU, *SMALL, *extra))
    assert cli.trainer.global_step == 20
    assert all(p.device.type == "cuda" for p in cli.model.parameters())
    assert all(b.device.type == "cuda" for b in cli.model.buffers())
    return cli, next(Path(cli.trainer.logger.log_dir).glob("checkpoints/*.ckpt"))


@pytest.fixture(scope="module")
def gpu_upstream(tiny_root, tmp_path_factory):
    root, _ = tiny_root
    out = tmp_path_factory.mktemp("gpu")
    _, wm = _fit("conf/embedded/world_model.yaml", root, out / "wm", *WM)
    _, pol = _fit("conf/embedded/rebrac.yaml", root, out / "pol", *EVAL)
    return root, out, wm, pol


@pytest.mark.parametrize("algo", ["td3bc", "iql", "bc"])
def test_policy_stages_fit_on_cuda(algo, tiny_root, tmp_path):
    cli, _ = _fit(f"conf/embedded/{algo}.yaml", tiny_root[0], tmp_path, *EVAL)
    assert torch.isfinite(cli.trainer.callback_metrics["eval/return_mean"])


def test_world_model_rebrac_meanflow_and_itpo_on_cuda(gpu_upstream):
    root, out, wm, pol = gpu_upstream
    _fit(
        "conf/embedded/meanflow.yaml",
        root,
        out / "mf",
        "--model.init_args.world_model_ckpt",
        str(wm),
        "--model.init_args.policy_ckpt",
        str(pol),
        "--model.init_args.sample_steps",
        "1",
    )
    args = cli_args(
        "validate",
        "conf/embedded/itpo.yaml",
        root,
        out / "itpo",
        20,
        *GPU,
        *SMALL,
        *EVAL,
        "--trainer.callbacks.init_args.world_model_ckpt",
        str(wm),
        "--trainer.callbacks.init_args.itpo.particles",
        "4",
        "--ckpt_path",
        str(pol),
    )
    m = lightning_main(args).trainer.callback_metrics
    assert torch.isfinite(m["itpo/diffusion/normalized_score"])
    assert torch.isfinite(m["time/itpo_diffusion_ms_per_step"])
