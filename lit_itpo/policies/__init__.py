"""Offline-RL losses as pure functions: tensors / TensorDicts in, ``(loss, info)`` out."""

from lit_itpo.policies.rebrac import rebrac_actor_loss, rebrac_critic_loss

__all__ = ["rebrac_actor_loss", "rebrac_critic_loss"]
