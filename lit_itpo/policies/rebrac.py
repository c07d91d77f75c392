"""ReBRAC losses (Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline RL").

TD3+BC with: a behaviour-cloning penalty in the actor (beta1, ``beta_actor``) *and* in the
critic's target (beta2, ``beta_critic``, using the dataset's next action), LayerNorm critics,
large batches. The actor's Q term is scaled by 1 / mean|Q| over the batch, as TD3+BC does.
Follows CORL's ``rebrac.py`` (the paper authors' JAX code): critics regress to
``r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - beta2 * ||a' - a'_data||^2)`` with
``a' = clip(pi'(s') + clip(N(0, sigma), -c, c))``; losses sum over the critics.

No TorchRL loss covers ReBRAC's critic penalty (``TD3BCLoss`` has no next-action term), so these
are standalone functions of plain modules.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict


def rebrac_critic_loss(
    critic: torch.nn.Module,
    target_critic: torch.nn.Module,
    target_actor: torch.nn.Module,
    batch: TensorDict,
    *,
    gamma: float,
    beta_critic: float,
    policy_noise: float,
    noise_clip: float,
    action_low: torch.Tensor,
    action_high: torch.Tensor,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """TD loss of the twin critics with ReBRAC's critic BC penalty.

    Args:
        critic: ``(obs [B, o], action [B, a]) -> [N, B, 1]``.
        target_critic, target_actor: frozen target copies.
        batch: transitions with ``observation``, ``action``, ``("next", ...)`` including the
            dataset's ``("next", "action")`` and ``("next", "terminated")``.
        gamma: discount.
        beta_critic: beta2, the critic BC coefficient.
        policy_noise, noise_clip: target policy smoothing, in units of the action half-range.
        action_low, action_high: ``[a]`` bounds.
        reward_scale, reward_bias: ``r * scale + bias`` (AntMaze: x100 in ReBRAC, -1 in IQL).

    Returns:
        ``(loss, info)``; only ``critic`` receives gradients.
    """
    obs, act, nxt = batch["observation"], batch["action"], batch["next"]
    with torch.no_grad():
        next_obs = nxt["observation"]
        half = (action_high - action_low) / 2
        next_a = target_actor(next_obs)
        noise = (torch.randn_like(next_a) * policy_noise).clamp(-noise_clip, noise_clip) * half
        next_a = torch.maximum(torch.minimum(next_a + noise, action_high), action_low)
        bc = (next_a - nxt["action"]).pow(2).sum(-1, keepdim=True)
        q_next = target_critic(next_obs, next_a).min(0).values - beta_critic * bc
        reward = nxt["reward"] * reward_scale + reward_bias
        target = reward + gamma * (1.0 - nxt["terminated"].to(reward.dtype)) * q_next
    q = critic(obs, act)
    loss = (q - target.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()
    return loss, {
        "critic/loss": loss.detach(),
        "critic/q_mean": q.detach().mean(),
        "critic/target_mean": target.mean(),
        "critic/next_bc_penalty": bc.mean(),
    }


def rebrac_actor_loss(
    actor: torch.nn.Module,
    critic: torch.nn.Module,
    batch: TensorDict,
    *,
    beta_actor: float,
    normalize_q: bool = True,
) -> tuple[torch.Tensor, dict]:
    """``mean(beta1 * ||pi(s) - a||^2 - lambda * min_i Q_i(s, pi(s)))``, ``lambda = 1/mean|Q|``.

    Only ``actor`` receives gradients (the critic's parameters get gradients through the graph
    but the caller steps only the actor's optimiser; the tests check the critic's stay zero when
    ``critic`` has ``requires_grad_(False)`` for the step).
    """
    obs, act = batch["observation"], batch["action"]
    pi = actor(obs)
    q = critic(obs, pi).min(0).values
    lmbda = 1.0 / q.abs().mean().detach().clamp_min(1e-6) if normalize_q else 1.0
    bc = (pi - act).pow(2).sum(-1)
    loss = (beta_actor * bc - lmbda * q.squeeze(-1)).mean()
    return loss, {
        "actor/loss": loss.detach(),
        "actor/bc_mse": bc.detach().mean(),
        "actor/q_pi": q.detach().mean(),
        "actor/lambda": torch.as_tensor(lmbda).detach(),
    }
