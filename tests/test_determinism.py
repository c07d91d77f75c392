"""Same seed, same machine, same result; and what an evaluation seed means."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from lit_itpo.cli import lightning_main
from lit_itpo.evaluation import run_episodes
from tests.conftest import cli_args

SMALL = ("--model.init_args.hidden", "[16, 16]")
EVAL = (
    "--trainer.callbacks.init_args.num_episodes", "2",
    "--trainer.callbacks.init_args.max_episode_steps", "4",
)  # fmt: skip


def test_eval_seed_is_gymnasiums_episode_after_the_seeded_reset():
    """Env seed ``s`` starts where gymnasium's ``reset(seed=s); reset()`` does (TorchRL's
    ``set_seed`` takes the seeded reset), as lit_itpo.evaluation documents."""
    spec = gym.make("Pendulum-v1").spec.to_json()
    first = []

    def act(obs):
        if not first:
            first.append(obs.clone())
        return torch.zeros(obs.shape[0], 1)

    run_episodes(act, spec, [7, 8], max_episode_steps=2)
    for i, s in enumerate((7, 8)):
        env = gym.make("Pendulum-v1")
        seeded, _ = env.reset(seed=s)
        second, _ = env.reset()
        assert np.allclose(first[0][i].numpy(), second, atol=1e-6)
        assert not np.allclose(first[0][i].numpy(), seeded, atol=1e-3)


def _weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


def test_same_seed_same_weights_and_itpo_returns(tiny_root, tmp_path):
    root, _ = tiny_root
    runs = [
        lightning_main(
            cli_args(
                "fit", "conf/embedded/rebrac.yaml", root, tmp_path / f"pol{i}", 12, *SMALL, *EVAL
            )
        )
        for i in range(2)
    ]
    a, b = (_weights(c) for c in runs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    wm = lightning_main(
        cli_args(
            "fit",
            "conf/embedded/world_model.yaml",
            root,
            tmp_path / "wm",
            6,
            *SMALL,
            "--model.init_args.reward_hidden",
            "[16, 16]",
            "--model.init_args.diffusion_steps",
            "2",
            "--model.init_args.sample_steps",
            "2",
        )
    )
    wm_ckpt = wm.trainer.checkpoint_callback.last_model_path
    pol_ckpt = runs[0].trainer.checkpoint_callback.last_model_path
    metrics = []
    for i in range(2):
        cli = lightning_main(
            cli_args(
                "validate",
                "conf/embedded/itpo.yaml",
                root,
                tmp_path / f"itpo{i}",
                1,
                *EVAL,
                "--trainer.callbacks.init_args.world_model_ckpt",
                wm_ckpt,
                "--trainer.callbacks.init_args.itpo.particles",
                "4",
                "--trainer.callbacks.init_args.itpo.horizon",
                "2",
                "--trainer.callbacks.init_args.itpo.lr",
                "0.05",
                "--ckpt_path",
                pol_ckpt,
            )
        )
        m = cli.trainer.callback_metrics
        metrics.append({k: float(v) for k, v in m.items() if not k.startswith("time/")})
    assert "itpo/diffusion/return_mean" in metrics[0]
    # exact, NaN included (a gain's interval from fewer than 5 paired episodes is NaN)
    assert metrics[0].keys() == metrics[1].keys()
    for k, v in metrics[0].items():
        assert v == metrics[1][k] or (math.isnan(v) and math.isnan(metrics[1][k])), k
