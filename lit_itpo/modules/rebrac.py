"""``ReBRACModule``: stage 2, the paper's base policy (Tarasov et al. 2023).

Deterministic tanh actor (3 x 256), twin LayerNorm critics (3 x 256, fused), actor and critic BC
penalties, target policy smoothing (0.2, clipped 0.5), actor and target updates every
``policy_freq`` critic steps, soft targets (tau 0.005) as frozen submodules updated with
``lerp_``. Manual optimisation (two optimisers). Losses: :mod:`lit_itpo.policies.rebrac`.

Deviation: states are standardised with the training split's statistics (as TD3+BC does;
CORL's ReBRAC leaves Gym states raw); the normaliser is a buffer inside actor and critic, so the
modules still take raw states (ITPO and the world models call them on raw states).
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError, DatasetFormatError
from lit_itpo.modules.checkpoints import (
    StageCheckpoint,
    check_compatible,
    load_stage,
    read_hparams,
)
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.policies import rebrac_actor_loss, rebrac_critic_loss

FORMAT_VERSION = 1
STAGE = "policy"


def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


class ReBRACModule(StageCheckpoint, pl.LightningModule):
    """ReBRAC.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        beta_actor: beta1, actor BC coefficient (per dataset, ReBRAC App. B).
        beta_critic: beta2, critic BC coefficient.
        gamma: discount.
        tau: soft target rate.
        policy_noise, noise_clip: target policy smoothing.
        policy_freq: critic steps per actor (and target) update.
        actor_lr, critic_lr: Adam learning rates (Gym 1e-3, AntMaze 1e-4).
        hidden: actor and critic widths.
        critic_layer_norm: LayerNorm in the critics (ReBRAC: yes).
        reward_scale, reward_bias: reward transform for training (AntMaze: x100).
        normalize_q: scale the actor's Q term by 1 / mean|Q|.
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
        beta_actor: float = 0.001,
        beta_critic: float = 0.01,
        gamma: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        hidden: list[int] = (256, 256, 256),
        critic_layer_norm: bool = True,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        normalize_q: bool = True,
    ):
        super().__init__()
        for name, val in (("gamma", gamma), ("tau", tau)):
            if not 0.0 < val <= 1.0:
                raise ConfigError(f"model.{name}={val} must be in (0, 1].")
        if policy_freq < 1 or actor_lr <= 0 or critic_lr <= 0 or beta_actor < 0 or beta_critic < 0:
            raise ConfigError(
                f"model.policy_freq={policy_freq} must be >= 1, learning rates "
                f"({actor_lr}, {critic_lr}) > 0 and BC coefficients ({beta_actor}, "
                f"{beta_critic}) >= 0."
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.actor = TanhActor(obs_dim, action_dim, action_low, action_high, list(hidden))
        self.critic = TwinCritic(obs_dim, action_dim, list(hidden), critic_layer_norm)
        self.actor_target = _frozen_copy(self.actor)
        self.critic_target = _frozen_copy(self.critic)
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and dm.stats:
            for m in (self.actor, self.critic, self.actor_target, self.critic_target):
                m.obs_norm.set(dm.stats["obs_mean"], dm.stats["obs_std"])

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action for raw observations (evaluation)."""
        return self.actor(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def configure_optimizers(self):
        return [
            torch.optim.Adam(self.actor.parameters(), lr=self.hparams.actor_lr),
            torch.optim.Adam(self.critic.parameters(), lr=self.hparams.critic_lr),
        ]

    @torch.no_grad()
    def update_targets(self) -> None:
        tau = self.hparams.tau
        for src, dst in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for p, tp in zip(src.parameters(), dst.parameters(), strict=True):
                tp.lerp_(p, tau)

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        hp = self.hparams
        opt_actor, opt_critic = self.optimizers()
        c_loss, info = rebrac_critic_loss(
            self.critic,
            self.critic_target,
            self.actor_target,
            batch,
            gamma=hp.gamma,
            beta_critic=hp.beta_critic,
            policy_noise=hp.policy_noise,
            noise_clip=hp.noise_clip,
            action_low=self.action_low,
            action_high=self.action_high,
            reward_scale=hp.reward_scale,
            reward_bias=hp.reward_bias,
        )
        if not torch.isfinite(c_loss):
            raise DatasetFormatError(
                f"ReBRAC critic loss became {c_loss.item()} at step {self.global_step}; lower "
                "model.critic_lr or check the dataset's rewards."
            )
        opt_critic.zero_grad(set_to_none=True)
        self.manual_backward(c_loss)
        opt_critic.step()
        # global_step counts critic updates (= batches): the actor steps its raw optimiser,
        # which Lightning does not count, so ``max_steps`` means training batches as in CORL.
        if self.global_step % hp.policy_freq == 0:
            self.critic.requires_grad_(False)
            a_loss, a_info = rebrac_actor_loss(
                self.actor, self.critic, batch, beta_actor=hp.beta_actor, normalize_q=hp.normalize_q
            )
            self.critic.requires_grad_(True)
            opt_actor.zero_grad(set_to_none=True)
            self.manual_backward(a_loss)
            opt_actor.optimizer.step()
            self.update_targets()
            info |= a_info
        self.log_train({f"train/{k}": v for k, v in info.items()})

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        q = self.critic(batch["observation"], batch["action"]).min(0).values
        bc = (self.actor(batch["observation"]) - batch["action"]).pow(2).sum(-1).mean()
        n = batch.shape[0]
        self.log_dict(
            {"val/q_data_mean": q.mean(), "val/actor_bc_mse": bc}, batch_size=n, sync_dist=True
        )


def load_policy(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location="cpu",
) -> ReBRACModule:
    """A frozen, eval-mode policy module from a policy-stage checkpoint (guards as
    :func:`lit_itpo.modules.checkpoints.check_compatible`)."""
    from lit_itpo.errors import CheckpointError

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
    classes = {"ReBRACModule": ReBRACModule}
    cls = classes.get(hp.get("algorithm", ""))
    if cls is None:
        raise CheckpointError(
            f"Checkpoint {path} is a policy of algorithm '{hp.get('algorithm')}', which has no "
            f"loader here; known: {sorted(classes)}."
        )
    return load_stage(
        path, cls, stage=STAGE, format_version=FORMAT_VERSION, map_location=map_location, hparams=hp
    )
