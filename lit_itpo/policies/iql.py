"""IQL's three losses (Kostrikov et al. 2021, "Offline RL with Implicit Q-Learning", Eqs. 5-7).

Expectile value regression to the target critics' min, TD regression of the twin critics to
``r + gamma * (1 - terminated) * V(s')``, and advantage-weighted regression of a Tanh-Gaussian
actor, weights ``exp(beta * (min_i Q'_i - V))`` clipped at 100. The math is TorchRL's
``IQLLoss`` (its value target has no target network; the actor and value losses use the
target critics), written on plain modules so that an update runs no TensorDict machinery;
tests/test_policy.py checks each loss and its gradients against ``IQLLoss`` within 1e-5.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.modules import TanhNormal


def tanh_normal(actor: torch.nn.Module, obs: torch.Tensor, low, high) -> TanhNormal:
    """TorchRL's ``TanhNormal`` of ``actor(obs) -> (loc, scale)`` on ``[low, high]``."""
    loc, scale = actor(obs)
    return TanhNormal(loc, scale, low=low, high=high)


def iql_losses(
    actor: torch.nn.Module,
    critic: torch.nn.Module,
    target_critic: torch.nn.Module,
    value: torch.nn.Module,
    batch: TensorDict,
    *,
    gamma: float,
    expectile: float,
    temperature: float,
    action_low: torch.Tensor,
    action_high: torch.Tensor,
    reward_scale: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """The sum of IQL's actor, critic and value losses; each touches only its own network.

    Args:
        actor: ``obs [B, o] -> (loc [B, a], scale [B, a])`` of the Tanh-Gaussian.
        critic, target_critic: ``(obs, action) -> [N, B, 1]``.
        value: ``obs [B, o] -> [B, 1]``.
        batch: transitions with ``observation``, ``action``, ``("next", "observation")``,
            ``("next", "reward")``, ``("next", "terminated")``.
        gamma: discount.
        expectile: tau of the expectile regression (0.7 Gym-MuJoCo).
        temperature: beta of the advantage weights (3.0 Gym-MuJoCo).
        action_low, action_high: ``[a]`` bounds of the actor's distribution.
        reward_scale: rewards x this.

    Returns:
        ``(actor_loss + critic_loss + value_loss, info)``.
    """
    obs, act, nxt = batch["observation"], batch["action"], batch["next"]
    with torch.no_grad():
        q_target = target_critic(obs, act).min(0).values.squeeze(-1)
        next_v = value(nxt["observation"]).squeeze(-1)
        reward = nxt["reward"].squeeze(-1) * reward_scale
        td_target = reward + gamma * (~nxt["terminated"].squeeze(-1)).to(reward.dtype) * next_v
    v = value(obs).squeeze(-1)
    diff = q_target - v
    weight = torch.where(diff > 0, expectile, 1 - expectile)
    value_loss = (weight * diff.pow(2)).mean()
    q = critic(obs, act).squeeze(-1)
    critic_loss = (q - td_target).pow(2).sum(0).mean()
    log_prob = tanh_normal(actor, obs, action_low, action_high).log_prob(act)
    exp_adv = torch.exp((q_target - v.detach()) * temperature).clamp_max(100)
    actor_loss = -(exp_adv * log_prob).mean()
    return actor_loss + critic_loss + value_loss, {
        "actor/loss": actor_loss.detach(),
        "critic/loss": critic_loss.detach(),
        "value/loss": value_loss.detach(),
        "critic/q_mean": q.detach().mean(),
    }
