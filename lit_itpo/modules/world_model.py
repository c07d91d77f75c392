"""``WorldModelModule``: stage 1, the paper's differentiable world model (arXiv 2603.22430).

Trains the conditional diffusion transition model and the reward model on the offline data;
validation reports one-step state and reward RMSE in raw units (comparable to the paper's
"halfcheetah < 0.6") and the H-step open-loop error against real held-out trajectories, and
draws imagined vs real trajectories to TensorBoard.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDict
from torchmetrics import MeanMetric

from lit_itpo.errors import ConfigError, DatasetFormatError
from lit_itpo.modules.checkpoints import StageCheckpoint, check_compatible, read_hparams
from lit_itpo.world_models import (
    DiffusionTransition,
    DiffusionWorldModel,
    RewardModel,
    TerminationModel,
)

FORMAT_VERSION = 1
STAGE = "world_model"


def open_loop_windows(
    episodes: list[TensorDict], horizon: int, max_windows: int
) -> TensorDict | None:
    """Non-overlapping ``[N, H]`` windows of real transitions that do not cross an episode end."""
    wins = []
    for ep in episodes:
        T = ep.shape[0]
        for start in range(0, T - horizon + 1, horizon):
            w = ep[start : start + horizon]
            if not w["next", "done"][:-1].any():
                wins.append(w)
    if not wins:
        return None
    out = torch.stack(wins[:max_windows])
    return out


class WorldModelModule(StageCheckpoint, pl.LightningModule):
    """Diffusion transition model + reward model.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        diffusion_steps: K diffusion steps of training.
        sample_steps: reverse steps when sampling (default K); fewer use a respaced schedule
            (see benchmarks/world_model_k.py for the accuracy/cost curve behind the default).
        hidden: denoiser widths.
        reward_hidden: reward MLP widths (paper: 3 x 512).
        prediction: ``"eps"`` or ``"x0"`` denoiser target.
        variance: reverse-step variance (``"beta"`` or ``"beta_tilde"``).
        lr: Adam learning rate of both models (paper: 3e-4).
        lr_schedule: ``"cosine"`` decays to 0 over ``max_steps`` (sharpens the fitted mean),
            ``"constant"`` keeps it.
        eval_horizon: H of the open-loop error (paper's ITPO horizon: 5).
        eval_windows: at most this many held-out windows per validation.
        plot_dims: state dimensions drawn in the trajectory figure.
        termination: also learn p(terminated | s, a, s') (beyond the paper; off by default).
    """

    stage = STAGE
    format_version = FORMAT_VERSION

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
        prediction: str = "eps",
        variance: str = "beta",
        lr: float = 3e-4,
        lr_schedule: str = "cosine",
        eval_horizon: int = 5,
        eval_windows: int = 1024,
        plot_dims: list[int] = (0, 1, 2),
        termination: bool = False,
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
        )
        reward = RewardModel(obs_dim, action_dim, action_low, action_high, list(reward_hidden))
        term = (
            TerminationModel(obs_dim, action_dim, action_low, action_high) if termination else None
        )
        self.world_model = DiffusionWorldModel(transition, reward, term)
        self.val_state_mse = MeanMetric()
        self.val_reward_mse = MeanMetric()
        self.val_denoise = MeanMetric()

    # --- setup -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and dm.stats:
            self.world_model.transition.set_stats(dm.stats)
            self.world_model.reward_model.set_stats(dm.stats)
            if self.world_model.termination_model is not None:
                self.world_model.termination_model.set_stats(dm.stats)

    # --- training ----------------------------------------------------------------------------
    def _losses(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        obs, act = batch["observation"], batch["action"]
        wm = self.world_model
        l_t, info_t = wm.transition.loss(obs, act, batch["next", "observation"])
        l_r, info_r = wm.reward_model.loss(obs, act, batch["next", "reward"])
        loss, info = l_t + l_r, info_t | info_r
        if wm.termination_model is not None:
            l_d, info_d = wm.termination_model.loss(
                obs, act, batch["next", "observation"], batch["next", "terminated"]
            )
            loss, info = loss + l_d, info | info_d
        return loss, info

    def training_step(self, batch: TensorDict, batch_idx: int) -> torch.Tensor:
        loss, info = self._losses(batch)
        if not torch.isfinite(loss):
            raise DatasetFormatError(
                f"World-model loss became {loss.item()} at step {self.global_step}; check the "
                "dataset for extreme values or lower model.lr."
            )
        self.log_train({"train/loss": loss.detach()} | {f"train/{k}": v for k, v in info.items()})
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.world_model.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant" or not self.trainer or self.trainer.max_steps < 1:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- validation --------------------------------------------------------------------------
    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        wm = self.world_model
        obs, act = batch["observation"], batch["action"]
        g = torch.Generator(device=obs.device).manual_seed(1000 + batch_idx)
        noise = torch.randn(
            (obs.shape[0], wm.transition.steps, obs.shape[-1]), generator=g, device=obs.device
        )
        pred = wm.next(obs, act, noise)
        self.val_state_mse.update((pred - batch["next", "observation"]).pow(2).mean(-1))
        self.val_reward_mse.update(
            (wm.reward(obs, act) - batch["next", "reward"]).pow(2).squeeze(-1)
        )
        denoise, _ = wm.transition.loss(obs, act, batch["next", "observation"])
        self.val_denoise.update(denoise)

    def on_validation_epoch_end(self) -> None:
        self.log("val/state_rmse", self.val_state_mse.compute().sqrt(), prog_bar=True)
        self.log("val/reward_rmse", self.val_reward_mse.compute().sqrt())
        self.log("val/denoise_mse", self.val_denoise.compute())
        for m in (self.val_state_mse, self.val_reward_mse, self.val_denoise):
            m.reset()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "val_episodes"):
            return
        episodes = dm.val_episodes()
        errs = self.open_loop_error(episodes)
        if errs is not None:
            self.log(f"val/open_loop_rmse_h{self.hparams.eval_horizon}", errs[-1])
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._figure(episodes)

    @torch.no_grad()
    def open_loop_error(self, episodes: list[TensorDict]) -> torch.Tensor | None:
        """RMSE ``[H]`` of states predicted open-loop with the real actions, per horizon step."""
        H = self.hparams.eval_horizon
        wins = open_loop_windows(episodes, H, self.hparams.eval_windows)
        if wins is None:
            return None
        wins = wins.to(self.device)
        g = torch.Generator(device=self.device).manual_seed(7)
        noise = self.world_model.sample_noise(wins.shape[0], 1, H, generator=g)[:, 0]
        s = wins["observation"][:, 0]
        errs = []
        for j in range(H):
            s = self.world_model.next(s, wins["action"][:, j], noise[:, j])
            errs.append((s - wins["next", "observation"][:, j]).pow(2).mean())
        return torch.stack(errs).sqrt()

    @torch.no_grad()
    def imagine_along(self, episode: TensorDict, horizon: int) -> torch.Tensor:
        """Open-loop predictions ``[T, obs_dim]`` re-anchored on the real state every H steps."""
        ep = episode.to(self.device)
        T = ep.shape[0]
        g = torch.Generator(device=self.device).manual_seed(11)
        preds = []
        for start in range(0, T, horizon):
            s = ep["observation"][start : start + 1]
            for j in range(start, min(start + horizon, T)):
                noise = torch.randn(
                    (1, self.world_model.transition.steps, s.shape[-1]),
                    generator=g,
                    device=self.device,
                )
                s = self.world_model.next(s, ep["action"][j : j + 1], noise)
                preds.append(s)
        return torch.cat(preds)

    def _figure(self, episodes: list[TensorDict]) -> None:
        logger = self.logger
        if logger is None or not hasattr(logger.experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = max(episodes, key=lambda e: e.shape[0])[:200]
        pred = self.imagine_along(ep, self.hparams.eval_horizon).cpu()
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
    hp = read_hparams(path)
    check_compatible(
        path,
        hp,
        stage=STAGE,
        format_version=FORMAT_VERSION,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
    )
    module = WorldModelModule.load_from_checkpoint(
        path, map_location=map_location, weights_only=True
    )
    wm = module.world_model.eval()
    wm.requires_grad_(False)
    return wm
