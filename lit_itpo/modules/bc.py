"""Behaviour cloning (deterministic, MSE): the floor every offline RL method must clear.

Pomerleau 1991; the "BC" rows of D4RL/CORL tables. A deterministic tanh actor regresses the
dataset's actions. Also the smallest complete stage of the CLI: dims and bounds are linked from
the DataModule, the observation normaliser is a buffer set from the training split, and the
checkpoint carries ``dataset_id`` and ``format_version``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError
from lit_itpo.itpo import PolicyParts
from lit_itpo.modules.checkpoints import StageCheckpoint, set_obs_normalisers
from lit_itpo.modules.optim import adam
from lit_itpo.nets import TanhActor

FORMAT_VERSION = 1


def bc_loss(actor: torch.nn.Module, batch: TensorDict) -> tuple[torch.Tensor, dict]:
    """Mean squared error between ``actor(observation)`` and the dataset ``action``.

    Returns:
        ``(loss, info)`` with ``info`` keys prefixed ``actor/``.
    """
    pred = actor(batch["observation"])
    loss = (pred - batch["action"]).pow(2).sum(-1).mean()
    return loss, {"actor/bc_mse": loss.detach()}


class BCModule(StageCheckpoint, pl.LightningModule):
    """Behaviour cloning.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        hidden: actor hidden widths.
        lr: Adam learning rate.
    """

    stage = "policy"
    format_version = FORMAT_VERSION

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        hidden: list[int] = (256, 256),
        lr: float = 1e-3,
    ):
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"model.lr={lr} must be positive; 1e-3 is a good start.")
        self.save_hyperparameters()
        self.actor = TanhActor(obs_dim, action_dim, action_low, action_high, list(hidden))

    def setup(self, stage: str) -> None:
        set_obs_normalisers(self, stage, (self.actor,))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Action ``[..., act_dim]`` for raw observations ``[..., obs_dim]`` (evaluation)."""
        return self.actor(obs)

    def policy_parts(self) -> PolicyParts:
        """The actor; no critic (ITPO's objective then has no terminal value)."""
        return PolicyParts(self.actor, None)

    def training_step(self, batch: TensorDict, batch_idx: int) -> torch.Tensor:
        loss, info = bc_loss(self.actor, batch)
        self.log_train({f"train/{k}": v for k, v in info.items()})
        return loss

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        loss, info = bc_loss(self.actor, batch)
        self.log_dict(
            {f"val/{k}": v for k, v in info.items()}, batch_size=batch.shape[0], sync_dist=True
        )

    def configure_optimizers(self):
        return adam(self.actor.parameters(), self.hparams.lr)
