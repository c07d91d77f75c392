"""The parts every world model shares: the conditioning of a transition model on (s, a)
(normaliser buffers, state-change targets), the reward model and the optional termination
model. Public here so a new world model is built from them (``DiffusionTransition`` and
``MeanFlowTransition`` are ``Conditioning`` subclasses; both world models take the same
``RewardModel`` / ``TerminationModel``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_itpo.nets.mlp import MLP


class Conditioning(nn.Module):
    """Normaliser buffers shared by the transition models: state, state change, action; and an
    optional deterministic mean head.

    With ``mean_hidden`` (beyond the paper), an MLP ``mu(s, a)`` regresses the standardised
    state change (MSE) and the generative model learns only the residual ``x - mu`` (``mu``
    detached in its loss); a sample is ``mu + residual``, so the mean of the samples is the
    regression's estimate. Measured on halfcheetah-medium (benchmarks/studies/world_model_vs_mlp.py,
    ascent_rate.py): a lower one-step error, no higher ascent rate. Without it (default) the
    model is the paper's.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        mean_hidden: Sequence[int] | None = None,
    ):
        super().__init__()
        self.mean_net = (
            MLP(obs_dim + action_dim, obs_dim, list(mean_hidden)) if mean_hidden else None
        )
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("delta_mean", torch.zeros(obs_dim))
        self.register_buffer("delta_std", torch.ones(obs_dim))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k in ("obs_mean", "obs_std", "delta_mean", "delta_std"):
                getattr(self, k).copy_(stats[k])

    def cond(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[..., obs_dim + act_dim]`` network input from raw (s, a)."""
        return torch.cat(
            [(obs - self.obs_mean) / self.obs_std, (action - self.action_bias) / self.action_scale],
            dim=-1,
        )

    def target(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The standardised state change ``[..., obs_dim]``."""
        return (next_obs - obs - self.delta_mean) / self.delta_std

    def generative_target(
        self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(cond, x, mean_se)``: the network input, what the generative model learns (the
        standardised state change, or its residual after the mean head) and the mean head's
        per-sample squared error ``[B]`` (``None`` without a mean head)."""
        cond, x = self.cond(obs, action), self.target(obs, next_obs)
        if self.mean_net is None:
            return cond, x, None
        mu = self.mean_net(cond)
        return cond, x - mu.detach(), (mu - x).pow(2).mean(-1)

    def to_next_obs(
        self, obs: torch.Tensor, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw next state from a generative sample ``x`` (plus the mean head's ``mu(cond)``)."""
        if self.mean_net is not None:
            x = x + self.mean_net(cond)
        return obs + self.delta_mean + self.delta_std * x


class RewardModel(nn.Module):
    """r(s, a): MLP (paper: 3 x 512 ReLU) on standardised inputs, predicting the standardised
    reward; MSE in standardised units. Raw units in and out."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        hidden: Sequence[int] = (512, 512, 512),
    ):
        super().__init__()
        from lit_itpo.nets.mlp import MLP

        self.io = Conditioning(obs_dim, action_dim, action_low, action_high)
        self.net = MLP(obs_dim + action_dim, 1, hidden)
        self.register_buffer("reward_mean", torch.zeros(1))
        self.register_buffer("reward_std", torch.ones(1))

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        self.io.set_stats(stats)
        with torch.no_grad():
            self.reward_mean.copy_(stats["reward_mean"])
            self.reward_std.copy_(stats["reward_std"])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(self.io.cond(obs, action)) * self.reward_std + self.reward_mean

    def loss(
        self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        pred = self.net(self.io.cond(obs, action))
        loss = F.mse_loss(pred, (reward - self.reward_mean) / self.reward_std)
        return loss, {"reward/mse_std_units": loss.detach()}


class TerminationModel(nn.Module):
    """p(terminated | s, a, s'): a logistic MLP. Beyond the paper (which reports none); for envs
    that terminate (Hopper, Walker2d). Trained with BCE, positives up-weighted by ``pos_weight``
    because terminal transitions are rare."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        hidden: Sequence[int] = (256, 256),
        pos_weight: float = 10.0,
    ):
        super().__init__()
        from lit_itpo.nets.mlp import MLP

        self.io = Conditioning(obs_dim, action_dim, action_low, action_high)
        self.net = MLP(2 * obs_dim + action_dim, 1, hidden)
        self.pos_weight = pos_weight

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        self.io.set_stats(stats)

    def logits(self, obs, action, next_obs) -> torch.Tensor:
        nxt = (next_obs - self.io.obs_mean) / self.io.obs_std
        return self.net(torch.cat([self.io.cond(obs, action), nxt], dim=-1))

    def forward(self, obs, action, next_obs) -> torch.Tensor:
        """Probability ``[..., 1]`` that the transition terminates the episode."""
        return torch.sigmoid(self.logits(obs, action, next_obs))

    def loss(self, obs, action, next_obs, terminated) -> tuple[torch.Tensor, dict]:
        logit = self.logits(obs, action, next_obs)
        target = terminated.to(logit.dtype)
        loss = F.binary_cross_entropy_with_logits(
            logit, target, pos_weight=torch.tensor(self.pos_weight, device=logit.device)
        )
        acc = ((logit > 0) == target.bool()).float().mean()
        return loss, {"termination/bce": loss.detach(), "termination/accuracy": acc}
