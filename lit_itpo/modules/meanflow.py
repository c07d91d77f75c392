"""``MeanFlowModule``: stage 3, the tilted one-step MeanFlow world model (the cheap one).

Trains a :class:`~lit_itpo.world_models.MeanFlowTransition` on the offline data, each sample's
loss weighted by a *tilt* toward a trained policy (``policy_ckpt``;
:mod:`lit_itpo.world_models.tilt`), and reuses the reward model of the diffusion world-model
stage (``world_model_ckpt``, frozen) or trains its own. Exposes the same imagined-rollout API as
the diffusion model (``self.world_model`` is a :class:`~lit_itpo.world_models.WorldModel`), so
ITPO takes either.

Validation (beside the shared one-step / H-step errors on held-out data): with a policy, the
one-step error on the *policy's own* state-action distribution (transitions of real episodes of
that policy, collected once), where the tilt should help; with ``world_model_ckpt``, the
diffusion model's errors on the same data and noise seeds (``val/diffusion/*``), side by side.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import torch
from tensordict import TensorDict

from lit_itpo.errors import CheckpointError, ConfigError
from lit_itpo.modules.checkpoints import load_stage, read_hparams
from lit_itpo.modules.world_model import WorldModelStage
from lit_itpo.world_models import RewardModel, TerminationModel
from lit_itpo.world_models.meanflow import MeanFlowTransition, MeanFlowWorldModel
from lit_itpo.world_models.metrics import one_step_errors, open_loop_rmse, open_loop_windows
from lit_itpo.world_models.tilt import PolicyTilt, QTilt

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STAGE = "meanflow"


class MeanFlowModule(WorldModelStage):
    """Tilted one-step MeanFlow dynamics (+ reward model).

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        policy_ckpt: policy-stage checkpoint for the tilt and the policy-distribution error
            (``None``: untilted, no policy metrics).
        world_model_ckpt: diffusion world-model checkpoint whose (frozen) reward model is
            reused and whose errors are logged beside ours (``None``: train a reward model).
        tilt: ``"policy"`` (``w ∝ pi(a|s)^eta``) or ``"q"`` (``w ∝ exp(beta Q / mean|Q|)``
            with the policy checkpoint's critic).
        eta: policy-tilt exponent; ``None`` calibrates it once at the start of ``fit`` so the
            effective sample size on the data is ``target_ess``; ``0`` is untilted.
        target_ess: the calibration's effective sample size (0, 1).
        sigma: std of the Gaussian around the deterministic actor (normalised action units).
        q_beta: the Q tilt's inverse temperature.
        weight_clip: largest normalised weight (``None``: no clipping).
        hidden, reward_hidden: network widths.
        sample_steps: 1 (one-step) or more MeanFlow steps per imagined transition.
        equal_fraction, time_mean, time_std, adaptive_p, adaptive_c, target_velocity: MeanFlow
            training (:class:`~lit_itpo.world_models.MeanFlowTransition`, whose checks raise
            here as :class:`~lit_itpo.errors.ConfigError`); ``target_velocity: model`` needs
            ``equal_fraction > 0``.
        lr, lr_schedule, eval_horizon, eval_windows, plot_dims, termination: as
            :class:`~lit_itpo.modules.WorldModelModule`.
        policy_episodes: real episodes of the policy collected for the policy-distribution
            error (seeds ``policy_episode_seed + i``; disjoint from evaluation seeds).
        policy_episode_steps: cut those episodes there (default: the env's limit).
        mean_hidden: widths of a deterministic mean head; the flow then models the residual
            (beyond the paper; off by default; as :class:`~lit_itpo.modules.WorldModelModule`).
    """

    stage = STAGE
    format_version = FORMAT_VERSION
    transition_loss_name = "meanflow_loss"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        policy_ckpt: str | None = None,
        world_model_ckpt: str | None = None,
        tilt: str = "policy",
        eta: float | None = None,
        target_ess: float = 0.5,
        sigma: float = 0.2,
        q_beta: float = 1.0,
        weight_clip: float | None = 10.0,
        hidden: list[int] = (512, 512, 512),
        reward_hidden: list[int] = (512, 512, 512),
        sample_steps: int = 1,
        equal_fraction: float = 0.75,
        time_mean: float = -0.4,
        time_std: float = 1.0,
        adaptive_p: float = 0.0,
        adaptive_c: float = 1e-2,
        target_velocity: str = "sample",
        lr: float = 3e-4,
        lr_schedule: str = "cosine",
        eval_horizon: int = 5,
        eval_windows: int = 1024,
        plot_dims: list[int] = (0, 1, 2),
        termination: bool = False,
        policy_episodes: int = 5,
        policy_episode_seed: int = 2_000_000,
        policy_episode_steps: int | None = None,
        mean_hidden: list[int] | None = None,
    ):
        super().__init__()
        if tilt not in ("policy", "q"):
            raise ConfigError(f"model.tilt={tilt!r} must be 'policy' or 'q'.")
        if eta is not None and eta < 0:
            raise ConfigError(f"model.eta={eta} must be >= 0 (or null to calibrate it).")
        if not 0.0 < target_ess < 1.0 or sigma <= 0 or q_beta < 0:
            raise ConfigError(
                f"model.target_ess={target_ess} must be in (0, 1), sigma={sigma} > 0 and "
                f"q_beta={q_beta} >= 0."
            )
        if weight_clip is not None and weight_clip <= 1:
            raise ConfigError(f"model.weight_clip={weight_clip} must be > 1 (or null).")
        if lr <= 0 or lr_schedule not in ("cosine", "constant") or eval_horizon < 1:
            raise ConfigError(
                f"model.lr={lr} must be > 0, lr_schedule={lr_schedule!r} 'cosine' or "
                f"'constant', eval_horizon={eval_horizon} >= 1."
            )
        if sample_steps < 1 or policy_episodes < 0:
            raise ConfigError(
                f"model.sample_steps={sample_steps} must be >= 1 and policy_episodes="
                f"{policy_episodes} >= 0."
            )
        self.save_hyperparameters()
        try:  # the transition validates its own training options
            transition = MeanFlowTransition(
                obs_dim,
                action_dim,
                action_low,
                action_high,
                list(hidden),
                sample_steps,
                equal_fraction,
                time_mean,
                time_std,
                adaptive_p,
                adaptive_c,
                target_velocity,
                mean_hidden,
            )
        except ValueError as exc:
            raise ConfigError(f"model.{exc}") from exc
        reward = RewardModel(obs_dim, action_dim, action_low, action_high, list(reward_hidden))
        term = (
            TerminationModel(obs_dim, action_dim, action_low, action_high) if termination else None
        )
        self.world_model = MeanFlowWorldModel(transition, reward, term)
        if world_model_ckpt is not None:  # reused and frozen (the weights arrive in setup)
            reward.requires_grad_(False)
        self._init_metrics()
        # Not submodules: the tilt's policy and the diffusion baseline stay out of checkpoints.
        self._aux: dict = {}

    # --- setup -------------------------------------------------------------------------------
    def trained_parts(self) -> list[torch.nn.Module]:
        parts = super().trained_parts()
        if self.hparams.world_model_ckpt is not None:
            parts.remove(self.world_model.reward_model)  # reused, frozen
        return parts

    def setup(self, stage: str) -> None:
        """Read the referenced checkpoints, once. ``fit`` needs them (the reused reward model,
        copied in here before any DDP wrapping; the tilt's policy). A stage-3 checkpoint holds
        every weight it runs with, so under validate / test they only add side metrics and a
        missing file is skipped."""
        hp = self.hparams
        fit = stage == "fit"
        found = lambda p: p is not None and (fit or Path(p).is_file())  # noqa: E731
        if found(hp.world_model_ckpt) and "diffusion" not in self._aux:
            self._aux["diffusion"] = self._reuse_reward(hp.world_model_ckpt, copy=fit)
        if found(hp.policy_ckpt) and "policy" not in self._aux:
            from lit_itpo.modules.policy import load_policy

            self._aux["policy"] = load_policy(
                hp.policy_ckpt,
                obs_dim=hp.obs_dim,
                action_dim=hp.action_dim,
                dataset_id=hp.dataset_id or None,
            ).policy_parts()
        for name in ("world_model_ckpt", "policy_ckpt"):
            if hp[name] is not None and not found(hp[name]):
                log.info("%s %s is gone: its side metrics are skipped", name, hp[name])
        super().setup(stage)

    def _reuse_reward(self, path: str, copy: bool):
        """The diffusion world model of ``path`` (checked against our data); with ``copy``, its
        reward model (shape and weights) becomes ours, frozen."""
        from lit_itpo.modules.world_model import FORMAT_VERSION as WM_VERSION
        from lit_itpo.modules.world_model import STAGE as WM_STAGE
        from lit_itpo.modules.world_model import WorldModelModule

        hp = self.hparams
        wm_hp = read_hparams(path)
        wm = load_stage(
            path,
            WorldModelModule,
            stage=WM_STAGE,
            format_version=WM_VERSION,
            obs_dim=hp.obs_dim,
            action_dim=hp.action_dim,
            dataset_id=hp.dataset_id or None,
            hparams=wm_hp,
        ).world_model
        if copy:
            self.world_model.reward_model = deepcopy(wm.reward_model).requires_grad_(False)
            hp.reward_hidden = list(wm_hp["reward_hidden"])  # the shape actually built
        return wm

    def _to_device(self) -> None:
        """The read checkpoints' networks follow the module to its device."""
        if "diffusion" in self._aux:
            self._aux["diffusion"].to(self.device)
        if "policy" in self._aux:
            parts = self._aux["policy"]
            for net in (parts.actor, parts.critic):
                if net is not None:
                    net.to(self.device)

    def on_fit_start(self) -> None:
        self._to_device()
        if "tilt" not in self._aux:
            self._aux["tilt"] = self._make_tilt()

    def on_validation_start(self) -> None:
        self._to_device()

    def _make_tilt(self):
        hp = self.hparams
        policy = self._aux.get("policy")
        if policy is None:
            if hp.eta not in (None, 0.0) or hp.tilt == "q":
                raise ConfigError(
                    f"model.tilt={hp.tilt!r} with eta={hp.eta} needs model.policy_ckpt; pass a "
                    "policy checkpoint or set model.eta=0 for the untilted model."
                )
            return None
        if hp.tilt == "q":
            if policy.critic is None:
                raise CheckpointError(
                    f"model.tilt='q' needs a policy with a critic; {hp.policy_ckpt} has none."
                )
            q = lambda s, a: policy.critic(s, a).min(0).values  # noqa: E731
            return QTilt(q, hp.q_beta, hp.weight_clip)
        if hp.eta == 0.0:
            return None
        tilt = PolicyTilt(
            policy.actor, hp.action_low, hp.action_high, hp.eta or 0.0, hp.sigma, hp.weight_clip
        ).to(self.device)
        if hp.eta is None:
            dm = self.trainer.datamodule
            n = min(8192, dm.train_data.shape[0])
            idx = torch.randperm(dm.train_data.shape[0], generator=torch.Generator().manual_seed(0))
            sample = dm.train_data[idx[:n].to(dm.train_data.device)].to(self.device)
            tilt.calibrate(sample["observation"], sample["action"], hp.target_ess)
        return tilt

    # --- training ----------------------------------------------------------------------------
    def transition_weight(self, batch: TensorDict) -> tuple[torch.Tensor | None, dict]:
        tilt = self._aux.get("tilt")
        if tilt is None:
            return None, {}
        w, ess = tilt.weights(batch["observation"], batch["action"])
        info = {"tilt/ess": ess, "tilt/max_weight": w.max()}
        if isinstance(tilt, PolicyTilt):
            info["tilt/eta"] = torch.tensor(tilt.eta)
        return w, info

    # --- validation --------------------------------------------------------------------------
    def policy_transitions(self) -> TensorDict | None:
        """Real transitions of the policy's own episodes (collected once, cached)."""
        hp, policy = self.hparams, self._aux.get("policy")
        dm = getattr(self.trainer, "datamodule", None)
        if policy is None or hp.policy_episodes == 0 or dm is None or dm.env_spec is None:
            return None
        if "policy_data" not in self._aux:
            from lit_itpo.evaluation import run_episodes

            res = run_episodes(
                policy.actor,
                dm.env_spec,
                [hp.policy_episode_seed + i for i in range(hp.policy_episodes)],
                obs_keys=dm.info.obs_keys,
                max_episode_steps=hp.policy_episode_steps,
                device=self.device,
                return_transitions=True,
            )
            self._aux["policy_data"] = res["transitions"].to(self.device)
        return self._aux["policy_data"]

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        with torch.no_grad():
            self._side_metrics()

    def _side_metrics(self) -> None:
        """Our errors on the policy's transitions, and the diffusion model's errors on the same
        data (it is frozen: computed once, cached)."""
        metrics = {}
        pol = self.policy_transitions()
        if pol is not None:
            metrics |= _errors("val/policy_", self.world_model, pol)
        if "diffusion" in self._aux:
            if "baseline" not in self._aux:
                self._aux["baseline"] = self._diffusion_baseline(pol)
            metrics |= self._aux["baseline"]
        if metrics:
            self.log_dict(metrics)

    def _diffusion_baseline(self, pol: TensorDict | None) -> dict[str, torch.Tensor]:
        wm, dm, H = self._aux["diffusion"], self.trainer.datamodule, self.hparams.eval_horizon
        out = _errors("val/diffusion/", wm, dm.val_data.to(self.device))
        if pol is not None:
            out |= _errors("val/diffusion/policy_", wm, pol)
        wins = open_loop_windows(dm.val_episodes(), H, self.hparams.eval_windows)
        if wins is not None:
            out[f"val/diffusion/open_loop_rmse_h{H}"] = open_loop_rmse(wm, wins.to(self.device))[-1]
        return out


def _errors(prefix: str, wm, data: TensorDict) -> dict[str, torch.Tensor]:
    err = one_step_errors(wm, data)
    return {
        f"{prefix}state_rmse": err["state"].mean().sqrt(),
        f"{prefix}state_rmse_normalised": err["state_normalised"].mean().sqrt(),
        f"{prefix}reward_rmse": err["reward"].mean().sqrt(),
    }


def load_meanflow(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location: str | torch.device = "cpu",
) -> MeanFlowWorldModel:
    """The frozen :class:`MeanFlowWorldModel` of a ``MeanFlowModule`` checkpoint, after checking
    stage, format, dims and dataset (:class:`~lit_itpo.errors.CheckpointError`)."""
    # the referenced checkpoints are not needed to rebuild the model: its weights are all here
    module = load_stage(
        path,
        MeanFlowModule,
        stage=STAGE,
        format_version=FORMAT_VERSION,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
        map_location=map_location,
        world_model_ckpt=None,
        policy_ckpt=None,
    )
    return module.world_model
