"""``ITPOCallback``: base policy vs ITPO on the same evaluation episodes (arXiv 2603.22430).

Runs at the end of each validation (inside ``fit`` or under ``lit-itpo validate --ckpt_path
<policy checkpoint>``): the base policy's episodes as :class:`EpisodeEvalCallback` does, then,
for each configured world model, the same seeds with ITPO adapting per-episode parameters at
every step (:class:`lit_itpo.itpo.ITPOEngine`). ``validate`` runs under inference mode by
default: ITPO configs set ``trainer.inference_mode: false`` and the work here is also wrapped in
``torch.inference_mode(False)`` + ``torch.enable_grad()``.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from lit_itpo.callbacks.evaluation import EpisodeEvalCallback
from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig, ITPOEngine, episode_generators, episode_noise


class ITPOCallback(EpisodeEvalCallback):
    """Evaluate the base policy and ITPO with each given world model on the same seeds.

    Args:
        world_model_ckpt: a ``WorldModelModule`` checkpoint (diffusion DWM), or None.
        meanflow_ckpt: a ``MeanFlowModule`` checkpoint (one-step MeanFlow), or None; at least
            one of the two. Each given world model is evaluated on the same seeds.
        sample_steps: diffusion sampling steps for ITPO (default: the checkpoint's).
        sample_variance: reverse variance for ITPO, ``"beta"`` or ``"beta_tilde"`` (default:
            the checkpoint's); benchmarks/world_model_k.py measures the trade-off.
        horizon, particles, inner_steps, lr, gamma: :class:`~lit_itpo.itpo.ITPOConfig`.
        reset_every_step, optimizer, proximity, uncertainty_penalty: options beyond the paper
            (off by default), :class:`~lit_itpo.itpo.ITPOConfig`.
        noise_seed: seeds the world-model noise; episode ``i`` draws from its own stream
            (``noise_seed``, env seed ``seed + i``), so an episode's ITPO actions do not depend
            on which other episodes share its batch or its DDP rank.
        figure_every: episode 0's imagined rollout is drawn every this many steps (first 200).
        plot_dims: state dimensions in that figure.
        num_episodes, seed, max_episode_steps, every_n_validations: as the evaluation callback.
    """

    def __init__(
        self,
        world_model_ckpt: str | None = None,
        meanflow_ckpt: str | None = None,
        sample_steps: int | None = None,
        sample_variance: str | None = None,
        horizon: int = 5,
        particles: int = 64,
        inner_steps: int = 1,
        lr: float = 5e-5,
        gamma: float = 0.99,
        reset_every_step: bool = False,
        optimizer: str = "sgd",
        proximity: float = 0.0,
        uncertainty_penalty: float = 0.0,
        noise_seed: int = 0,
        figure_every: int = 25,
        plot_dims: list[int] = (0, 1),
        num_episodes: int = 10,
        seed: int = 1_000_000,
        max_episode_steps: int | None = None,
        every_n_validations: int = 1,
    ):
        super().__init__(num_episodes, seed, max_episode_steps, every_n_validations)
        if world_model_ckpt is None and meanflow_ckpt is None:
            raise ConfigError(
                "ITPOCallback needs world_model_ckpt (the checkpoint of `lit-itpo fit --config "
                "conf/<dataset>/world_model.yaml`) or meanflow_ckpt (of .../meanflow.yaml)."
            )
        self.ckpts = {
            name: path
            for name, path in (("diffusion", world_model_ckpt), ("meanflow", meanflow_ckpt))
            if path is not None
        }
        self.sample_steps, self.sample_variance = sample_steps, sample_variance
        self.cfg = ITPOConfig(
            horizon=horizon,
            particles=particles,
            inner_steps=inner_steps,
            lr=lr,
            gamma=gamma,
            reset_every_step=reset_every_step,
            optimizer=optimizer,
            proximity=proximity,
            uncertainty_penalty=uncertainty_penalty,
        )
        self.noise_seed = noise_seed
        if figure_every < 1:
            raise ConfigError(f"ITPOCallback figure_every={figure_every} must be >= 1.")
        self.figure_every, self.plot_dims = figure_every, list(plot_dims)
        self.world_models: dict = {}

    def _load(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lit_itpo.modules.meanflow import load_meanflow
        from lit_itpo.modules.world_model import load_world_model

        dm = trainer.datamodule
        loaders = {"diffusion": load_world_model, "meanflow": load_meanflow}
        for name, path in self.ckpts.items():
            if name not in self.world_models:
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
        if not (hasattr(pl_module, "actor") and hasattr(pl_module, "critic")):
            raise ConfigError(
                f"ITPOCallback needs a policy with a deterministic `actor` and twin `critic` "
                f"(ReBRACModule); got {type(pl_module).__name__}."
            )
        self._load(trainer, pl_module)
        hp = pl_module.hparams
        cfg = ITPOConfig(
            **{
                **self.cfg.__dict__,
                "reward_scale": hp.get("reward_scale", 1.0),
                "reward_bias": hp.get("reward_bias", 0.0),
            }
        )
        dm = trainer.datamodule
        # run_episodes steps the envs under torch.no_grad(); the ITPO engine differentiates with
        # torch.func.grad, which ignores an outer no_grad (but not inference mode, hence this).
        with torch.inference_mode(False), torch.enable_grad():
            base = self.evaluate(trainer, pl_module, pl_module.act)
            metrics = self.scores("eval", base, dm)
            self.last = {"base": base}
            for name, wm in self.world_models.items():
                engine = ITPOEngine(pl_module.actor, pl_module.critic, wm, cfg)
                stats = {"steps": 0, "time": 0.0, "before": [], "after": [], "imagined": []}
                mine = self.episodes_for_rank(trainer.global_rank, trainer.world_size)
                gens = episode_generators(
                    [self.seed + i for i in mine], self.noise_seed, pl_module.device
                )

                def act(obs, engine=engine, stats=stats, gens=gens, wm=wm):
                    t0 = time.perf_counter()
                    noise = episode_noise(wm, gens, cfg.particles, cfg.horizon)
                    action = engine.step(obs, noise)
                    stats["time"] += time.perf_counter() - t0
                    stats["before"].append(engine.last["objective_before"].mean())
                    stats["after"].append(engine.objective(obs, noise).mean())
                    if stats["steps"] % self.figure_every == 0 and stats["steps"] < 200:
                        stats["imagined"].append(
                            (stats["steps"], self._imagine(engine, obs, noise))
                        )
                    stats["steps"] += 1
                    return action

                res = self.evaluate(trainer, pl_module, act)
                self.last[name] = res
                m = self.scores(f"itpo/{name}", res, dm)
                if f"itpo/{name}/normalized_score" in m:
                    m[f"itpo/{name}/improvement"] = (
                        m[f"itpo/{name}/normalized_score"] - metrics["eval/normalized_score"]
                    )
                m[f"itpo/{name}/fallbacks"] = torch.tensor(float(engine.fallbacks))
                m[f"time/itpo_{name}_ms_per_step"] = torch.tensor(
                    1e3 * stats["time"] / max(stats["steps"], 1)
                )
                m[f"itpo/{name}/nfe_per_step"] = torch.tensor(
                    float(wm.nfe_per_step * cfg.horizon * cfg.inner_steps)
                )
                if stats["before"]:
                    m[f"itpo/{name}/objective_before"] = torch.stack(stats["before"]).mean()
                    m[f"itpo/{name}/objective_after"] = torch.stack(stats["after"]).mean()
                metrics |= m
                if trainer.is_global_zero:
                    self._figure(trainer, pl_module, name, base, res, stats)
        pl_module.log_dict({k: v.float() for k, v in metrics.items()}, rank_zero_only=False)

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
                mean, std = imag[:, :, d].mean(0), imag[:, :, d].std(0)
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
