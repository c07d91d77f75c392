"""Offline-RL losses as pure functions: tensors / TensorDicts in, ``(loss, info)`` out."""

from lit_itpo.policies.iql import iql_losses, tanh_normal
from lit_itpo.policies.rebrac import rebrac_actor_loss, rebrac_critic_loss
from lit_itpo.policies.td3bc import td3bc_actor_loss

__all__ = [
    "iql_losses",
    "rebrac_actor_loss",
    "rebrac_critic_loss",
    "tanh_normal",
    "td3bc_actor_loss",
]
