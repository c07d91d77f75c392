"""``lit-itpo collect``: a tiny real run (SAC with TorchRL -> Minari datasets), resume, errors."""

from __future__ import annotations

import json

import minari
import numpy as np
import pytest

from lit_itpo.cli import collect_main
from lit_itpo.collect.recipes import CollectConfig, _stream_episodes, collect
from lit_itpo.collect.sac import SACConfig, load_stream, train_sac
from lit_itpo.data.minari_io import minari_root
from lit_itpo.errors import ConfigError, EnvSpecError
from tests.conftest import REPO

TINY_SAC = {
    "total_frames": 1000,
    "init_random_frames": 500,
    "frames_per_batch": 250,
    "eval_every": 500,
    "eval_episodes": 2,
    "hidden": 32,
    "batch_size": 64,
}


@pytest.fixture(scope="module")
def tiny_collect(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collect")
    args = [
        "--collect.env_id",
        "Hopper-v5",
        "--collect.name",
        "hopper",
        "--collect.recipes",
        "[random, medium, medium-replay, expert, medium-expert]",
        "--collect.steps",
        "400",
        "--collect.n_envs",
        "3",
        "--collect.medium_target",
        "2.0",
        "--collect.data_dir",
        str(tmp / "data"),
        "--collect.run_dir",
        str(tmp / "run"),
        "--collect.export_dir",
        str(tmp / "export"),
        "--progress",
        "false",
    ]
    for k, v in TINY_SAC.items():
        args += [f"--collect.sac.{k}", str(v)]
    results = collect_main(args)
    return tmp, results, args


def test_collect_writes_readable_minari_datasets(tiny_collect):
    tmp, results, _ = tiny_collect
    ids = [
        f"lit_itpo/hopper/{r}-v0"
        for r in ("random", "medium", "medium-replay", "expert", "medium-expert")
    ]
    assert list(results) == ids
    with minari_root(tmp / "data"):
        assert set(ids) <= set(minari.list_local_datasets())
        for did in ids:
            ds = minari.load_dataset(did)
            assert ds.total_steps == results[did]["num_steps"]
            score = minari.get_normalized_score(ds, np.array([1000.0]))
            assert score == pytest.approx((1000.0 + 20.272305) / (3234.3 + 20.272305))
            prov = json.loads((tmp / "data" / did / "provenance.json").read_text())
            assert prov["recipe"] == did.split("/")[-1][:-3]
            assert prov["config"]["seed"] == 0 and "return_mean" in prov
    assert results["lit_itpo/hopper/random-v0"]["num_steps"] == 400
    assert results["lit_itpo/hopper/medium-expert-v0"]["num_steps"] == 800
    # medium-replay is the agent's own stream up to the medium checkpoint
    beh = json.loads((tmp / "export" / "behaviour.json").read_text())
    assert results["lit_itpo/hopper/medium-replay-v0"]["num_steps"] == beh["medium"]["frames"]
    assert (tmp / "export" / "medium.pt").exists() and (tmp / "export" / "expert.pt").exists()


def test_collect_is_deterministic_and_skips_existing(tiny_collect, tmp_path):
    tmp, results, args = tiny_collect
    # Existing datasets are skipped (resumable) ...
    again = collect_main(args)
    assert again == {}
    # ... and regenerating from the exported behaviour actors gives the same data.
    cfg = CollectConfig(
        env_id="Hopper-v5",
        name="hopper",
        recipes=["random", "medium"],
        steps=400,
        n_envs=3,
        medium_target=2.0,
        data_dir=str(tmp_path),
        export_dir=str(tmp / "export"),
        sac=SACConfig(**TINY_SAC),
    )
    redo = collect(cfg, progress=False)
    for did in redo:
        a = minari.MinariDataset(tmp / "data" / did / "data")
        b = minari.MinariDataset(tmp_path / did / "data")
        for ea, eb in zip(a.iterate_episodes(), b.iterate_episodes(), strict=True):
            np.testing.assert_array_equal(ea.observations, eb.observations)
            np.testing.assert_array_equal(ea.actions, eb.actions)


def test_sac_resume_continues_from_last_point(tmp_path):
    cfg = SACConfig(env_id="Hopper-v5", **(TINY_SAC | {"total_frames": 500}))
    ev1 = train_sac(cfg, tmp_path, progress=False)
    assert [e["frames"] for e in ev1] == [500]
    cfg2 = SACConfig(env_id="Hopper-v5", **TINY_SAC)
    ev2 = train_sac(cfg2, tmp_path, progress=False)
    assert [e["frames"] for e in ev2] == [500, 1000]
    assert ev2[0] == ev1[0]
    stream = load_stream(tmp_path)
    assert len(stream["action"]) == 1000
    # The resume point is an episode boundary in the stream; episodes tile it exactly.
    eps = _stream_episodes(stream)
    assert sum(len(e) for e in eps) == 1000
    for e in eps:
        assert e.terminations[-1] or e.truncations[-1]
        assert not (e.terminations[:-1] | e.truncations[:-1]).any()
    with pytest.raises(ValueError, match="fresh --run_dir"):
        train_sac(
            SACConfig(env_id="Hopper-v5", **(TINY_SAC | {"lr": 1e-3})), tmp_path, progress=False
        )


def test_collect_bad_inputs(tmp_path):
    with pytest.raises(EnvSpecError, match="not registered"):
        collect(CollectConfig(env_id="NoSuchEnv-v0", data_dir=str(tmp_path)), progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        collect(CollectConfig(recipes=["mediocre"], data_dir=str(tmp_path)), progress=False)
    with pytest.raises(EnvSpecError, match="Box"):
        collect(CollectConfig(env_id="CartPole-v1", data_dir=str(tmp_path)), progress=False)
    assert not any(tmp_path.iterdir())


def test_pointmaze_waypoint_recipe_and_dict_observations(tmp_path):
    from lit_itpo.data.datamodule import MinariDataModule

    cfg = CollectConfig(
        env_id="PointMaze_UMaze-v3",
        name="pointmaze-umaze",
        recipes=["waypoint"],
        steps=900,
        env_kwargs={"continuing_task": True, "reset_target": True},
        eval_env_kwargs={"continuing_task": True, "reset_target": False},
        n_envs=3,
        ref_episodes=3,
        data_dir=str(tmp_path),
    )
    res = collect(cfg, progress=False)["lit_itpo/pointmaze-umaze/waypoint-v0"]
    assert res["num_steps"] == 900 and res["success_rate"] > 0.5
    prov = json.loads(
        (tmp_path / "lit_itpo/pointmaze-umaze/waypoint-v0/provenance.json").read_text()
    )
    refs = prov["behaviour"]["reference"]
    assert refs["controller"]["success_rate"] == 1.0
    assert refs["controller"]["return_mean"] > refs["random"]["return_mean"]
    dm = MinariDataModule("lit_itpo/pointmaze-umaze/waypoint-v0", data_dir=str(tmp_path))
    assert dm.info.obs_keys == ["observation", "desired_goal"] and dm.obs_dim == 6
    assert json.loads(dm.env_spec)["kwargs"]["reset_target"] is False  # the eval env
    assert dm.ref_scores == (refs["random"]["return_mean"], refs["controller"]["return_mean"])
    dm.setup()
    with minari_root(tmp_path):
        ep0 = minari.load_dataset("lit_itpo/pointmaze-umaze/waypoint-v0")[0]
    first = dm.transitions[dm.transitions["episode"] == 0]
    flat = np.concatenate([ep0.observations["observation"], ep0.observations["desired_goal"]], -1)
    np.testing.assert_allclose(first["observation"].numpy(), flat[:-1], rtol=1e-6)
    np.testing.assert_allclose(first["next", "observation"].numpy(), flat[1:], rtol=1e-6)


def test_maze_recipes_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="do not apply"):
        collect(
            CollectConfig(env_id="PointMaze_UMaze-v3", recipes=["medium"], data_dir=str(tmp_path)),
            progress=False,
        )
    with pytest.raises(ConfigError, match="reference scores"):  # PointMaze random: no D4RL ref
        collect(
            CollectConfig(env_id="PointMaze_UMaze-v3", recipes=["random"], data_dir=str(tmp_path)),
            progress=False,
        )
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="do not apply"):  # no scripted AntMaze controller
        collect(
            CollectConfig(env_id="AntMaze_UMaze-v4", recipes=["waypoint"], data_dir=str(tmp_path)),
            progress=False,
        )


def test_antmaze_dataset_trains_and_evaluates_with_success_rate(tmp_path):
    """The AntMaze path end to end on a small local dataset named like Minari's D4RL ids:
    dict observations (observation + desired_goal), sparse goal reward, an evaluation env that
    ends the episode at the goal (D4RL's 0/1 return), success rate in the evaluation metrics."""
    from lit_itpo.cli import lightning_main
    from lit_itpo.data.datamodule import MinariDataModule

    cfg = CollectConfig(
        env_id="AntMaze_UMaze-v4",
        name="antmaze",
        namespace="D4RL",
        version=1,
        recipes=["random"],
        steps=800,
        env_kwargs={"continuing_task": True, "reset_target": True, "max_episode_steps": 400},
        eval_env_kwargs={"continuing_task": False, "reset_target": False},
        n_envs=2,
        data_dir=str(tmp_path),
    )
    res = collect(cfg, progress=False)["D4RL/antmaze/random-v1"]
    assert res["num_steps"] == 800 and res["num_episodes"] == 2 and "success_rate" in res
    dm = MinariDataModule("D4RL/antmaze/random-v1", data_dir=str(tmp_path))
    assert dm.info.obs_keys == ["observation", "desired_goal"] and dm.obs_dim == 27 + 2
    assert dm.ref_scores == (0.0, 1.0)  # D4RL's AntMaze reference: return = success
    assert json.loads(dm.env_spec)["kwargs"]["continuing_task"] is False
    out = tmp_path / "run"
    cli = lightning_main(
        [
            "fit", "--config", str(REPO / "conf/antmaze-umaze/rebrac.yaml"),
            "--data.dataset_id", "D4RL/antmaze/random-v1", "--data.data_dir", str(tmp_path),
            "--data.batch_size", "64", "--model.init_args.hidden", "[32, 32]",
            "--trainer.max_steps", "10", "--trainer.val_check_interval", "10",
            "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir",
            str(out), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks.init_args.num_episodes", "2",
            "--trainer.callbacks.init_args.max_episode_steps", "5",
        ]
    )  # fmt: skip
    m = cli.trainer.callback_metrics
    assert {"eval/success_rate", "eval/normalized_score"} <= set(m)
    assert float(m["eval/success_rate"]) == 0.0 and float(m["eval/length_mean"]) == 5.0
