"""Shared fixtures: tiny real Minari datasets written with the project's own writer."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from lit_itpo.collect.minari_writer import write_dataset
from lit_itpo.collect.recipes import uniform_policy
from lit_itpo.collect.rollout import rollout_episodes

# Tiny nets gain nothing from a second thread, and on a busy 2-core machine torch's 2-thread
# pool can be ~100x slower (measured here with two SAC runs in the background). The suite runs
# on pytest-xdist workers (pyproject's addopts: one per core), so one thread each also keeps
# the workers off each other's cores; OMP_NUM_THREADS carries that into the processes tests
# start (DDP ranks, the notebook's kernel).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
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


REPO = Path(__file__).resolve().parent.parent
DID = "test/hopper/random-v0"


def cli_args(sub: str, config: str, root, out, steps: int = 20, *extra: str) -> list[str]:
    """A committed config shrunk for tests: the tiny dataset, short run, logs under ``out``."""
    return [
        sub,
        "--config",
        str(REPO / config),
        "--data.dataset_id",
        DID,
        "--data.data_dir",
        str(root),
        "--data.batch_size",
        "64",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        "10",
        "--trainer.log_every_n_steps",
        "5",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A Minari root with ``test/hopper/random-v0`` (600 Hopper steps, terminations and cuts)."""
    root = tmp_path_factory.mktemp("minari")
    eps = make_dataset(root, "test/hopper/random-v0")
    return root, eps


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Every stage of `lit-itpo pipeline` at 20 updates on the embedded sample (short ITPO runs)."""
    from lit_itpo.cli import main

    out = tmp_path_factory.mktemp("pipeline")
    args = [
        "pipeline",
        "--pipeline.out_dir",
        str(out),
        "--pipeline.world_model_steps",
        "20",
        "--pipeline.policy_steps",
        "20",
        "--pipeline.meanflow_steps",
        "20",
        "--pipeline.alpha_grid",
        "[0.0001, 0.01]",
        "--pipeline.alpha_episodes",
        "2",
        "--pipeline.num_episodes",
        "2",
        "--pipeline.max_episode_steps",
        "10",
        "--pipeline.particles",
        "4",
        "--pipeline.sample_steps",
        "2",
    ]
    main(args)
    return out, args
