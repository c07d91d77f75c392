"""Batched episode rollouts on plain gymnasium envs, for dataset recipes and behaviour evaluation.

Raw gymnasium is used here rather than TorchRL's ``GymEnv`` because dataset generation steps
millions of transitions and needs the raw (possibly dict) observations Minari stores; TorchRL's
wrapper costs ~8x per step on this CPU (see docs/STACK.md). Evaluation of trained offline
policies goes through TorchRL (``lit_itpo.envs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass
class Episode:
    """One episode in Minari's layout: ``observations`` has one more step than ``actions``.

    Attributes:
        observations: ``[T+1, obs_dim]`` array, or a dict of such arrays (goal-conditioned envs).
        actions: ``[T, act_dim]``.
        rewards, terminations, truncations: ``[T]``.
        seed: the env reset seed of this episode.
        infos: optional per-episode scalars (e.g. ``success``).
    """

    observations: Any
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None
    infos: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())

    def cut(self, length: int) -> Episode:
        """The first ``length`` steps, marked truncated at the cut (D4RL's timeouts)."""
        if length >= len(self):
            return self
        term = self.terminations[:length].copy()
        trunc = self.truncations[:length].copy()
        trunc[-1] = not term[-1]
        return Episode(
            observations=_slice_obs(self.observations, length + 1),
            actions=self.actions[:length],
            rewards=self.rewards[:length],
            terminations=term,
            truncations=trunc,
            seed=self.seed,
            infos=dict(self.infos),
        )


def _slice_obs(obs: Any, n: int) -> Any:
    if isinstance(obs, dict):
        return {k: _slice_obs(v, n) for k, v in obs.items()}
    return obs[:n]


def _stack_obs(obs_list: list[Any]) -> Any:
    if isinstance(obs_list[0], dict):
        return {k: _stack_obs([o[k] for o in obs_list]) for k in obs_list[0]}
    return np.stack(obs_list)  # keep the env's dtype: Minari stores what the space says


PolicyFn = Callable[[Any], np.ndarray]


def rollout_episodes(
    make_env: Callable[[], gym.Env],
    policy: PolicyFn,
    *,
    n_episodes: int | None = None,
    n_steps: int | None = None,
    n_envs: int = 10,
    seed: int = 0,
    progress: Any | None = None,
) -> list[Episode]:
    """Roll ``policy`` out on ``n_envs`` envs stepped together; episode ``k`` resets with seed+k.

    Args:
        make_env: builds one gymnasium env (with its time limit).
        policy: maps a batch of raw observations (``[N, obs_dim]`` or a dict of such) to
            actions ``[N, act_dim]``.
        n_episodes: stop after this many whole episodes.
        n_steps: or stop once this many transitions are collected; the last episode in index
            order is cut there and marked truncated, as D4RL's timeouts are.
        n_envs: episodes stepped together (one batched policy call per step).
        seed: reset seed of episode 0.
        progress: optional tqdm bar, advanced by transitions.

    Returns:
        Episodes in index order.
    """
    if (n_episodes is None) == (n_steps is None):
        raise ValueError("rollout_episodes needs exactly one of n_episodes or n_steps.")
    envs = [make_env() for _ in range(n_envs)]
    finished: dict[int, Episode] = {}
    slots: list[dict | None] = [None] * n_envs
    next_index = 0
    steps_done = 0  # transitions in finished + running episodes

    def budget_left() -> bool:
        if n_episodes is not None:
            return next_index < n_episodes
        return steps_done < n_steps

    def start(i: int) -> None:
        nonlocal next_index
        obs, _ = envs[i].reset(seed=seed + next_index)
        slots[i] = {"k": next_index, "obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        next_index += 1

    for i in range(n_envs):
        if budget_left():
            start(i)
    try:
        while any(s is not None for s in slots):
            live = [i for i, s in enumerate(slots) if s is not None]
            actions = policy(_stack_obs([slots[i]["obs"][-1] for i in live]))
            for j, i in enumerate(live):
                s = slots[i]
                a = actions[j]
                obs, rew, term, trunc, info = envs[i].step(a)
                s["obs"].append(obs)
                s["act"].append(np.asarray(a, dtype=np.float32))
                s["rew"].append(float(rew))
                s["term"].append(bool(term))
                s["trunc"].append(bool(trunc))
                steps_done += 1
                if "success" in info:
                    s["success"] = bool(info["success"]) or s.get("success", False)
                if progress is not None:
                    progress.update(1)
                if term or trunc or (n_steps is not None and steps_done >= n_steps):
                    finished[s["k"]] = Episode(
                        observations=_stack_obs(s["obs"]),
                        actions=np.stack(s["act"]),
                        rewards=np.asarray(s["rew"], dtype=np.float32),
                        terminations=np.asarray(s["term"]),
                        truncations=np.asarray(s["trunc"])
                        | ~np.asarray(s["term"]) & (np.arange(len(s["act"])) == len(s["act"]) - 1),
                        seed=seed + s["k"],
                        infos={"success": s["success"]} if "success" in s else {},
                    )
                    slots[i] = None
                    if budget_left():
                        start(i)
    finally:
        for env in envs:
            env.close()
    episodes = [finished[k] for k in sorted(finished)]
    if n_steps is not None:
        # Keep episodes in index order up to the budget; cut the last one there.
        kept, total = [], 0
        for ep in episodes:
            if total >= n_steps:
                break
            kept.append(ep.cut(n_steps - total))
            total += len(kept[-1])
        episodes = kept
    return episodes
