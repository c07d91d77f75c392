"""TD3+BC's actor loss (Fujimoto & Gu 2021, "A Minimalist Approach to Offline RL", Eq. 3).

``pi = argmax_pi E[lambda * Q_1(s, pi(s)) - (pi(s) - a)^2]`` with ``lambda = alpha / mean|Q_1|``
(detached; the first critic only, as the paper's code and TorchRL's ``TD3BCLoss``). The critic
is TD3's, which is ReBRAC's critic loss without the next-action penalty: use
:func:`lit_itpo.policies.rebrac_critic_loss` with ``beta_critic=0``. Both match TorchRL's
``TD3BCLoss`` (tests/test_policy.py checks losses and gradients within 1e-5 on shared weights),
with one deviation: the target-policy noise is scaled by the action half-range, as in the
paper's code (TorchRL adds it in absolute units; the two agree for actions in [-1, 1]).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict


def td3bc_actor_loss(
    actor: torch.nn.Module, critic: torch.nn.Module, batch: TensorDict, *, alpha: float
) -> tuple[torch.Tensor, dict]:
    """``mean((pi(s) - a)^2) - alpha / mean|Q_1| * mean(Q_1(s, pi(s)))``.

    Args:
        actor: ``obs [B, o] -> action [B, a]``.
        critic: ``(obs, action) -> [N, B, 1]``; only the first member is used.
        batch: ``observation [B, o]``, ``action [B, a]``.
        alpha: TD3+BC's alpha (2.5 in the paper).

    Returns:
        ``(loss, info)``; the caller steps only the actor's optimiser (give the critic
        ``requires_grad_(False)`` for the step to keep its gradients empty).
    """
    pi = actor(batch["observation"])
    q = critic(batch["observation"], pi)[0]
    lmbda = alpha / q.abs().mean().detach()
    bc = (pi - batch["action"]).pow(2).mean()
    loss = -lmbda * q.mean() + bc
    return loss, {
        "actor/loss": loss.detach(),
        "actor/bc_mse": bc.detach(),
        "actor/q_pi": q.detach().mean(),
        "actor/lambda": lmbda,
    }
