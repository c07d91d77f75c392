"""``WorldModelModule``: stage 1, the paper's differentiable world model (arXiv 2603.22430).

Trains the conditional diffusion transition model and the reward model on the offline data;
validation reports one-step state and reward RMSE in raw env units (``val/state_rmse``) and in
per-dimension normalised units (``val/state_rmse_normalised``: each dimension's error over the
dataset's std of that dimension), the H-step open-loop error (raw units) against real held-out
trajectories, and draws imagined vs real trajectories to TensorBoard. :class:`WorldModelStage`
holds what the diffusion and the MeanFlow stages share (losses, optimiser, validation, figure).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDict
from torchmetrics import MeanMetric

from lit_itpo.errors import ConfigError, DivergenceError
from lit_itpo.modules.checkpoints import StageCheckpoint, load_stage
from lit_itpo.modules.optim import adam
from lit_itpo.world_models import (
    DiffusionTransition,
    DiffusionWorldModel,
    RewardModel,
    TerminationModel,
    WorldModel,
)
from lit_itpo.world_models.metrics import (
    imagine_along,
    one_step_errors,
    open_loop_rmse,
    open_loop_windows,
)

FORMAT_VERSION = 1
STAGE = "world_model"


class WorldModelStage(StageCheckpoint, pl.LightningModule):
    """What the world-model stages share. Subclasses build ``self.world_model`` (a
    :class:`WorldModel`), call ``_init_metrics()``, and set ``stage``, ``format_version``,
    ``transition_loss_name``; hparams include ``lr``, ``lr_schedule``, ``eval_horizon``,
    ``eval_windows`` and ``plot_dims``."""

    world_model: WorldModel
    transition_loss_name = "transition_loss"

    # --- setup -------------------------------------------------------------------------------
    def _init_metrics(self) -> None:
        self.val_state_mse = MeanMetric()
        self.val_state_mse_n = MeanMetric()
        self.val_reward_mse = MeanMetric()
        self.val_transition = MeanMetric()

    def trained_parts(self) -> list[torch.nn.Module]:
        """The components this stage fits (and sets data statistics on)."""
        wm = self.world_model
        return [m for m in (wm.transition, wm.reward_model, wm.termination_model) if m is not None]

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and dm.stats:
            for part in self.trained_parts():
                part.set_stats(dm.stats)

    # --- training ----------------------------------------------------------------------------
    def transition_weight(self, batch: TensorDict) -> tuple[torch.Tensor | None, dict]:
        """Per-sample weights ``[B]`` (mean 1) of the transition loss; ``None``: uniform."""
        return None, {}

    def _losses(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        obs, act = batch["observation"], batch["action"]
        wm, parts = self.world_model, self.trained_parts()
        weight, info = self.transition_weight(batch)
        loss, info_t = wm.transition.loss(obs, act, batch["next", "observation"], weight)
        info = info | info_t
        if wm.reward_model in parts:
            l_r, info_r = wm.reward_model.loss(obs, act, batch["next", "reward"])
            loss, info = loss + l_r, info | info_r
        if wm.termination_model in parts:
            l_d, info_d = wm.termination_model.loss(
                obs, act, batch["next", "observation"], batch["next", "terminated"]
            )
            loss, info = loss + l_d, info | info_d
        return loss, info

    def training_step(self, batch: TensorDict, batch_idx: int) -> torch.Tensor:
        loss, info = self._losses(batch)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"World-model loss became {loss.item()} at step {self.global_step}; check the "
                "dataset for extreme values or lower model.lr."
            )
        self.log_train({"train/loss": loss.detach()} | {f"train/{k}": v for k, v in info.items()})
        return loss

    def configure_optimizers(self):
        params = [p for part in self.trained_parts() for p in part.parameters()]
        # fp16's gradient scaler needs Lightning's own clipping, which refuses a fused optimiser
        fp16 = self._trainer is not None and str(self.trainer.precision).startswith("16")
        opt = adam(params, self.hparams.lr, fused=not fp16)
        if self.hparams.lr_schedule == "constant" or not self.trainer or self.trainer.max_steps < 1:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip here rather than in Lightning's precision plugin, which refuses any fused
        optimiser under mixed precision (it assumes the optimiser unscales fp16 gradients
        itself). Without a gradient scaler (float32, bfloat16) gradients are in their own
        units, so clipping them directly is what Lightning would do."""
        raw = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer or the optimiser
        if not gradient_clip_val or not raw.defaults.get("fused"):
            return super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)

    # --- validation --------------------------------------------------------------------------
    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        wm = self.world_model
        err = one_step_errors(wm, batch, seed=1000 + batch_idx)
        self.val_state_mse.update(err["state"])
        self.val_state_mse_n.update(err["state_normalised"])
        self.val_reward_mse.update(err["reward"])
        loss, _ = wm.transition.loss(
            batch["observation"], batch["action"], batch["next", "observation"]
        )
        self.val_transition.update(loss)

    def on_validation_epoch_end(self) -> None:
        self.log("val/state_rmse", self.val_state_mse.compute().sqrt(), prog_bar=True)
        self.log("val/state_rmse_normalised", self.val_state_mse_n.compute().sqrt())
        self.log("val/reward_rmse", self.val_reward_mse.compute().sqrt())
        self.log(f"val/{self.transition_loss_name}", self.val_transition.compute())
        for m in (
            self.val_state_mse,
            self.val_state_mse_n,
            self.val_reward_mse,
            self.val_transition,
        ):
            m.reset()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "val_episodes"):
            return
        episodes = dm.val_episodes()
        wins = open_loop_windows(episodes, self.hparams.eval_horizon, self.hparams.eval_windows)
        if wins is not None:
            errs = open_loop_rmse(self.world_model, wins.to(self.device))
            self.log(f"val/open_loop_rmse_h{self.hparams.eval_horizon}", errs[-1])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._figure(episodes)

    def _figure(self, episodes: list[TensorDict]) -> None:
        logger = self.logger
        if logger is None or not hasattr(logger.experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = max(episodes, key=lambda e: e.shape[0])[:200].to(self.device)
        pred = imagine_along(self.world_model, ep, self.hparams.eval_horizon).cpu()
        real = ep["next", "observation"].cpu()
        dims = [d for d in self.hparams.plot_dims if d < real.shape[-1]]
        fig, axes = plt.subplots(
            len(dims), 1, figsize=(8, 2.2 * len(dims)), sharex=True, squeeze=False
        )
        for ax, d in zip(axes[:, 0], dims, strict=True):
            ax.plot(real[:, d], label="real", color="black", lw=1.2)
            ax.plot(
                pred[:, d],
                label=f"imagined (re-anchored every {self.hparams.eval_horizon})",
                color="tab:orange",
                lw=1.0,
                ls="--",
            )
            ax.set_ylabel(f"s[{d}]")
        axes[0, 0].legend(loc="upper right", fontsize=8)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        logger.experiment.add_figure("val/imagined_vs_real", fig, global_step=self.global_step)
        plt.close(fig)


class WorldModelModule(WorldModelStage):
    """Diffusion transition model + reward model.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        diffusion_steps: K diffusion steps of training.
        sample_steps: reverse steps when sampling (default K); fewer use a respaced schedule
            (benchmarks/studies/world_model_k.py: the accuracy/cost curve behind the default).
        hidden: denoiser widths.
        reward_hidden: reward MLP widths (paper: 3 x 512).
        prediction: denoiser target, ``"v"`` (default), ``"eps"`` or ``"x0"``
            (:class:`~lit_itpo.world_models.DiffusionTransition` says why v).
        variance: reverse-step variance (``"beta"`` or ``"beta_tilde"``).
        lr: Adam learning rate of both models (paper: 3e-4).
        lr_schedule: ``"cosine"`` decays to 0 over ``max_steps`` (sharpens the fitted mean),
            ``"constant"`` keeps it.
        eval_horizon: H of the open-loop error (paper's ITPO horizon: 5).
        eval_windows: at most this many held-out windows per validation.
        plot_dims: state dimensions drawn in the trajectory figure.
        termination: also learn p(terminated | s, a, s') (beyond the paper; off by default).
        mean_hidden: widths of a deterministic mean head; the diffusion then models the
            residual (beyond the paper; off by default; :class:`~lit_itpo.world_models.parts.
            Conditioning`).
    """

    stage = STAGE
    format_version = FORMAT_VERSION
    transition_loss_name = "denoise_mse"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        diffusion_steps: int = 10,
        sample_steps: int | None = None,
        hidden: list[int] = (512, 512, 512),
        reward_hidden: list[int] = (512, 512, 512),
        prediction: str = "v",
        variance: str = "beta",
        lr: float = 3e-4,
        lr_schedule: str = "cosine",
        eval_horizon: int = 5,
        eval_windows: int = 1024,
        plot_dims: list[int] = (0, 1, 2),
        termination: bool = False,
        mean_hidden: list[int] | None = None,
    ):
        super().__init__()
        if lr <= 0 or lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"model.lr={lr} must be > 0 and lr_schedule={lr_schedule!r} one "
                "of 'cosine', 'constant'."
            )
        if eval_horizon < 1:
            raise ConfigError(f"model.eval_horizon={eval_horizon} must be >= 1.")
        if diffusion_steps < 1 or not 1 <= (sample_steps or diffusion_steps) <= diffusion_steps:
            raise ConfigError(
                f"model.diffusion_steps={diffusion_steps} must be >= 1 and "
                f"model.sample_steps={sample_steps} between 1 and diffusion_steps (or null)."
            )
        self.save_hyperparameters()
        transition = DiffusionTransition(
            obs_dim,
            action_dim,
            action_low,
            action_high,
            diffusion_steps,
            list(hidden),
            prediction,
            variance=variance,
            sample_steps=sample_steps,
            mean_hidden=mean_hidden,
        )
        reward = RewardModel(obs_dim, action_dim, action_low, action_high, list(reward_hidden))
        term = (
            TerminationModel(obs_dim, action_dim, action_low, action_high) if termination else None
        )
        self.world_model = DiffusionWorldModel(transition, reward, term)
        self._init_metrics()


def load_world_model(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location: str | torch.device = "cpu",
) -> DiffusionWorldModel:
    """The frozen :class:`DiffusionWorldModel` of a ``WorldModelModule`` checkpoint, after
    checking stage, format, dims and dataset (:class:`~lit_itpo.errors.CheckpointError`)."""
    module = load_stage(
        path,
        WorldModelModule,
        stage=STAGE,
        format_version=FORMAT_VERSION,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
        map_location=map_location,
    )
    return module.world_model
