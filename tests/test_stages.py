"""The typed stage API (lit_itpo.stages): one rule for done / resume / fresh (reused or resumed
only with the same inputs, named when they changed), a stage-3 checkpoint that stands alone,
ITPO on every policy stage, and the statistics of paired gains."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.stages import (
    EvalSpec,
    StageSpec,
    StaleRunError,
    evaluate,
    fit_stage,
    run_stage,
    stage_state,
)
from lit_itpo.stats import bootstrap_ci, iqm, stratified_bootstrap_ci
from tests.conftest import DID, REPO

SMALL = {"model.init_args.hidden": [32, 32], "data.batch_size": 64,
         "trainer.enable_progress_bar": False, "trainer.log_every_n_steps": 2}  # fmt: skip
WM = SMALL | {"model.init_args.reward_hidden": [24], "model.init_args.diffusion_steps": 4,
              "model.init_args.sample_steps": 2, "model.init_args.eval_windows": 16}  # fmt: skip
POLICY = SMALL | {"trainer.callbacks.init_args.num_episodes": 1,
                  "trainer.callbacks.init_args.max_episode_steps": 5}  # fmt: skip


def spec(root, out, config, steps, overrides) -> StageSpec:
    return StageSpec("fit", config, str(out), DID, str(root), 0, max_steps=steps, val_every=3,
                     overrides=overrides)  # fmt: skip


@pytest.fixture(scope="module")
def stages(tiny_root, tmp_path_factory):
    """World model, ReBRAC and tilted MeanFlow at a few updates each, by typed calls."""
    root, _ = tiny_root
    out = tmp_path_factory.mktemp("stages")
    wm = fit_stage(spec(root, out / "wm", "conf/embedded/world_model.yaml", 6, WM))
    pol = fit_stage(spec(root, out / "pol", "conf/embedded/rebrac.yaml", 6, POLICY))
    mf = fit_stage(spec(root, out / "mf", "conf/embedded/meanflow.yaml", 6, mf_overrides(wm, pol)))
    return root, out, wm, pol, mf


def mf_overrides(wm, pol) -> dict:
    """Stage 3 of the fixture: tilted toward its policy, with its world model's reward."""
    return SMALL | {
        "model.init_args.policy_ckpt": str(pol.checkpoint),
        "model.init_args.world_model_ckpt": str(wm.checkpoint),
        "model.init_args.policy_episodes": 1,
        "model.init_args.policy_episode_steps": 5,
    }


def test_one_rule_decides_done_resume_and_fresh(stages, tmp_path, monkeypatch):
    root, out, wm, _, _ = stages
    monkeypatch.chdir(out)  # the same run spelled relative: still done (paths are resolved)
    conf = str(REPO / "conf/embedded/world_model.yaml")
    assert stage_state(spec(root, "wm", conf, 6, WM))[0] == "done"
    monkeypatch.chdir(REPO)
    s = spec(root, out / "wm", "conf/embedded/world_model.yaml", 6, WM)
    state, kept = stage_state(s)
    assert state == "done" and kept.checkpoint == wm.checkpoint and kept.step == 6
    stamp = wm.checkpoint.stat().st_mtime_ns
    assert fit_stage(s).metrics == wm.metrics and wm.checkpoint.stat().st_mtime_ns == stamp
    assert "val/state_rmse" in wm.metrics  # the run's logged metrics, in its metrics.json
    fresh = spec(root, tmp_path / "wm", "conf/embedded/world_model.yaml", 6, WM)
    assert stage_state(fresh) == ("fresh", None)
    # a copy of the run (a moved out_dir) is the same run: done, naming its own checkpoint
    shutil.copytree(out / "wm", tmp_path / "wm2")
    moved = spec(root, tmp_path / "wm2", "conf/embedded/world_model.yaml", 6, WM)
    state, kept = stage_state(moved)
    assert state == "done" and kept.checkpoint.is_relative_to((tmp_path / "wm2").resolve())
    # stopped before its result was recorded: it resumes (here at its final step)
    (tmp_path / "wm2" / "metrics.json").unlink()
    assert stage_state(moved)[0] == "resume"
    got = fit_stage(moved)
    assert got.step == 6 and torch.load(got.checkpoint, weights_only=False)["global_step"] == 6
    assert len(list((tmp_path / "wm2").glob("tb/version_*"))) == 1  # the same run, logged on
    # a larger budget is another run, not continued: the cosine schedule decays over max_steps
    more = spec(root, tmp_path / "wm2", "conf/embedded/world_model.yaml", 8, WM)
    with pytest.raises(StaleRunError, match="max_steps 6 -> 8"):
        stage_state(more)


def test_a_stage_config_override_reaches_the_last_callback(tmp_path):
    s = StageSpec("validate", "conf/embedded/itpo.yaml", str(tmp_path), "x/y/z-v0", None,
                  ckpt_path="p.ckpt",
                  overrides={"trainer.callbacks.init_args.itpo": {"lr": 1e-3}})  # fmt: skip
    cfg = s.to_config()
    assert cfg["trainer"]["callbacks"][-1]["init_args"]["itpo"] == {"lr": 1e-3}
    assert cfg["ckpt_path"] == "p.ckpt" and s.inputs() == ["p.ckpt"]


def test_meanflow_checkpoint_stands_alone(stages, tmp_path):
    """Stage 3 reads stage 1 and the policy once, at fit; its checkpoint then loads and
    validates with both files gone (their side metrics are skipped)."""
    from lit_itpo.modules import load_meanflow, load_world_model

    root, out, wm, pol, mf = stages
    reward = load_world_model(wm.checkpoint).reward_model.state_dict()
    moved = tmp_path / "gone"
    moved.mkdir()
    shutil.copy(mf.checkpoint, moved / "mf.ckpt")
    for path in (wm.checkpoint, pol.checkpoint):
        shutil.move(path, moved / path.name.replace(".ckpt", f"-{path.parts[-5]}.ckpt"))
    try:
        model = load_meanflow(moved / "mf.ckpt")
        for k, v in model.reward_model.state_dict().items():
            assert torch.equal(v, reward[k]), k  # stage 1's reward model, copied at fit
        res = run_stage(
            StageSpec(
                "validate",
                "conf/embedded/meanflow.yaml",
                str(tmp_path / "val"),
                DID,
                str(root),
                ckpt_path=str(moved / "mf.ckpt"),
                overrides={"trainer.enable_progress_bar": False},
            )  # fmt: skip
        )
        assert np.isfinite(res.metrics["val/state_rmse"])
        assert not any(k.startswith("val/diffusion/") for k in res.metrics)
    finally:
        for path in (wm.checkpoint, pol.checkpoint):
            shutil.move(moved / path.name.replace(".ckpt", f"-{path.parts[-5]}.ckpt"), path)


def test_evaluate_chooses_alpha_on_a_batched_grid_and_reports_paired_gains(stages, tmp_path):
    root, _, wm, pol, mf = stages
    common = dict(data_dir=str(root), episodes=2, env_seed=5, max_episode_steps=4,
                  sample_steps=2)  # fmt: skip
    models = {"diffusion": str(wm.checkpoint), "meanflow": str(mf.checkpoint)}
    cfg = ITPOConfig(particles=4, horizon=2)
    sel = evaluate(EvalSpec("conf/embedded/itpo.yaml", str(tmp_path / "alpha"), DID,
                            str(pol.checkpoint), models, cfg, alpha_grid=[1e-3, 1e-1],
                            **common))  # fmt: skip
    for name in models:
        assert set(sel.grid[name]) == {1e-3, 1e-1} and sel.alpha[name] in (0.0, 1e-3, 1e-1)
        assert all(s.length_mean == 4 for s in sel.grid[name].values())
    res = evaluate(EvalSpec("conf/embedded/itpo.yaml", str(tmp_path / "final"), DID,
                            str(pol.checkpoint), models, ITPOConfig(particles=4, horizon=2,
                            lr=1e-1), **common))  # fmt: skip
    import json

    eps = json.loads(next((tmp_path / "final").glob("tb/*/itpo_episodes.json")).read_text())
    assert eps["seeds"] == [5, 6] and len(eps["base"]) == 2
    assert set(eps["itpo"]) == set(models) and all(
        len(v["return"]) == 2 for v in eps["itpo"].values()
    )
    for name in models:
        d = res.itpo[name]
        # 2 paired episodes: fewer than MIN_PAIRED_EPISODES, so no interval
        assert np.isnan(d.gain_ci[0]) and np.isnan(d.gain_ci[1]) and d.fallbacks == 0
        assert 0 <= d.ascent_rate <= 1  # Hopper's state is set from its observation
        assert d.gain == pytest.approx(
            d.score.normalized_score - res.base.normalized_score, abs=1e-4
        )


@pytest.mark.parametrize("algo", ["ReBRACModule", "TD3BCModule", "IQLModule", "BCModule"])
def test_itpo_adapts_every_policy_stage(algo):
    """Any policy stage's parts: a deterministic actor whose parameters ITPO moves (IQL: the
    Tanh-Gaussian's mode, as its evaluation acts), a critic or None, its reward transform."""
    import lit_itpo.modules as m
    from lit_itpo.world_models import DiffusionTransition, DiffusionWorldModel, RewardModel

    low, high = [-1.0, -2.0], [1.0, 0.5]
    module = getattr(m, algo)(3, 2, low, high, hidden=[16, 16]).eval()
    parts = module.policy_parts()
    obs = torch.randn(4, 3)
    assert torch.allclose(parts.actor(obs), module.act(obs), atol=1e-6)
    assert (parts.critic is None) == (algo == "BCModule")
    wm = DiffusionWorldModel(
        DiffusionTransition(3, 2, low, high, hidden=[16], steps=2),
        RewardModel(3, 2, low, high, [8]),
    )
    eng = ITPOEngine.for_policy(parts, wm, ITPOConfig(horizon=2, particles=4, lr=0.5))
    act = eng.step(obs, generator=torch.Generator().manual_seed(0))
    assert eng.fallbacks == 0 and not torch.allclose(act, parts.actor(obs).detach())
    # alpha 0: exactly the stage's own evaluation action (a 1e-7 difference is chaos in MuJoCo)
    still = ITPOEngine.for_policy(parts, wm, ITPOConfig(horizon=2, particles=4, lr=0.0))
    assert torch.equal(still.step(obs), module.act(obs))
    if algo == "IQLModule":  # TorchRL's deterministic action of the Tanh-Gaussian
        from lit_itpo.policies import tanh_normal

        ref = tanh_normal(module.actor, obs, module.action_low, module.action_high)
        assert torch.allclose(module.act(obs), ref.deterministic_sample, atol=1e-6)


def test_a_grid_of_step_sizes_in_one_batch_equals_separate_runs():
    """Episode i at alpha_i in one batch acts as an engine at that alpha alone; alpha 0 is the
    base policy exactly (the base actor's own output on the same batch)."""
    from tests.test_itpo import _linear_system

    wm, actor, _ = _linear_system()
    obs = torch.randn(1, 3).expand(3, 3).contiguous()
    noise = wm.sample_noise(1, 4, 2)
    noise = noise.expand(3, *noise.shape[1:]).contiguous()
    cfg = ITPOConfig(horizon=2, particles=4, inner_steps=2)
    grid = ITPOEngine(actor, None, wm, cfg)
    grid.set_step_sizes([0.0, 1e-2, 1e-1])
    both = grid.step(obs, noise)
    # Same batch, same call: the engine returns the base actor's rows, bit for bit.
    assert torch.equal(both[0], actor(obs).detach()[0])
    # A batch of 3 against a batch of 1 is not bitwise comparable: the matmul kernel (oneDNN on
    # Intel Xeon with AMX, say) is picked per batch shape, so the last bits differ. The actions
    # are O(1) (0.3-3 here) and float32 rounding moves them by < 3e-7 (measured against the same
    # run in float64), so rtol = atol = 1e-5 (<= 4e-5 at these values) leaves a wide margin,
    # while a real defect moves them by >= 3e-2: alpha 1e-3 instead of 0 moves the action by
    # 3.2e-2, a step size 10% off by 2.9e-2, one inner step instead of two by 0.15, and
    # another episode's alpha (1e-1 for 1e-2) by 1.36.
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[0], actor(obs[:1]).detach()[0], **tol)
    for i, lr in ((1, 1e-2), (2, 1e-1)):
        alone = ITPOEngine(
            actor, None, wm, ITPOConfig(horizon=2, particles=4, inner_steps=2, lr=lr)
        )
        torch.testing.assert_close(both[i], alone.step(obs[:1], noise[:1])[0], **tol)
    with pytest.raises(Exception, match="step sizes"):
        grid.set_step_sizes([-1.0, 0.0, 1.0])


def test_bootstrap_intervals_and_iqm():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, 400)
    lo, hi = bootstrap_ci(x, n_boot=2000)
    half = 1.96 / np.sqrt(400)  # the normal interval of a mean of 400 unit-variance draws
    assert lo < 2.0 < hi and abs((hi - lo) / 2 - half) < 0.02
    # strata keep their sizes: a stratum of one value cannot be resampled away
    lo, hi = stratified_bootstrap_ci({"a": [0.0] * 9, "b": [10.0]}, n_boot=500)
    assert lo == hi == pytest.approx(1.0)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)  # the middle half: 2..5


def test_true_objective_sets_the_simulator_from_an_observation():
    """J_true is deterministic (the simulator is set from the observation, not carried over),
    its slope flips sign with the direction, and the ascent rate of the true objective's own
    finite-difference gradient is 100% (on a linear actor small enough to difference)."""
    from lit_itpo.ascent import TrueObjective

    assert TrueObjective.settable("HalfCheetah-v5") and TrueObjective.settable("Hopper-v5")
    assert TrueObjective.settable("Pendulum-v1")  # its state is (atan2(sin, cos), th_dot)
    assert not TrueObjective.settable("CartPole-v1") and not TrueObjective.settable(None)
    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(17, 6), torch.nn.Tanh())
    critic = lambda s, a: torch.zeros(2, s.shape[0], 1, dtype=s.dtype)  # noqa: E731
    true = TrueObjective("HalfCheetah-v5", actor, None, horizon=3, gamma=0.99)
    true.critic = critic
    env = true.env
    obs, _ = env.reset(seed=3)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    obs = obs.astype(np.float64)
    assert true.set_state(obs) < 1e-9
    p = {k: v.detach().double() for k, v in true.actor.named_parameters()}
    assert true(p, obs) == true(p, obs)
    d = {k: torch.randn_like(v) for k, v in p.items()}
    n = torch.sqrt(sum(v.pow(2).sum() for v in d.values()))
    d = {k: v / n for k, v in d.items()}
    assert true.slope(p, d, obs) == pytest.approx(
        -true.slope(p, {k: -v for k, v in d.items()}, obs)
    )
    # the finite-difference gradient of J_true on the last layer's bias: a step along it rises
    g = {k: torch.zeros_like(v) for k, v in p.items()}
    for i in range(6):
        e = {k: torch.zeros_like(v) for k, v in p.items()}
        e["0.bias"][i] = 1.0
        g["0.bias"][i] = true.slope(p, e, obs)
    before = {k: v[None] for k, v in p.items()}
    after = {k: (v + 1e-2 * g[k])[None] for k, v in p.items()}
    slopes = true.step_slopes(before, after, torch.as_tensor(obs)[None])
    assert slopes[0] > 0
    assert torch.isnan(true.step_slopes(before, before, torch.as_tensor(obs)[None]))[0]


def test_the_termination_rule_follows_the_env():
    from lit_itpo.callbacks import ITPOCallback
    from lit_itpo.envs import termination_rule
    from lit_itpo.errors import ConfigError

    hop = termination_rule("Hopper-v5")
    obs = torch.tensor([[1.25, 0.0] + [0.0] * 9, [0.5, 0.0] + [0.0] * 9, [1.25, 0.3] + [0.0] * 9])
    assert hop(obs).tolist() == [False, True, True]  # healthy; too low; tilted
    walker = termination_rule("Walker2d-v5")
    assert walker(torch.tensor([[1.25, 0.0], [2.5, 0.0], [1.25, -1.5]])).tolist() == [
        False, True, True
    ]  # fmt: skip
    assert termination_rule("HalfCheetah-v5") is None
    cb = ITPOCallback(world_model_ckpt="x.ckpt", itpo=ITPOConfig(termination="rule"))
    assert cb._termination_rule('{"id": "Hopper-v5"}') is hop
    with pytest.raises(ConfigError, match="HalfCheetah-v5"):
        cb._termination_rule('{"id": "HalfCheetah-v5"}')


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5"])
def test_the_termination_rule_agrees_with_the_env(env_id):
    """On real random-action episodes the rule says 'fell' exactly where gymnasium terminates."""
    import gymnasium as gym

    from lit_itpo.envs import termination_rule

    rule, env = termination_rule(env_id), gym.make(env_id)
    agree = total = 0
    for seed in range(5):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            agree += bool(rule(torch.as_tensor(obs))) == terminated
            total += 1
            done = terminated or truncated
    env.close()
    assert agree == total


def test_evaluate_takes_any_policy_stage(stages, tmp_path):
    """ITPO through the typed API on an IQL base: the validate run takes the checkpoint's own
    class (the ITPO config names ReBRAC)."""
    root, _, _, _, mf = stages
    iql = fit_stage(spec(root, tmp_path / "iql", "conf/embedded/iql.yaml", 4, POLICY))
    res = evaluate(EvalSpec("conf/embedded/itpo.yaml", str(tmp_path / "itpo"), DID,
                            str(iql.checkpoint), {"meanflow": str(mf.checkpoint)},
                            ITPOConfig(particles=4, horizon=2, lr=0.1), data_dir=str(root),
                            episodes=1, env_seed=5, max_episode_steps=3))  # fmt: skip
    assert res.itpo["meanflow"].score.length_mean == 3 and res.itpo["meanflow"].fallbacks == 0


# --- what a run is made from: reused or resumed only with the same inputs ------------------
BC = SMALL | {"model.init_args.hidden": [16]}


@pytest.fixture(scope="module")
def bc_run(tiny_root, tmp_path_factory):
    """A 4-step BC run on its own copies of the dataset and the config (the tests edit them
    and put them back)."""
    src, _ = tiny_root
    base = tmp_path_factory.mktemp("record")
    shutil.copytree(src / DID, base / "minari" / DID)
    conf = base / "bc.yaml"
    shutil.copy(REPO / "conf/embedded/bc.yaml", conf)
    s = StageSpec("fit", str(conf), str(base / "run"), DID, str(base / "minari"), 0,
                  max_steps=4, val_every=2, overrides=BC)  # fmt: skip
    return s, fit_stage(s)


def _stale(s: StageSpec, *names: str) -> str:
    with pytest.raises(StaleRunError) as e:
        stage_state(s)
    msg = str(e.value)
    assert "\n" not in msg and s.root in msg and "another run directory" in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def test_changed_inputs_are_named_never_reused_nor_resumed(bc_run):
    """Every input of a finished run, changed: one line naming the change, on the done path
    and (its result removed, as if stopped) on the resume path; nothing is written."""
    s, res = bc_run
    root, conf = Path(s.root), Path(s.config)
    files = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    changed = [
        (replace(s, seed=1), "seed 0 -> 1"),
        (replace(s, max_steps=6), "max_steps 4 -> 6"),  # larger: not continued either
        (replace(s, max_steps=3), "max_steps 4 -> 3"),
        (replace(s, val_every=1), "val_every 2 -> 1"),
        (replace(s, overrides=BC | {"model.init_args.lr": 0.01}), "model.init_args.lr=0.01"),
        (replace(s, overrides=BC | {"model.init_args.hidden": [8]}), "[16] -> [8]"),
    ]
    text = conf.read_text()
    metrics = root / "metrics.json"
    saved = metrics.read_text()
    try:
        for path in ("done", "resume"):
            if path == "resume":
                metrics.unlink()  # stopped before its result: run.json holds the record
            assert stage_state(s)[0] == path
            for other, named in changed:
                _stale(other, named)
                with pytest.raises(StaleRunError):
                    fit_stage(other)
            # the config's content, not its path: a comment keeps it, a value does not
            conf.write_text(text + "# a note\n")
            assert stage_state(s)[0] == path
            conf.write_text(text.replace("lr: 0.001", "lr: 0.002"))
            _stale(s, f"config {conf.resolve()} content changed")
            conf.write_text(text)
    finally:
        conf.write_text(text)
        metrics.write_text(saved)
    assert stage_state(s)[0] == "done"
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == files | {
        metrics: metrics.stat().st_mtime_ns
    }


def test_a_rewritten_dataset_is_named(bc_run, tmp_path):
    """The dataset rewritten in place (as `collect --collect.overwrite true` does): the run's
    inputs changed. A copy of the same dataset elsewhere is the same input."""
    from tests.conftest import make_dataset

    s, _ = bc_run
    data = Path(s.data_dir)
    shutil.copytree(data / DID, tmp_path / "kept" / DID)
    try:
        make_dataset(data, DID, seed=1, overwrite=True)
        _stale(s, f"dataset {DID}", "was rewritten")
    finally:
        shutil.rmtree(data / DID)
        shutil.copytree(tmp_path / "kept" / DID, data / DID)
    assert stage_state(s)[0] == "done"
    assert stage_state(replace(s, data_dir=str(tmp_path / "kept")))[0] == "done"


@pytest.mark.parametrize("damage", ["edited", "truncated", "unsigned", "checkpoint", "gone"])
def test_metrics_json_is_not_trusted_over_its_checkpoint(damage, bc_run, tmp_path):
    """A result that does not verify is named (its file), not reused and not a traceback;
    ``restart`` starts such a run over."""
    s, res = bc_run
    run = Path(s.root)
    shutil.copytree(run, tmp_path / "kept")
    metrics = run / "metrics.json"
    rec = json.loads(metrics.read_text())
    ckpt = res.checkpoint
    try:
        if damage == "edited":
            key = next(iter(rec["metrics"]))
            rec["metrics"][key] += 1.0
            metrics.write_text(json.dumps(rec))
            named = [str(metrics), "checksum"]
        elif damage == "truncated":
            metrics.write_text(metrics.read_text()[:100])
            named = [str(metrics), "cannot be read"]
        elif damage == "unsigned":  # an older lit_itpo's, or written by hand
            rec.pop("sha256", None)
            rec["metrics"] = {k: 0.0 for k in rec["metrics"]}
            metrics.write_text(json.dumps(rec))
            named = [str(metrics), "checksum"]
        elif damage == "checkpoint":  # the weights changed after the result was recorded
            blob = torch.load(ckpt, weights_only=False)
            next(iter(blob["state_dict"].values())).add_(1.0)
            torch.save(blob, ckpt)
            named = [str(ckpt), "changed after"]
        else:
            ckpt.unlink()
            named = [str(ckpt)]
        _stale(s, *named)
        got = fit_stage(s, restart=True)  # deleted and trained again: the same weights
        untimed = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
        assert stage_state(s)[0] == "done" and untimed(got.metrics) == untimed(res.metrics)
        a = torch.load(got.checkpoint, weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "kept" / ckpt.relative_to(run.resolve()), weights_only=True)
        assert all(torch.equal(a[k], b["state_dict"][k]) for k in b["state_dict"])
    finally:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(tmp_path / "kept", run)


def test_a_changed_upstream_checkpoint_is_named(stages, tmp_path):
    """Stage 3 read the policy and the world model: the policy's content changed (a retrained
    policy), so stage 3's result, tilted toward the old one, is not reused; another path to
    the same content is the same input."""
    root, out, wm, pol, mf = stages
    s = spec(root, out / "mf", "conf/embedded/meanflow.yaml", 6, mf_overrides(wm, pol))
    assert stage_state(s)[0] == "done"
    shutil.copy2(pol.checkpoint, tmp_path / "policy.ckpt")
    try:
        blob = torch.load(pol.checkpoint, weights_only=False)
        next(iter(blob["state_dict"].values())).add_(1.0)
        torch.save(blob, pol.checkpoint)
        _stale(s, f"upstream checkpoint {pol.checkpoint} changed", "policy_ckpt")
        with pytest.raises(StaleRunError):
            fit_stage(s)
    finally:
        shutil.copy2(tmp_path / "policy.ckpt", pol.checkpoint)
    assert stage_state(s)[0] == "done"
    moved = mf_overrides(wm, pol) | {"model.init_args.policy_ckpt": str(tmp_path / "policy.ckpt")}
    assert stage_state(replace(s, overrides=moved))[0] == "done"
