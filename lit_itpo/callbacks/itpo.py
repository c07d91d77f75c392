"""``ITPOCallback``: base policy vs ITPO on the same evaluation episodes (arXiv 2603.22430).

Runs at the end of each validation (inside ``fit`` or under ``lit-itpo validate --ckpt_path
<policy checkpoint>``): the base policy's episodes as :class:`EpisodeEvalCallback` does, then,
for each configured world model, the same seeds with ITPO adapting per-episode parameters at
every step (:class:`lit_itpo.itpo.ITPOEngine`). ``validate`` runs under inference mode by
default: ITPO configs set ``trainer.inference_mode: false`` and the work here is also wrapped in
``torch.inference_mode(False)`` + ``torch.enable_grad()``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_itpo.ascent import TrueObjective
from lit_itpo.callbacks.evaluation import EpisodeEvalCallback, summary_line
from lit_itpo.callbacks.journal import (
    JOURNAL_DIR,
    Journal,
    ReplayDiverged,
    checkpoint_digest,
    module_digest,
)
from lit_itpo.envs import TERMINATION_RULES, termination_rule
from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig, ITPOEngine, episode_generators, episode_noise
from lit_itpo.stats import paired_gain_ci
from lit_itpo.utils import atomic_write_json

log = logging.getLogger(__name__)


def _env_limit(env_spec: str | None) -> int | None:
    """The env's own episode limit from the dataset's EnvSpec JSON (None if unknown)."""
    try:
        return json.loads(env_spec).get("max_episode_steps")
    except (TypeError, ValueError, AttributeError):
        return None


def noiseless(world_model) -> bool:
    """A world model whose rollout draws no noise (an exact model): one particle suffices."""
    return world_model.noise_shape(1, 1, 1)[-1] == 0


def choose_alpha(base_return: float, returns: dict[float, float]) -> float:
    """The step size with the highest held-out mean return, or 0 (the base policy) when none
    beats the base policy's (the paper's fallback)."""
    best = max(returns, key=returns.get)
    return best if returns[best] > base_return else 0.0


class ITPOCallback(EpisodeEvalCallback):
    """Evaluate the base policy and ITPO with each given world model on the same seeds.

    Takes any policy stage with ``policy_parts()`` (ReBRAC, TD3+BC, IQL: actor and critic; BC:
    actor only, no terminal value).

    Args:
        world_model_ckpt: a ``WorldModelModule`` checkpoint (diffusion DWM), or None.
        meanflow_ckpt: a ``MeanFlowModule`` checkpoint (one-step MeanFlow), or None.
        exact_model: the task's own differentiable dynamics and reward as a third arm,
            ``exact`` (:mod:`lit_itpo.world_models.exact`): ``"auto"`` (the built-in model of
            the dataset's env, e.g. Pendulum) or the dotted path of a ``WorldModel`` subclass;
            None: off. At least one of the three; each given model runs on the same seeds. A
            model without noise (``noise_shape(...)[-1] == 0``) is rolled out with one particle:
            its M particles would all be the same rollout.
        itpo: :class:`~lit_itpo.itpo.ITPOConfig` (H, M, E, alpha, gamma and the options beyond
            the paper); its reward transform is replaced by the policy's.
        alpha_grid: choose alpha instead of evaluating one: every step size of the grid runs on
            the same episodes in one batch (``itpo/<model>/alpha_<a>/return_mean`` each), and
            ``itpo/<model>/alpha`` is the best one, or 0 where none beats the base policy's mean
            return (the paper's fallback). Use held-out seeds for it.
        sample_steps: diffusion sampling steps for ITPO (default: the checkpoint's).
        sample_variance: reverse variance for ITPO, ``"beta"`` or ``"beta_tilde"`` (default:
            the checkpoint's); benchmarks/studies/world_model_k.py measures the trade-off.
        noise_seed: seeds the world-model noise; episode ``i`` draws from its own stream
            (``noise_seed``, env seed ``seed + i``), so an episode's ITPO actions do not depend
            on which other episodes share its batch or its DDP rank.
        ascent_every: every this many env steps, the true slope of each episode's ITPO step:
            the directional derivative of J_true (the H-step objective with the simulator set
            to the real state, :mod:`lit_itpo.ascent`) along it; ``itpo/<model>/ascent_rate``
            is the share of those steps that raised J_true (chance 50%). Only on envs whose
            state is set from the observation (HalfCheetah, Hopper, Walker2d); None: off.
        figure_every: episode 0's imagined rollout is drawn every this many steps (first 200).
        journal_every: every this many env steps, the episodes so far are journaled under
            ``<default_root_dir>/itpo_journal/`` (:mod:`lit_itpo.callbacks.journal`): the same
            evaluation, run again after a stop, continues from there and gives the
            uninterrupted run's result (finished world models are not run again). None: off.
        plot_dims: state dimensions in that figure.
        num_episodes, seed, max_episode_steps, every_n_validations: as the evaluation callback.

    Metrics (besides the base policy's ``eval/*``): per world model ``itpo/<model>/*`` (return,
    normalised score, ``gain`` = ITPO - base per episode, paired, with its 95% bootstrap
    interval ``gain_ci_low`` / ``gain_ci_high`` (NaN, n/a, with fewer than
    ``stats.MIN_PAIRED_EPISODES`` = 5 episodes), in normalised points where the dataset has
    reference scores, else in return), fallbacks, net evaluations per step, the imagined
    objective before / after the inner steps, and ``time/itpo_<model>_ms_per_step``.
    """

    def __init__(
        self,
        world_model_ckpt: str | None = None,
        meanflow_ckpt: str | None = None,
        exact_model: str | None = None,
        itpo: ITPOConfig | None = None,
        alpha_grid: list[float] | None = None,
        sample_steps: int | None = None,
        sample_variance: str | None = None,
        noise_seed: int = 0,
        ascent_every: int | None = 10,
        figure_every: int = 25,
        journal_every: int | None = 50,
        plot_dims: list[int] = (0, 1),
        num_episodes: int = 10,
        seed: int = 1_000_000,
        max_episode_steps: int | None = None,
        every_n_validations: int = 1,
    ):
        super().__init__(num_episodes, seed, max_episode_steps, every_n_validations)
        if world_model_ckpt is None and meanflow_ckpt is None and exact_model is None:
            raise ConfigError(
                "ITPOCallback needs world_model_ckpt (the checkpoint of `lit-itpo fit --config "
                "conf/<dataset>/world_model.yaml`), meanflow_ckpt (of .../meanflow.yaml) or "
                "exact_model (auto: the env's own equations, where built in)."
            )
        self.ckpts = {
            name: path
            for name, path in (
                ("diffusion", world_model_ckpt),
                ("meanflow", meanflow_ckpt),
                ("exact", exact_model),
            )
            if path is not None
        }
        self.sample_steps, self.sample_variance = sample_steps, sample_variance
        self.cfg = ITPOConfig() if itpo is None else itpo
        if alpha_grid is not None and not (
            alpha_grid and all(math.isfinite(a) and a > 0 for a in alpha_grid)
        ):
            raise ConfigError(
                f"ITPOCallback alpha_grid={alpha_grid} must list finite step sizes > 0 (the "
                "base policy, alpha 0, is always compared), e.g. [5e-7, 5e-6, 5e-5, 5e-4]."
            )
        self.alpha_grid = None if alpha_grid is None else [float(a) for a in alpha_grid]
        self.noise_seed = noise_seed
        if figure_every < 1 or any(n is not None and n < 1 for n in (ascent_every, journal_every)):
            raise ConfigError(
                f"ITPOCallback figure_every={figure_every} must be >= 1, and ascent_every="
                f"{ascent_every} and journal_every={journal_every} >= 1 (or null: off)."
            )
        self.ascent_every, self.journal_every = ascent_every, journal_every
        self.figure_every, self.plot_dims = figure_every, list(plot_dims)
        self.world_models: dict = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a ``sample_steps`` above the diffusion checkpoint's trained K before the run
        starts, with the pipeline's line (it was a traceback once the episodes were due)."""
        from lit_itpo.modules.checkpoints import read_hparams
        from lit_itpo.world_models.diffusion import check_sample_steps

        path = self.ckpts.get("diffusion")
        if path is not None and self.sample_steps is not None:
            check_sample_steps(
                self.sample_steps, read_hparams(path).get("diffusion_steps"),
                "ITPOCallback sample_steps", path, "train a world model with more diffusion_steps",
            )  # fmt: skip

    def _load(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lit_itpo.modules.meanflow import load_meanflow
        from lit_itpo.modules.world_model import load_world_model
        from lit_itpo.world_models.exact import make_exact_model

        dm = trainer.datamodule
        loaders = {"diffusion": load_world_model, "meanflow": load_meanflow}
        for name, path in self.ckpts.items():
            if name in self.world_models:
                continue
            if name == "exact":
                self.world_models[name] = make_exact_model(path, dm.env_spec).to(pl_module.device)
            else:
                wm = loaders[name](
                    path,
                    obs_dim=dm.obs_dim,
                    action_dim=dm.action_dim,
                    dataset_id=dm.dataset_id,
                    map_location=pl_module.device,
                )
                if name == "diffusion" and (
                    self.sample_steps is not None or self.sample_variance is not None
                ):
                    wm.transition.set_sample_steps(
                        self.sample_steps or wm.transition.steps, self.sample_variance
                    )
                self.world_models[name] = wm

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.due(trainer):
            return
        if not hasattr(pl_module, "policy_parts"):
            raise ConfigError(
                f"ITPOCallback needs a policy stage (ReBRAC, TD3+BC, IQL or BC: a module with "
                f"policy_parts()); got {type(pl_module).__name__}."
            )
        self._load(trainer, pl_module)
        parts = pl_module.policy_parts()
        dm = trainer.datamodule
        grid = self.alpha_grid or [self.cfg.lr]
        seeds = [self.seed + i for _ in grid for i in range(self.num_episodes)]
        alphas = torch.tensor([a for a in grid for _ in range(self.num_episodes)])
        mine = self.episodes_for_rank(trainer.global_rank, trainer.world_size, len(seeds))
        moves = bool((alphas > 0).any())
        terminated = self._termination_rule(dm.env_spec)
        truth = None
        if moves and self.ascent_every is not None and TrueObjective.settable(dm.env_spec):
            truth = TrueObjective(
                dm.env_spec, parts.actor, parts.critic, self.cfg.horizon, self.cfg.gamma,
                parts.reward_scale, parts.reward_bias,
            )  # fmt: skip
        folder = self._journal_folder(trainer)
        common = {
            "seeds": [seeds[i] for i in mine], "rank": trainer.global_rank,
            "world": trainer.world_size, "env_spec": dm.env_spec, "dataset": dm.dataset_id,
            "max_episode_steps": self.max_episode_steps,
            "policy": module_digest(parts.actor, parts.critic),
        }  # fmt: skip
        # run_episodes steps the envs under torch.no_grad(); the ITPO engine differentiates with
        # torch.func.grad, which ignores an outer no_grad (but not inference mode, hence this).
        with torch.inference_mode(False), torch.enable_grad():
            journal = Journal(folder, "base", trainer.global_rank, common)
            base = self._kept(trainer, pl_module, journal)
            if base is None:
                base = self.evaluate(trainer, pl_module, pl_module.act)
                journal.save_result(base)
            journals = [journal]
            metrics = self.scores("eval", base, dm)
            rank_zero_info(summary_line("eval", trainer.global_step, metrics))
            self.last = {"base": base}
            for name, wm in self.world_models.items():
                cfg = replace(self.cfg, particles=1) if noiseless(wm) else self.cfg
                inputs = common | {
                    "model": name, "checkpoint": checkpoint_digest(self.ckpts[name]),
                    "itpo": asdict(cfg), "alphas": alphas[mine].tolist(),
                    "noise_seed": self.noise_seed, "ascent_every": self.ascent_every,
                    "truth": truth is not None, "figure_every": self.figure_every,
                    "sample": [self.sample_steps, self.sample_variance],
                }  # fmt: skip
                journal = Journal(folder, name, trainer.global_rank, inputs)
                journals.append(journal)
                done = self._kept(trainer, pl_module, journal)
                if done is None:
                    run = partial(
                        self._run_itpo, trainer, pl_module, name, wm, cfg, parts, terminated,
                        truth, seeds, alphas, mine, journal,
                    )  # fmt: skip
                    try:
                        done = run()
                    except ReplayDiverged:
                        log.warning(
                            "%s: the replayed episodes did not reach the recorded state (another "
                            "machine?): running %s's episodes from the start",
                            journal.path,
                            name,
                        )
                        journal.drop()
                        done = run()
                    journal.save_result(done)
                res, stats = done["res"], done["stats"]
                self.last[name] = res
                m = self._itpo_metrics(name, res, base, alphas, dm)
                m[f"itpo/{name}/fallbacks"] = torch.tensor(float(done["fallbacks"]))
                m[f"time/itpo_{name}_ms_per_step"] = torch.tensor(
                    1e3 * stats["time"] / max(stats["steps"], 1)
                )
                m[f"itpo/{name}/nfe_per_step"] = torch.tensor(
                    float(wm.nfe_per_step * self.cfg.horizon * self.cfg.inner_steps)
                )
                if self.cfg.accept_z > 0 and stats["accepted"]:
                    m[f"itpo/{name}/accept_rate"] = torch.stack(stats["accepted"]).mean()
                if truth is not None:  # every rank, so the gather meets (some may have none)
                    slopes = stats["slopes"] or [torch.zeros(0, dtype=torch.float64)]
                    m |= self._ascent_metrics(name, torch.cat(slopes), pl_module)
                if stats["before"]:
                    m[f"itpo/{name}/objective_before"] = torch.stack(stats["before"]).nanmean()
                    m[f"itpo/{name}/objective_after"] = torch.stack(stats["after"]).nanmean()
                metrics |= m
                if trainer.is_global_zero and self.alpha_grid is None and moves:
                    self._figure(trainer, pl_module, name, base, res, stats)
        pl_module.log_dict({k: v.float() for k, v in metrics.items()}, rank_zero_only=False)
        log_dir = trainer.log_dir or trainer.default_root_dir  # a broadcast: every rank asks
        if trainer.is_global_zero:
            self._write_episodes(trainer, log_dir, seeds, alphas)
        for journal in journals:  # the results are written: nothing left to continue
            journal.remove()

    def _journal_folder(self, trainer: pl.Trainer) -> Path | None:
        if self.journal_every is None:
            return None
        return Path(trainer.default_root_dir) / JOURNAL_DIR

    @staticmethod
    def _kept(trainer: pl.Trainer, pl_module: pl.LightningModule, journal: Journal):
        """The journal's finished episodes, when every rank has its own (the evaluation's
        gathers must meet: either all ranks run the episodes or none)."""
        have = journal.result is not None
        if trainer.world_size > 1:
            flag = torch.tensor([float(have)], device=pl_module.device)
            have = bool(pl_module.all_gather(flag).min() > 0)
        return journal.result if have else None

    def _run_itpo(
        self, trainer, pl_module, name, wm, cfg, parts, terminated, truth, seeds, alphas, mine,
        journal: Journal,
    ) -> dict:  # fmt: skip
        """One world model's ITPO episodes (continued from ``journal``'s stopped run, if any):
        ``{"res": evaluate()'s per-episode values, "stats": what the metrics and the figure
        read, "fallbacks": count}``."""
        engine = ITPOEngine.for_policy(parts, wm, cfg, terminated)
        engine.set_step_sizes(alphas[mine])
        moves = bool((alphas > 0).any())
        stats = {"steps": 0, "time": 0.0, "before": [], "after": [], "imagined": []}
        stats["slopes"], stats["accepted"] = [], []
        gens = episode_generators([seeds[i] for i in mine], self.noise_seed, pl_module.device)
        replay = journal.partial
        taken: list[torch.Tensor] = []  # every action of this batch so far (CPU)

        def state() -> dict:
            return {
                "params": engine.params, "opt": engine.opt, "fallbacks": engine.fallbacks,
                "gens": [g.get_state() for g in gens], "stats": stats,
            }  # fmt: skip

        def restore(saved: dict) -> None:
            engine.params = {k: v.to(pl_module.device) for k, v in saved["params"].items()}
            opt = saved["opt"]
            engine.opt = {
                s: {k: v.to(pl_module.device) for k, v in opt[s].items()} for s in ("m", "v")
            } | {"t": opt["t"]}
            engine.fallbacks = saved["fallbacks"]
            for g, st in zip(gens, saved["gens"], strict=True):
                g.set_state(st)
            stats.clear()
            stats.update(saved["stats"])

        def act(obs):
            j = len(taken)
            if replay is not None and j < len(replay["actions"]):
                if j == len(replay["actions"]) - 1:  # the state after this step was saved
                    if not torch.equal(obs.cpu(), replay["obs"]):
                        raise ReplayDiverged
                    restore(replay["state"])
                taken.append(replay["actions"][j])
                if bar is not None:
                    bar.update(1)
                return replay["actions"][j].to(obs.device)
            measure = truth is not None and stats["steps"] % self.ascent_every == 0
            before = engine.start_params(obs.shape[0]) if measure else None
            t0 = time.perf_counter()
            noise = episode_noise(wm, gens, engine.cfg.particles, self.cfg.horizon)
            check = (
                episode_noise(wm, gens, engine.cfg.particles, self.cfg.horizon)
                if self.cfg.accept_z > 0
                else None
            )
            action = engine.step(obs, noise, accept_noise=check)
            stats["time"] += time.perf_counter() - t0
            if "accepted" in engine.last:
                stats["accepted"].append(engine.last["accepted"].float().mean())
            if measure:
                stats["slopes"].append(truth.step_slopes(before, engine.params, obs))
            if moves:  # at alpha 0 the world model is not run at all
                stats["before"].append(engine.last["objective_before"].mean())
                stats["after"].append(engine.objective(obs, noise).mean())
            if moves and stats["steps"] % self.figure_every == 0 and stats["steps"] < 200:
                stats["imagined"].append((stats["steps"], self._imagine(engine, obs, noise)))
            stats["steps"] += 1
            taken.append(action.detach().cpu().clone())
            if self.journal_every is not None and len(taken) % self.journal_every == 0:
                journal.save_partial(taken, obs.detach().cpu().clone(), state())
            if bar is not None:
                bar.update(1)
            return action

        bar = self._progress(trainer, f"ITPO, {name} world model", len(seeds))
        try:
            res = self.evaluate(trainer, pl_module, act, seeds)
        finally:
            if bar is not None:
                bar.close()
        return {"res": res, "stats": stats, "fallbacks": engine.fallbacks}

    def _write_episodes(
        self, trainer, log_dir: str, seeds: list[int], alphas: torch.Tensor
    ) -> None:
        """Every episode's return, base and per world model, beside the run's logs
        (``itpo_episodes.json``): the paired data behind the means, for analyses across runs."""
        n = self.num_episodes
        rec = {
            "step": trainer.global_step,
            "seeds": seeds[:n],
            "base": self.last["base"]["return"].tolist(),
            "itpo": {
                name: {"alpha": alphas.tolist(), "seeds": seeds, "return": res["return"].tolist()}
                for name, res in self.last.items()
                if name != "base"
            },
        }
        atomic_write_json(rec, f"{log_dir}/itpo_episodes.json")

    def _itpo_metrics(self, name: str, res: dict, base: dict, alphas: torch.Tensor, dm) -> dict:
        """One world model's scores: paired gains over the episodes (one evaluation), or per
        step size of the grid and the chosen alpha (``alpha_grid``)."""
        n = self.num_episodes
        base_value = self._paired_value(base, dm)
        if self.alpha_grid is None:
            m = self.scores(f"itpo/{name}", res, dm)
            gain = self._paired_value(res, dm) - base_value
            m[f"itpo/{name}/gain"] = gain.mean()
            lo, hi = paired_gain_ci(gain.tolist())  # NaN: too few episodes for one
            m[f"itpo/{name}/gain_ci_low"] = torch.tensor(lo)
            m[f"itpo/{name}/gain_ci_high"] = torch.tensor(hi)
            if "eval/normalized_score" in (base_scores := self.scores("eval", base, dm)):
                m[f"itpo/{name}/improvement"] = (
                    m[f"itpo/{name}/normalized_score"] - base_scores["eval/normalized_score"]
                )
            return m
        m, returns = {}, {}
        for g, alpha in enumerate(self.alpha_grid):
            part = {k: v[g * n : (g + 1) * n] for k, v in res.items() if v.dim() == 1}
            m |= self.scores(f"itpo/{name}/alpha_{alpha:g}", part, dm)
            returns[alpha] = float(part["return"].mean())
        m[f"itpo/{name}/alpha"] = torch.tensor(choose_alpha(float(base["return"].mean()), returns))
        return m

    def _termination_rule(self, env_spec: str | None):
        """The env family's termination rule when ``itpo.termination`` is ``"rule"``."""
        if self.cfg.termination != "rule":
            return None
        env_id = json.loads(env_spec).get("id", "") if env_spec else ""
        rule = termination_rule(env_id)
        if rule is None:
            raise ConfigError(
                f"ITPO termination='rule': no known termination rule for env '{env_id}' (known: "
                f"{sorted(TERMINATION_RULES)}); use 'model' (a world model trained with "
                "termination) or 'none'."
            )
        return rule

    @staticmethod
    def _ascent_metrics(name: str, slopes: torch.Tensor, pl_module) -> dict:
        """Share of measured ITPO steps whose true slope is positive, over every rank."""
        measured = ~torch.isnan(slopes)
        counts = torch.tensor(
            [float((slopes[measured] > 0).sum()), float(measured.sum())], device=pl_module.device
        )
        if pl_module.trainer.world_size > 1:
            counts = pl_module.all_gather(counts).sum(0)
        ups, total = counts.tolist()
        out = {f"itpo/{name}/ascent_states": torch.tensor(total)}
        if total > 0:
            out[f"itpo/{name}/ascent_rate"] = torch.tensor(ups / total)
        return out

    @staticmethod
    def _paired_value(res: dict, dm) -> torch.Tensor:
        """Per-episode normalised score where the dataset has reference scores, else return."""
        if dm.ref_scores is None:
            return res["return"].double()
        return EpisodeEvalCallback.normalized_scores(res, dm)

    def _progress(self, trainer: pl.Trainer, desc: str, episodes: int):
        """A bar over the env steps of an ITPO evaluation (rank 0, when the trainer shows
        bars): these episodes run inside one validation step, whose own bar stands still."""
        if not (trainer.is_global_zero and trainer.progress_bar_callback is not None):
            return None
        from tqdm.auto import tqdm

        total = self.max_episode_steps or _env_limit(trainer.datamodule.env_spec)
        # not a terminal (a log file): every redraw is a line, so one per tenth of the episode
        rare = (
            {}
            if sys.stderr.isatty()
            else {"miniters": max(1, (total or 10) // 10), "mininterval": 0}
        )
        return tqdm(
            total=total, desc=f"{desc} ({episodes} episodes)", unit="step", leave=False, **rare
        )

    @staticmethod
    @torch.no_grad()
    def _imagine(engine: ITPOEngine, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Episode 0's imagined next states ``[M, H, obs_dim]`` under its adapted parameters."""
        from torch.func import functional_call

        params = {k: v[0] for k, v in engine.params.items()} | engine.buffers
        td = engine.world_model.rollout(
            obs[:1],
            lambda s: functional_call(engine.actor, params, (s,)),
            engine.cfg.horizon,
            engine.cfg.particles,
            noise=noise[:1],
        )
        return td["next", "observation"][0].cpu()

    def _figure(self, trainer, pl_module, name: str, base: dict, res: dict, stats: dict) -> None:
        """Per-step gain (real: cumulative ITPO - base reward on the same seeds; imagined: the
        objective after - before the inner steps) and episode 0's imagined vs real states."""
        logger = trainer.logger
        if logger is None or not hasattr(logger.experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        T = max(base["step_reward"].shape[1], res["step_reward"].shape[1])
        pad = lambda x: torch.nn.functional.pad(x, (0, T - x.shape[1]))  # noqa: E731
        gap = (pad(res["step_reward"]) - pad(base["step_reward"])).cumsum(1).mean(0)
        imagined_gain = (torch.stack(stats["after"]) - torch.stack(stats["before"])).cpu()
        dims = [d for d in self.plot_dims if d < res["next_observation"].shape[-1]]
        fig, axes = plt.subplots(2 + len(dims), 1, figsize=(8, 2.0 * (2 + len(dims))))
        axes[0].plot(gap.numpy(), color="tab:green")
        axes[0].axhline(0, color="k", lw=0.6)
        axes[0].set_ylabel("cum. reward\nITPO - base")
        axes[1].plot(imagined_gain.numpy(), color="tab:purple", lw=0.8)
        axes[1].axhline(0, color="k", lw=0.6)
        axes[1].set_ylabel("imagined J\nafter - before")
        real = res["next_observation"][0].cpu()  # episode 0 on rank 0
        H = self.cfg.horizon
        horizon_end = min(real.shape[0], 200 + H)
        for ax, d in zip(axes[2:], dims, strict=True):
            ax.plot(real[:horizon_end, d].numpy(), color="black", lw=1.0, label="real")
            for t, imag in stats["imagined"]:
                xs = list(range(t, t + H))
                # one particle (an exact model): no spread to draw
                mean, std = imag[:, :, d].mean(0), imag[:, :, d].std(0, correction=0)
                ax.plot(xs, mean.numpy(), color="tab:orange", lw=1.0)
                ax.fill_between(
                    xs, (mean - std).numpy(), (mean + std).numpy(), alpha=0.3, color="tab:orange"
                )
            ax.set_ylabel(f"s[{d}]")
        if dims:
            axes[2].plot([], [], color="tab:orange", label="imagined (adapted policy, mean ± std)")
            axes[2].legend(loc="upper right", fontsize=7)
        axes[-1].set_xlabel("env step")
        fig.suptitle(f"ITPO, {name} world model", fontsize=9)
        fig.tight_layout()
        logger.experiment.add_figure(f"itpo/{name}/per_step", fig, global_step=trainer.global_step)
        plt.close(fig)
