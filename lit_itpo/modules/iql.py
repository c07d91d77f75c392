"""``IQLModule``: IQL (Kostrikov et al. 2021), a baseline beside ReBRAC.

Expectile value, twin critics (no LayerNorm) with a soft target copy, and a Tanh-Gaussian actor
trained by advantage-weighted regression; the deterministic action is the Tanh-Gaussian's
``tanh(loc)`` (TorchRL's deterministic sample). One update steps all three networks on one
summed loss (:func:`lit_itpo.policies.iql_losses`, TorchRL's ``IQLLoss`` math on plain modules:
tests/test_policy.py checks it against ``IQLLoss`` on the same weights). States are standardised
inside each network (raw states in).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError, DivergenceError
from lit_itpo.itpo import PolicyParts
from lit_itpo.modules.actor_critic import frozen_copy
from lit_itpo.modules.checkpoints import StageCheckpoint, set_obs_normalisers
from lit_itpo.modules.optim import adam
from lit_itpo.nets import GaussianActor, TanhGaussianMode, TwinCritic, ValueNet
from lit_itpo.policies import iql_losses

# 2: plain actor / critic / value modules (1 kept them inside TorchRL's loss)
FORMAT_VERSION = 2


class IQLModule(StageCheckpoint, pl.LightningModule):
    """IQL.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        expectile, temperature: IQL's tau and beta (Gym-MuJoCo: 0.7, 3.0).
        gamma, tau, lr, hidden: IQL paper / CORL defaults (3e-4, 2 x 256).
        reward_scale: rewards x this for training (CORL: 1000 / (max return - min return)).
        compile: ``torch.compile`` the update's losses (:func:`~lit_itpo.modules.checkpoints.
            compile_losses`); off: on the CPUs measured it does not pay (stage_speed --compile).
    """

    stage = "policy"
    format_version = FORMAT_VERSION
    compiled_losses = ("loss",)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        expectile: float = 0.7,
        temperature: float = 3.0,
        gamma: float = 0.99,
        tau: float = 0.005,
        lr: float = 3e-4,
        hidden: list[int] = (256, 256),
        reward_scale: float = 1.0,
        compile: bool = False,
    ):
        super().__init__()
        if not 0 < expectile < 1 or temperature <= 0:
            raise ConfigError(
                f"model.expectile={expectile} must be in (0, 1) and temperature={temperature} > 0."
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.actor = GaussianActor(obs_dim, action_dim, list(hidden))
        self.critic = TwinCritic(obs_dim, action_dim, list(hidden), layer_norm=False)
        self.critic_target = frozen_copy(self.critic)
        self.value = ValueNet(obs_dim, list(hidden))
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))

    def setup(self, stage: str) -> None:
        set_obs_normalisers(self, stage, (self.actor, self.critic, self.critic_target, self.value))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The Tanh-Gaussian's deterministic action for raw observations (TorchRL's
        ``deterministic_sample``, computed as :meth:`policy_parts`' actor does, so ITPO at
        alpha 0 acts exactly as this)."""
        return self.policy_parts().actor(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)

    def policy_parts(self) -> PolicyParts:
        """The Tanh-Gaussian's mode as the deterministic actor (its parameters are the
        actor's), the twin critic and the training reward scale."""
        mode = TanhGaussianMode(self.actor, self.action_low, self.action_high)
        return PolicyParts(mode, self.critic, self.hparams.reward_scale, 0.0)

    def configure_optimizers(self):
        lr = self.hparams.lr
        return [adam(m.parameters(), lr) for m in (self.actor, self.critic, self.value)]

    def loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        """IQL's three losses summed, on a raw batch (:func:`lit_itpo.policies.iql_losses`)."""
        hp = self.hparams
        return iql_losses(
            self.actor,
            self.critic,
            self.critic_target,
            self.value,
            batch,
            gamma=hp.gamma,
            expectile=hp.expectile,
            temperature=hp.temperature,
            action_low=self.action_low,
            action_high=self.action_high,
            reward_scale=hp.reward_scale,
        )

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        opt_actor, opt_q, opt_v = self.optimizers()
        total, info = self.loss(batch)
        if not torch.isfinite(total):
            raise DivergenceError(
                f"IQLModule loss became {total.item()} at step {self.global_step}; lower "
                "model.lr or check the dataset's rewards."
            )
        for opt in (opt_actor, opt_q, opt_v):
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_q.step()  # counted: global_step = updates
        opt_v.optimizer.step()
        opt_actor.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.critic_target.parameters()),
                list(self.critic.parameters()),
                self.hparams.tau,
            )
        self.log_train({f"train/{k}": v for k, v in info.items()})

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        bc = (self.act(batch["observation"]) - batch["action"]).pow(2).sum(-1).mean()
        self.log("val/actor_bc_mse", bc, batch_size=batch.shape[0], sync_dist=True)
