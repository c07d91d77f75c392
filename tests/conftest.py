"""Shared fixtures: tiny real Minari datasets written with the project's own writer."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
import torch

from lit_itpo.collect.minari_writer import write_dataset
from lit_itpo.collect.recipes import uniform_policy
from lit_itpo.collect.rollout import rollout_episodes

# Tiny nets gain nothing from a second thread, and on a busy 2-core machine torch's 2-thread
# pool can be ~100x slower (measured here with two SAC runs in the background).
torch.set_num_threads(1)
os.environ.setdefault("MUJOCO_GL", "disable")


def make_dataset(
    root, dataset_id: str, env_id: str = "Hopper-v5", n_steps: int = 600, seed: int = 0, **kw
):
    """Roll a seeded uniform-random policy and write it as a real Minari dataset."""
    eps = rollout_episodes(
        lambda: gym.make(env_id), uniform_policy(env_id, seed), n_steps=n_steps, n_envs=3, seed=seed
    )
    write_dataset(
        dataset_id, eps, env_id, data_dir=root, ref_min_score=-20.272305, ref_max_score=3234.3, **kw
    )
    return eps


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A Minari root with ``test/hopper/random-v0`` (600 Hopper steps, terminations and cuts)."""
    root = tmp_path_factory.mktemp("minari")
    eps = make_dataset(root, "test/hopper/random-v0")
    return root, eps
