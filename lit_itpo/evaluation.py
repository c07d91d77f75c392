"""Evaluation episodes through TorchRL: several episodes stepped together, fixed seeds.

Each episode ``i`` runs in its own ``GymEnv`` seeded with ``seeds[i]``; the envs are stepped
together in a ``SerialEnv`` with ``env.rollout(break_when_any_done=False,
break_when_all_done=True)`` (TorchRL's partial steps: a finished episode is not stepped again).
``DoubleToFloat`` sits inside each sub-env: outside the ``SerialEnv`` TorchRL 0.14.1's partial
steps fail on the float64 -> float32 write.

Seeds: the episode of seed ``s`` starts from the state gymnasium gives on the *second* reset,
``env.reset(seed=s); env.reset()``, not from ``env.reset(seed=s)`` itself: TorchRL's
``set_seed(s)`` seeds the env with a reset of its own, and the rollout then resets again. Kept
so because every committed result used these episodes; tests/test_determinism.py checks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Unbounded
from torchrl.envs import DoubleToFloat, GymEnv, SerialEnv, StepCounter, TransformedEnv
from torchrl.envs.libs.gym import default_info_dict_reader

from lit_itpo.envs import is_maze, register_env_packages
from lit_itpo.errors import EnvSpecError


def _spec_dict(env_spec: str) -> dict:
    try:
        return json.loads(env_spec)
    except (TypeError, json.JSONDecodeError) as exc:
        raise EnvSpecError(
            f"Environment spec {env_spec!r:.80} is not gymnasium EnvSpec JSON; the dataset needs "
            "an env_spec (or eval_env_spec) to be evaluated."
        ) from exc


class _SuccessReader(default_info_dict_reader):
    """Reads the maze envs' ``info["success"]`` (a Python bool, which TorchRL's default reader
    cannot take) into ``("next", "success")``."""

    def __init__(self):
        super().__init__(["success"], spec={"success": Unbounded((), dtype=torch.bool)})

    def __call__(self, info_dict, tensordict):
        return super().__call__({k: np.asarray(v) for k, v in info_dict.items()}, tensordict)


def make_eval_env(env_spec: str, seed: int, max_episode_steps: int | None = None):
    """One TorchRL env (float32 observations) from a dataset's env spec JSON, seeded; maze envs
    (PointMaze, AntMaze) also report ``success`` each step."""
    spec = _spec_dict(env_spec)
    env_id, kwargs = spec["id"], dict(spec.get("kwargs") or {})
    register_env_packages(env_id)
    try:
        base = GymEnv(env_id, device="cpu", **kwargs)
    except Exception as exc:  # gymnasium raises many types for bad ids/kwargs
        raise EnvSpecError(
            f"Evaluation env '{env_id}' with kwargs {kwargs} cannot be made ({exc}); install its "
            "package (gymnasium[mujoco], gymnasium-robotics) or fix the dataset's env spec."
        ) from exc
    if is_maze(env_id):
        base.set_info_dict_reader(_SuccessReader())
    env = TransformedEnv(base, DoubleToFloat())
    if max_episode_steps is not None:
        env.append_transform(StepCounter(max_steps=max_episode_steps))
    env.set_seed(seed)
    return env


class _ObsPolicy(nn.Module):
    """Concatenate the observation keys, call ``act``, return the action."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.act = act

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat(obs, -1) if len(obs) > 1 else obs[0])


def check_action_bounds(env, low: Sequence[float], high: Sequence[float], what: str) -> None:
    space = env.action_spec.space
    env_low, env_high = space.low.reshape(-1).tolist(), space.high.reshape(-1).tolist()
    if len(env_low) != len(low) or any(
        abs(a - b) > 1e-5 for a, b in zip(env_low + env_high, list(low) + list(high), strict=True)
    ):
        raise EnvSpecError(
            f"{what} has action bounds low={list(low)} high={list(high)} but the evaluation env "
            f"has low={env_low} high={env_high}; evaluate on the dataset's own environment."
        )


@torch.no_grad()
def run_episodes(
    act: Callable[[torch.Tensor], torch.Tensor],
    env_spec: str,
    seeds: Sequence[int],
    *,
    obs_keys: Sequence[str] | None = None,
    max_episode_steps: int | None = None,
    action_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    device: torch.device | str = "cpu",
    return_transitions: bool = False,
) -> dict:
    """Run one episode per seed, all stepped together; returns per-episode tensors.

    Args:
        act: ``obs [N, obs_dim] -> action [N, act_dim]`` in raw units.
        env_spec: gymnasium EnvSpec JSON (``MinariDataModule.env_spec``).
        seeds: one env seed per episode.
        obs_keys: dict-observation keys to concatenate (``None``: ``observation``).
        max_episode_steps: cut episodes there (tests); default the env's own limit.
        action_bounds: the data's (low, high), checked against the env's.
        device: where ``act`` runs.
        return_transitions: also return every real step taken.

    Returns:
        ``{"return": [N], "length": [N]}`` (float64 / int64, CPU), the per-step
        ``"step_reward" [N, T]`` (zero after an episode ends) and ``"next_observation"
        [N, T, obs_dim]`` (T: the longest episode); maze envs add ``"success" [N]`` (1.0
        where the goal was reached at some step of the episode); with ``return_transitions``
        also ``"transitions"``: a TensorDict ``[steps]`` of ``observation``, ``action``,
        ``("next", "observation")``, ``("next", "reward")`` (``[..., 1]``) and
        ``("next", "done")`` (observation keys concatenated).
    """
    if not seeds:  # the same per-episode keys as a run (DDP ranks gather them key by key)
        empty = {
            "return": torch.zeros(0, dtype=torch.float64),
            "length": torch.zeros(0, dtype=torch.int64),
        }
        if is_maze(_spec_dict(env_spec)["id"]):
            empty["success"] = torch.zeros(0, dtype=torch.float64)
        return empty
    if action_bounds is not None:
        probe = make_eval_env(env_spec, seeds[0], max_episode_steps)
        try:
            check_action_bounds(probe, *action_bounds, what="The dataset")
        finally:
            probe.close()
    env = SerialEnv(
        len(seeds), [(lambda s=s: make_eval_env(env_spec, s, max_episode_steps)) for s in seeds]
    )
    try:
        keys = list(obs_keys) if obs_keys else ["observation"]
        policy = TensorDictModule(_ObsPolicy(act), in_keys=keys, out_keys=["action"])
        steps = max_episode_steps or 100_000
        td = env.rollout(
            steps,
            policy.to(device),
            break_when_any_done=False,
            break_when_all_done=True,
            auto_cast_to_device=True,
        )
    finally:
        if not env.is_closed:
            env.close()
    done = td["next", "done"].squeeze(-1)
    # a step counts while no earlier step of that episode was done
    alive = torch.cumsum(done.long(), dim=1) - done.long() == 0
    reward = td["next", "reward"].squeeze(-1).double() * alive
    out = {
        "return": reward.sum(1),
        "length": alive.sum(1),
        "step_reward": reward,  # [N, T], 0 after an episode's end
        "next_observation": torch.cat([td["next", k] for k in keys], -1),  # [N, T, obs]
    }
    if ("next", "success") in td.keys(True):
        out["success"] = (td["next", "success"].reshape(alive.shape) & alive).any(1).double()
    if return_transitions:
        obs = torch.cat([td[k] for k in keys], -1)[alive]
        next_obs = torch.cat([td["next", k] for k in keys], -1)[alive]
        out["transitions"] = TensorDict(
            {
                "observation": obs,
                "action": td["action"][alive],
                "next": {
                    "observation": next_obs,
                    "reward": td["next", "reward"][alive].float(),
                    "done": td["next", "done"][alive],
                },
            },
            batch_size=[int(alive.sum())],
        )
    return out
