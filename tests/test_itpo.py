"""The ITPO step on systems where the answer is known; the guard; batched == one at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.world_models import DiffusionTransition, DiffusionWorldModel, RewardModel, WorldModel
from tests.conftest import DID, REPO


class _Reward(nn.Module):
    """r(s, a) = -||a - K s||^2: the optimal action is K s; NaN where s[0] > 100 (for the guard)."""

    def __init__(self, K: torch.Tensor):
        super().__init__()
        self.register_buffer("K", K)

    def forward(self, s, a):
        r = -(a - s @ self.K.T).pow(2).sum(-1, keepdim=True)
        return torch.where(s[..., :1] > 100, torch.full_like(r, float("nan")), r)


class LinearWorldModel(WorldModel):
    """s' = A s + B a (deterministic; one unused noise scalar per step)."""

    def __init__(self, A, B, K):
        super().__init__(_Reward(K))
        self.register_buffer("A", A)
        self.register_buffer("B", B)

    def noise_shape(self, batch, particles, horizon):
        return (batch, particles, horizon, 1)

    def next(self, obs, action, noise):
        return obs @ self.A.T + action @ self.B.T


class _NoisyLinear(LinearWorldModel):
    """s' = A s + B a + eps * a[0]: the spread of the next state grows with |a[0]|."""

    def next(self, obs, action, noise):
        return super().next(obs, action, noise) + noise * action[..., :1]


def _linear_system(o=3, a=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(o, o, generator=g) * 0.3
    B = torch.randn(o, a, generator=g) * 0.3
    K = torch.randn(a, o, generator=g)
    torch.manual_seed(seed)
    return LinearWorldModel(A, B, K), nn.Linear(o, a), K


def test_step_climbs_the_objective_toward_the_known_optimum():
    wm, actor, K = _linear_system()
    eng = ITPOEngine(actor, None, wm, ITPOConfig(horizon=1, particles=4, inner_steps=5, lr=0.05))
    obs = torch.randn(6, 3)
    noise = wm.sample_noise(6, 4, 1)
    optimum = obs @ K.T
    base = actor(obs).detach()
    eng.reset(6)
    j0 = eng.objective(obs, noise)
    act = eng.step(obs, noise)
    j1 = eng.objective(obs, noise)
    assert (j1 > j0).all()
    assert torch.allclose(eng.last["objective_before"], j0)
    assert ((act - optimum).norm(dim=-1) < (base - optimum).norm(dim=-1)).all()
    # psi carries over: another step from the same state moves closer still
    act2 = eng.step(obs, noise)
    assert ((act2 - optimum).norm(dim=-1) < (act - optimum).norm(dim=-1)).all()
    # the pretrained actor is untouched, and reset restores it
    assert torch.equal(actor(obs), base)
    eng.reset(6)
    assert torch.allclose(eng._act(eng.params, obs), base)
    assert eng.fallbacks == 0


def test_gradient_ascent_matches_the_closed_form_step():
    wm, actor, K = _linear_system()
    lr = 0.01
    eng = ITPOEngine(actor, None, wm, ITPOConfig(horizon=1, particles=2, inner_steps=1, lr=lr))
    s = torch.randn(1, 3)
    eng.step(s, wm.sample_noise(1, 2, 1))
    # J(W, b) = -||W s + b - K s||^2  =>  dJ/db = -2 (W s + b - K s)
    resid = actor(s).detach() - s @ K.T
    assert torch.allclose(eng.params["bias"][0], actor.bias + lr * (-2 * resid[0]), atol=1e-6)
    # grad_and_value: the same gradient at the current parameters, without the update
    fresh = ITPOEngine(actor, None, wm, ITPOConfig(horizon=1, particles=2, lr=lr))
    fresh.reset(1)
    grads, j = fresh.grad_and_value(s, wm.sample_noise(1, 2, 1))
    assert torch.allclose(grads["bias"][0], -2 * resid[0], atol=1e-5)
    assert torch.allclose(j[0], -resid[0].pow(2).sum(), atol=1e-5)
    assert torch.equal(fresh.params["bias"][0], actor.bias.detach())


def test_guard_keeps_non_finite_episodes_on_base_action_and_old_params():
    wm, actor, _ = _linear_system()
    eng = ITPOEngine(actor, None, wm, ITPOConfig(horizon=2, particles=3, inner_steps=2, lr=0.05))
    obs = torch.randn(3, 3)
    obs[1, 0] = 1000.0  # the reward model returns NaN here
    eng.reset(3)
    before = {k: v.clone() for k, v in eng.params.items()}
    act = eng.step(obs, wm.sample_noise(3, 3, 2))
    assert torch.isfinite(act).all()
    assert eng.last["fallback"].tolist() == [False, True, False]
    assert eng.fallbacks == 1
    # the base actor's row of the same batch, bit for bit (a batch of 1 would round differently
    # on CPUs whose matmul kernel depends on the batch shape)
    assert torch.equal(act[1], actor(obs).detach()[1])
    assert torch.equal(eng.params["weight"][1], before["weight"][1])
    assert not torch.equal(eng.params["weight"][0], before["weight"][0])


def test_batched_equals_one_at_a_time_with_a_diffusion_world_model():
    torch.manual_seed(0)
    o, a = 5, 2
    tr = DiffusionTransition(o, a, [-1.0] * a, [1.0] * a, steps=3, hidden=(32, 32))
    rw = RewardModel(o, a, [-1.0] * a, [1.0] * a, hidden=(32, 32))
    wm = DiffusionWorldModel(tr, rw).requires_grad_(False)
    actor = TanhActor(o, a, [-1.0] * a, [1.0] * a, [32, 32])
    critic = TwinCritic(o, a, [32, 32]).requires_grad_(False)
    cfg = ITPOConfig(horizon=3, particles=5, inner_steps=2, lr=0.05)
    obs = torch.randn(4, o)
    noise = wm.sample_noise(4, 5, 3, torch.Generator().manual_seed(1))
    batched = ITPOEngine(actor, critic, wm, cfg).step(obs, noise)
    # Batch of 4 vs batch of 1: the kernels may round differently per batch shape, so not
    # bitwise. Actions here are 0.1-0.4 and float32 rounding moves them by < 1e-7 (measured
    # against float64); rtol = atol = 1e-5 allows ~1.4e-5, while a real defect moves them by
    # >= 2.7e-3 (another episode's noise: 4e-3 to 3.7e-2; a step size 10% off: 2.7e-3 to 4e-3).
    for n in range(4):
        single = ITPOEngine(actor, critic, wm, cfg).step(obs[n : n + 1], noise[n : n + 1])
        torch.testing.assert_close(batched[n], single[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched, actor(obs))  # it did adapt


def test_bad_itpo_config():
    with pytest.raises(ConfigError, match="horizon=0"):
        ITPOConfig(horizon=0)
    with pytest.raises(ConfigError, match="lr=nan"):
        ITPOConfig(lr=float("nan"))


def test_chain_world_model_policy_itpo_through_real_checkpoints(tiny_root, tmp_path):
    from pathlib import Path

    from lit_itpo.cli import lightning_main
    from tests.conftest import cli_args

    root, _ = tiny_root
    small = ["--model.init_args.hidden", "[32, 32]"]
    wm = lightning_main(
        cli_args(
            "fit",
            "conf/embedded/world_model.yaml",
            root,
            tmp_path / "wm",
            20,
            *small,
            "--model.init_args.reward_hidden",
            "[32, 32]",
            "--model.init_args.diffusion_steps",
            "4",
            "--model.init_args.sample_steps",
            "4",
        )
    )
    wm_ckpt = next(Path(wm.trainer.logger.log_dir).glob("checkpoints/*.ckpt"))
    pol = lightning_main(
        cli_args(
            "fit",
            "conf/embedded/rebrac.yaml",
            root,
            tmp_path / "pol",
            20,
            *small,
            "--trainer.callbacks.init_args.num_episodes",
            "2",
            "--trainer.callbacks.init_args.max_episode_steps",
            "10",
        )
    )
    pol_ckpt = next(Path(pol.trainer.logger.log_dir).glob("checkpoints/*.ckpt"))
    args = cli_args(
        "validate",
        "conf/embedded/itpo.yaml",
        root,
        tmp_path / "itpo",
        20,
        *small,
        "--trainer.callbacks.init_args.world_model_ckpt",
        str(wm_ckpt),
        "--trainer.callbacks.init_args.num_episodes",
        "3",
        "--trainer.callbacks.init_args.max_episode_steps",
        "8",
        "--trainer.callbacks.init_args.itpo.particles",
        "4",
        "--trainer.callbacks.init_args.itpo.lr",
        "0.05",
        "--ckpt_path",
        str(pol_ckpt),
    )
    cli = lightning_main(args)
    m = cli.trainer.callback_metrics
    for key in (
        "eval/normalized_score",
        "itpo/diffusion/normalized_score",
        "itpo/diffusion/improvement",
        "time/itpo_diffusion_ms_per_step",
        "itpo/diffusion/objective_before",
        "itpo/diffusion/objective_after",
    ):
        assert key in m and torch.isfinite(m[key]), key
    assert m["itpo/diffusion/fallbacks"] == 0
    assert m["itpo/diffusion/nfe_per_step"] == 4 * 5  # K x H x E
    last = cli.trainer.callbacks[0].last
    assert (last["base"]["length"] <= 8).all() and (last["diffusion"]["length"] <= 8).all()
    assert not torch.equal(last["base"]["return"], last["diffusion"]["return"])  # ITPO acted
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(Path(cli.trainer.logger.log_dir)), size_guidance={"images": 0})
    ev.Reload()
    assert "itpo/diffusion/per_step" in ev.Tags()["images"]  # per-step gain + imagined vs real


def test_pipeline_end_to_end_and_resumes_per_stage(tiny_pipeline, capsys):
    import json

    from lit_itpo.cli import main

    out, args = tiny_pipeline
    res = json.loads((out / "results.json").read_text())
    assert set(res["alpha_selection"]) == {"0.0001", "0.01"}
    assert set(res["alpha"]) == {"exact", "diffusion", "meanflow"}  # Pendulum: exact built in
    assert set(res["alpha"].values()) <= {0.0, 0.0001, 0.01}
    assert res["base"]["normalized_score"] is not None
    for name, nfe in (("diffusion", 2 * 5), ("meanflow", 1 * 5)):  # K x H, 1 x H (E = 1)
        assert res[f"itpo_{name}"]["fallbacks"] == 0
        assert res[f"itpo_{name}"]["nfe_per_step"] == nfe
    # alpha_episodes 2: two held-out episodes per grid point, the whole grid in one run
    run = json.loads((out / "itpo" / "alpha" / "metrics.json").read_text())
    assert run["made_by"]["spec"]["overrides"]["trainer.callbacks.init_args.num_episodes"] == 2
    assert run["metrics"]["eval/return_std"] > 0  # two episodes (seeds 999, 1000) differ
    for lr in ("0.0001", "0.01"):
        assert f"itpo/diffusion/alpha_{lr}/return_mean" in run["metrics"]
    ckpts = lambda: {p: p.stat().st_mtime_ns for p in out.glob("*/tb/*/checkpoints/last.ckpt")}  # noqa: E731
    stamps = ckpts()
    assert {p.parts[-5] for p in stamps} == {"world_model", "policy", "meanflow"}
    assert set(res["checkpoints"].values()) == {str(p) for p in stamps}
    runs = {p: p.stat().st_mtime_ns for p in out.glob("itpo/*/metrics.json")}
    assert {p.parent.name for p in runs} == {
        "alpha",
        "final_exact",
        "final_diffusion",
        "final_meanflow",
    }
    capsys.readouterr()
    main(args)  # resumes: the training stages and the finished ITPO runs are reused
    assert ckpts() == stamps
    assert {p: p.stat().st_mtime_ns for p in out.glob("itpo/*/metrics.json")} == runs
    # the same out_dir given relative to the working directory: still nothing to redo
    main([a if a != str(out) else os.path.relpath(out) for a in args])
    assert {p: p.stat().st_mtime_ns for p in out.glob("itpo/*/metrics.json")} == runs
    again = json.loads((out / "results.json").read_text())
    assert {k: again[k] for k in ("alpha", "base")} == {k: res[k] for k in ("alpha", "base")}
    policy = Path(res["checkpoints"]["policy"])
    st = policy.stat()
    os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: the same content
    main(args)  # results depend on the checkpoints' content, not their times: all reused
    assert {p: p.stat().st_mtime_ns for p in out.glob("itpo/*/metrics.json")} == runs
    printed = capsys.readouterr().out
    kept = policy.read_bytes()
    blob = torch.load(policy, weights_only=False)
    next(iter(blob["state_dict"].values())).add_(1.0)
    torch.save(blob, policy)  # other weights behind the pipeline's back: nothing reuses them
    with pytest.raises(SystemExit) as e:
        main(args)
    policy.write_bytes(kept)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    assert str(policy) in err and "--pipeline.restart policy" in err, err
    assert "| base policy |" in printed and "ITPO, diffusion WM" in printed
    assert "ITPO, tilted MeanFlow WM" in printed and "[95% CI]" in printed
    # 2 evaluation episodes: too few for a bootstrap interval (stats.MIN_PAIRED_EPISODES)
    assert all(res[f"itpo_{a}"]["gain_ci"] == [None, None] for a in res["alpha"])
    assert "95% CI n/a: fewer than 5 paired episodes (2 evaluation episodes;" in printed
    assert "ITPO, exact dynamics" in printed and "share of exact gain" in printed
    for name in ("diffusion", "meanflow"):  # the share of the exact arm's gain each keeps
        d, exact = res[f"itpo_{name}"], res["itpo_exact"]
        want = d["gain"] / exact["gain"] if exact["gain"] > 0 else None
        assert d["share_of_exact_gain"] == want
    assert res["itpo_exact"]["nfe_per_step"] == 0  # no network: the equations
    assert res["itpo_exact"]["ascent_rate"] is not None  # Pendulum's state is settable


def test_pipeline_arms_with_another_rule_run_beside_the_runs_rule(tiny_pipeline, capsys):
    """An arm with a rule suffix (``exact_carry``: the paper's rule) runs beside the run's rule
    (Pendulum's ITPO config: psi reset every step) on the same trained stages: its own alpha
    run and final run, its own results key, each row named by its rule."""
    import json

    from lit_itpo.cli import main

    out, args = tiny_pipeline
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/tb/*/checkpoints/last.ckpt")}
    capsys.readouterr()
    arms = ["--pipeline.itpo_models", "[exact_carry, meanflow]", "--pipeline.itpo_dir", "arms"]
    main([*args, *arms])
    printed = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the trained stages reused
    res = json.loads((out / "arms" / "results.json").read_text())
    assert res["config"]["reset_every_step"] is True  # conf/pendulum-medium/itpo.yaml's rule
    assert set(res["alpha"]) == {"exact_carry", "meanflow"}
    carry, reset = res["itpo_exact_carry"], res["itpo_meanflow"]
    assert (carry["world_model"], carry["reset_every_step"]) == ("exact", False)
    assert (reset["world_model"], reset["reset_every_step"]) == ("meanflow", True)
    runs = {p.parent.name for p in (out / "arms").glob("*/metrics.json")}
    assert runs == {"alpha", "alpha_carry", "final_exact_carry", "final_meanflow"}
    made = json.loads((out / "arms" / "alpha_carry" / "metrics.json").read_text())["made_by"]
    itpo = made["spec"]["overrides"]["trainer.callbacks.init_args.itpo"]
    assert itpo["reset_every_step"] is False
    assert "ITPO, exact dynamics, psi carried over" in printed
    assert "ITPO, tilted MeanFlow WM, psi reset each step" in printed
    assert reset.get("share_of_exact_gain") is None  # the exact arm of another rule: no share


def test_results_notebook_runs_on_a_tiny_run(tiny_pipeline, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import REPO

    out, _ = tiny_pipeline
    monkeypatch.setenv("LIT_ITPO_RESULTS", str(out / "results.json"))
    monkeypatch.delenv("LIT_ITPO_ROOT", raising=False)
    nb = nbformat.read(REPO / "notebooks/results.ipynb", as_version=4)
    NotebookClient(  # from the repository root: it finds its repository by itself
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    ).execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "alpha" in text and "Traceback" not in text
    # every plotting cell shows its figure inline (the committed results exist for all of them)
    plots = [c for c in nb.cells if c.cell_type == "code" and "plt.subplots" in c.source]
    shown = [any("image/png" in o.get("data", {}) for o in c.outputs) for c in plots]
    assert len(plots) >= 6 and all(shown), shown


def test_zero_step_size_is_exactly_the_base_policy():
    wm, actor, _ = _linear_system()
    obs = torch.randn(4, 3)
    eng = ITPOEngine(actor, None, wm, ITPOConfig(horizon=1, particles=2, lr=0.0))
    assert torch.equal(eng.step(obs), actor(obs).detach())


def test_options_beyond_the_paper_adam_proximity_uncertainty():
    wm, actor, K = _linear_system()
    obs, noise = torch.randn(6, 3), None
    noise = wm.sample_noise(6, 4, 1)
    optimum, base = obs @ K.T, actor(obs).detach()

    def run(**kw):
        eng = ITPOEngine(actor, None, wm, ITPOConfig(horizon=1, particles=4, inner_steps=5, **kw))
        return eng, eng.step(obs, noise)

    # Adam: the first step of each parameter is lr * sign(grad); it still climbs to the optimum
    eng, act = run(lr=0.01, optimizer="adam")
    assert ((act - optimum).norm(dim=-1) < (base - optimum).norm(dim=-1)).all()
    assert eng.opt["t"].tolist() == [5.0] * 6
    eng.reset(6, mask=torch.tensor([True, False, False, False, False, False]))
    assert eng.opt["t"].tolist() == [0.0] + [5.0] * 5
    # proximity: a pull to the pretrained parameters shortens the move
    _, free = run(lr=0.05)
    _, held = run(lr=0.05, proximity=5.0)
    assert ((held - base).norm(dim=-1) < (free - base).norm(dim=-1)).all()
    # uncertainty penalty: J = mean - u * std over particles of the imagined return. Here the
    # transition noise scales with |a[0]|, so the penalty should shrink a[0] (u = 0: plain ITPO).
    noisy = _NoisyLinear(wm.A, wm.B, K)
    noise2 = noisy.sample_noise(6, 16, 2)

    def run_noisy(u):
        cfg = ITPOConfig(horizon=2, particles=16, inner_steps=5, lr=0.02, uncertainty_penalty=u)
        eng = ITPOEngine(actor, None, noisy, cfg)
        return eng, eng.step(obs, noise2)

    e0, a0 = run_noisy(0.0)
    e1, a1 = run_noisy(2.0)
    assert (e1.last["objective_before"] < e0.last["objective_before"]).all()
    assert a1[:, 0].abs().mean() < a0[:, 0].abs().mean()
    with pytest.raises(ConfigError, match="optimizer='rmsprop'"):
        ITPOConfig(optimizer="rmsprop")


def test_pipeline_stage_resumes_from_its_last_checkpoint(tiny_root, tmp_path, caplog, monkeypatch):
    """An interrupted stage (checkpoint written, no result recorded yet) continues from its
    newest checkpoint instead of starting over."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_itpo.pipeline import PipelineConfig, _fit
    from lit_itpo.stages import StageSpec
    from tests.conftest import DID

    root, _ = tiny_root
    caplog.set_level("INFO", logger="lit_itpo.pipeline")
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=str(tmp_path))
    small = {"model.init_args.hidden": [32, 32], "model.init_args.reward_hidden": [16],
             "data.batch_size": 64, "trainer.log_every_n_steps": 2,
             "trainer.enable_progress_bar": False}  # fmt: skip
    conf = "conf/embedded/world_model.yaml"
    to_config = StageSpec.to_config

    def stopped_at_10(spec):  # a SIGTERM after update 10, from a callback (not an input)
        cfg = to_config(spec)
        stop = {"class_path": "tests.fault_helpers.SignalAt", "init_args": {"step": 10}}
        cfg["trainer"]["callbacks"] = [*(cfg["trainer"].get("callbacks") or []), stop]
        return cfg

    monkeypatch.setattr(StageSpec, "to_config", stopped_at_10)
    with pytest.raises(SIGTERMException):
        _fit(cfg, tmp_path, "world_model", conf, 20, small)
    monkeypatch.setattr(StageSpec, "to_config", to_config)
    first = next((tmp_path / "world_model").glob("tb/version_0/checkpoints/last.ckpt"))
    assert torch.load(first, weights_only=False)["global_step"] == 10
    assert not (tmp_path / "world_model" / "metrics.json").exists()
    final = _fit(cfg, tmp_path, "world_model", conf, 20, small).checkpoint
    assert torch.load(final, weights_only=False)["global_step"] == 20
    versions = sorted((tmp_path / "world_model").glob("tb/version_*"))
    assert len(versions) == 1  # the resumed run logs on in its own version
    events = sorted(versions[0].glob("events.out.tfevents.*"))
    assert len(events) == 2
    ev = EventAccumulator(str(events[1]))
    ev.Reload()
    steps = [e.step for e in ev.Scalars("train/loss")]
    assert steps and min(steps) >= 9  # it went on from update 10 (a fresh run logs from 1)
    assert "stage 1/3, world_model (conf/embedded/world_model.yaml): 20 updates" in caplog.text


def test_alpha_choice_takes_the_best_grid_point_or_falls_back():
    from lit_itpo.callbacks.itpo import choose_alpha

    meanflow, diffusion = {1e-4: 12.0, 1e-2: 11.0}, {1e-4: 9.0, 1e-2: 10.0}
    assert choose_alpha(10.0, meanflow) == 1e-4  # the best grid point
    assert choose_alpha(10.0, diffusion) == 0.0  # none beats the base policy: fall back
    assert choose_alpha(10.0, diffusion | {1e-3: 10.5}) == 1e-3


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("alpha_episodes", "0", "alpha_episodes=0"),
        ("itpo_precision", "fp8", "itpo_precision='fp8'"),
    ],
)
def test_pipeline_refuses_bad_options_before_any_stage(tmp_path, capsys, flag, value, named):
    from lit_itpo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["pipeline", "--pipeline.out_dir", str(tmp_path), f"--pipeline.{flag}", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lit-itpo: error:") and named in err
    assert not any(tmp_path.iterdir())  # refused before any stage ran


def test_pipeline_passes_its_data_dir_to_every_stage(tmp_path):
    """A pipeline on a dataset outside the embedded root reaches the ITPO stage with that root
    (the ITPO config names ``data_dir: embedded``; the pipeline's value must win, None too)."""
    from lit_itpo.stages import StageSpec

    spec = StageSpec("validate", "conf/embedded/itpo.yaml", str(tmp_path), "x/y/z-v0", None,
                     ckpt_path="p.ckpt")  # fmt: skip
    cfg = spec.to_config()
    assert cfg["data"]["data_dir"] is None and cfg["data"]["dataset_id"] == "x/y/z-v0"
    assert cfg["trainer"]["logger"]["init_args"]["save_dir"] == str(tmp_path)


def test_pipeline_follows_a_dataset_given_only_by_id(tiny_root, monkeypatch, capsys):
    """Data root, output directory and stage configs follow the dataset id: Minari's root
    (``$MINARI_DATASETS_PATH``) outside the embedded one, ``runs/pipeline/<id>``, and
    ``conf/<env>-<dataset>/`` where it has the stage's file (else the generic one)."""
    from lit_itpo.pipeline import PipelineConfig, check_config, conf_folder

    root, _ = tiny_root
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.chdir(REPO)  # stage configs are found under conf/ of the working directory
    cfg = PipelineConfig(dataset_id=DID)
    assert cfg.data_dir is None and cfg.out_dir == f"runs/pipeline/{DID}/s0"
    assert cfg.policy_config == "conf/embedded/rebrac.yaml"  # there is no conf/hopper-random/
    check_config(cfg)  # the dataset is found under $MINARI_DATASETS_PATH alone
    tuned = PipelineConfig(dataset_id="lit_itpo/hopper/medium-v0")
    assert tuned.world_model_config == "conf/hopper-medium/world_model.yaml"
    assert tuned.itpo_config == "conf/embedded/itpo.yaml"  # no per-dataset ITPO config
    embedded = PipelineConfig()  # the main job: the embedded Pendulum dataset
    assert (embedded.data_dir, embedded.out_dir) == (
        "embedded",
        "runs/pipeline/lit_itpo/pendulum/medium-v0/s0",
    )
    assert embedded.meanflow_config == "conf/pendulum-medium/meanflow.yaml"
    assert embedded.particles == 16 and embedded.alpha_grid == [5e-6, 5e-5, 5e-4, 5e-3, 5e-2]
    sample = PipelineConfig(dataset_id="lit_itpo/halfcheetah/medium-small-v0", seed=2)
    assert sample.out_dir == "runs/pipeline/lit_itpo/halfcheetah/medium-small-v0/s2"
    assert sample.itpo_config == "conf/embedded/itpo.yaml" and sample.particles == 64
    assert sample.alpha_grid == [5e-7, 5e-6, 5e-5, 5e-4]  # the paper's
    given = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir="x", policy_config="p.y")
    assert (given.data_dir, given.out_dir, given.policy_config) == (str(root), "x", "p.y")
    assert conf_folder("mujoco/halfcheetah/medium-v0") == "halfcheetah-medium"


class _Counter(WorldModel):
    """s' = s + 1 in every coordinate, reward 1, an optional constant termination probability."""

    def __init__(self, p_end=None):
        class One(nn.Module):
            def forward(self, s, a):
                return torch.ones(*s.shape[:-1], 1)

        class End(nn.Module):
            def forward(self, s, a, s_next):
                return torch.full((*s.shape[:-1], 1), p_end)

        super().__init__(One(), None if p_end is None else End())

    def noise_shape(self, batch, particles, horizon):
        return (batch, particles, horizon, 1)

    def next(self, obs, action, noise):
        return obs + 1


def test_termination_aware_imagination_masks_what_follows_a_fall():
    """'rule': a step's own reward counts, the rewards after the predicted end do not;
    'model': each later reward is weighted by the learned probability of still running."""
    from lit_itpo.itpo import imagined_returns

    actor, g = nn.Linear(1, 1), 0.9
    params = dict(actor.named_parameters())
    obs, noise = torch.zeros(1), torch.zeros(2, 3, 1)
    falls = lambda s: s[..., 0] >= 2  # noqa: E731  (s: 0 -> 1 -> 2 (falls) -> 3)

    def ret(wm, **kw):
        cfg = ITPOConfig(horizon=3, particles=2, gamma=g, **kw)
        return imagined_returns(params, actor, None, wm, obs, noise, cfg, falls)

    assert torch.allclose(ret(_Counter()), torch.full((2,), 1 + g + g**2))
    assert torch.allclose(ret(_Counter(), termination="rule"), torch.full((2,), 1 + g))
    p = 0.25
    want = 1 + g * (1 - p) + g**2 * (1 - p) ** 2
    assert torch.allclose(ret(_Counter(p), termination="model"), torch.full((2,), want))
    with pytest.raises(ConfigError, match="termination model"):
        ret(_Counter(), termination="model")
    with pytest.raises(ConfigError, match="termination="):
        ITPOConfig(termination="always")


def test_acceptance_test_keeps_a_step_only_if_it_improves_on_fresh_noise():
    """An overshooting step (alpha far too large on J = -||W s + b - K s||^2) lowers the
    imagined return on independent noise: rejected, the episode acts as before. A small step
    raises it: kept."""
    wm, actor, _ = _linear_system()
    obs = torch.randn(4, 3)
    noise, fresh = wm.sample_noise(4, 4, 1), wm.sample_noise(4, 4, 1)
    base = actor(obs).detach()

    def run(lr):
        cfg = ITPOConfig(horizon=1, particles=4, inner_steps=1, lr=lr, accept_z=1.0)
        eng = ITPOEngine(actor, None, wm, cfg)
        return eng, eng.step(obs, noise, accept_noise=fresh)

    eng, act = run(50.0)
    assert not eng.last["accepted"].any() and torch.allclose(act, base, atol=1e-6)
    eng, act = run(0.01)
    assert eng.last["accepted"].all() and not torch.allclose(act, base, atol=1e-6)


@pytest.mark.parametrize("kind", ["diffusion", "meanflow"])
def test_bf16_imagination_moves_the_action_as_float32_does(kind):
    """``precision='bf16-mixed'`` (the rollout and its gradient under bfloat16 autocast) at the
    paper's network sizes: at every alpha of the grid, down to 5e-7, the action still moves off
    the base action, and its move agrees with float32's. Tolerance, per episode: cosine >= 0.98
    with float32's move, and a distance from it within 10% of that move or under half of
    float32's own Monte-Carlo error (how far float32's move shifts with another draw of the M
    noise sequences). benchmarks/studies/itpo_precision.py applies the same rule to trained
    models."""
    from lit_itpo.world_models import MeanFlowTransition, MeanFlowWorldModel

    torch.manual_seed(0)
    o, a, low, high = 17, 6, [-1.0] * 6, [1.0] * 6
    rw = RewardModel(o, a, low, high)  # 3 x 512, as the transitions
    if kind == "diffusion":
        wm = DiffusionWorldModel(DiffusionTransition(o, a, low, high, steps=20, sample_steps=5), rw)
    else:
        wm = MeanFlowWorldModel(MeanFlowTransition(o, a, low, high, sample_steps=1), rw)
    wm.requires_grad_(False)
    actor = TanhActor(o, a, low, high, [256, 256, 256])
    critic = TwinCritic(o, a, [256, 256, 256]).requires_grad_(False)
    obs = torch.randn(4, o)
    noise, other = (wm.sample_noise(4, 16, 5, torch.Generator().manual_seed(s)) for s in (1, 2))
    with torch.no_grad():
        base = actor(obs)

    def move(alpha, precision, eps):
        cfg = ITPOConfig(horizon=5, particles=16, lr=alpha, precision=precision)
        return ITPOEngine(actor, critic, wm, cfg).step(obs, eps) - base

    for alpha in (5e-7, 5e-5, 5e-4):
        m32, m16 = move(alpha, "32-true", noise), move(alpha, "bf16-mixed", noise)
        mc = (move(alpha, "32-true", other) - m32).norm(dim=-1)
        assert bool((m16.norm(dim=-1) > 0).all()), alpha  # alpha 5e-7 still moves the policy
        cos = torch.nn.functional.cosine_similarity(m16, m32, dim=-1)
        err = (m16 - m32).norm(dim=-1)
        assert bool((err > 0).any()), alpha  # the rollout did run in bfloat16
        close = (err < 0.5 * mc) | (err <= 0.1 * m32.norm(dim=-1))
        assert bool((cos >= 0.98).all()) and bool(close.all()), (alpha, cos, err, mc)
    with pytest.raises(ConfigError, match="precision='16-mixed'"):
        ITPOConfig(precision="16-mixed")


def test_an_itpo_journal_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, caplog):
    """A journal write that fails (a full disk; here its folder is a file) warns and returns:
    the evaluation is not stopped by its own safety net. A journal written by other inputs is
    not read back."""
    from lit_itpo.callbacks.journal import Journal

    blocked = tmp_path / "a_file"
    blocked.write_text("")
    journal = Journal(blocked, "diffusion", 0, {"seeds": [1]})
    with caplog.at_level("WARNING", logger="lit_itpo.callbacks.journal"):
        journal.save_result({"x": torch.ones(1)})
    assert "cannot be written" in caplog.text
    Journal(tmp_path, "diffusion", 0, {"seeds": [1]}).save_result({"x": torch.ones(1)})
    assert Journal(tmp_path, "diffusion", 0, {"seeds": [1]}).result["x"].equal(torch.ones(1))
    assert Journal(tmp_path, "diffusion", 0, {"seeds": [2]}).result is None
