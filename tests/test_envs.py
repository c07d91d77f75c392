"""The env factory leaves nothing behind in the temp folder.

gymnasium-robotics builds every maze env (PointMaze, AntMaze) from an XML it writes to
``<temp folder>/ant_maze<time>.xml`` and never removes (~80 files in /tmp per test run). Made
through lit_itpo (``make_gym_env``, ``gym_spec``, the evaluation's TorchRL env: anything after
``register_env_packages``), the file is removed once MuJoCo has read it.
"""

from __future__ import annotations

import tempfile

import pytest

from lit_itpo.envs import gym_spec, make_gym_env


@pytest.fixture
def temp_folder(tmp_path, monkeypatch):
    """The process's temp folder, empty and its own (where the maze envs write their XML)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "AntMaze_UMaze-v5"])
def test_making_and_closing_a_maze_env_leaves_the_temp_folder_as_it_was(env_id, temp_folder):
    from lit_itpo.evaluation import make_eval_env

    before = sorted(temp_folder.glob("*"))
    env = make_gym_env(env_id)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # the env runs without its XML
    env.close()
    spec = gym_spec(env_id)  # makes and closes one
    env = make_eval_env(spec.to_json(), seed=0, max_episode_steps=3)
    assert env.rollout(3).shape[0] == 3
    env.close()
    assert sorted(temp_folder.glob("*")) == before
