"""``TD3BCModule``: TD3+BC (Fujimoto & Gu 2021), a baseline beside ReBRAC.

TD3 (twin critics without LayerNorm, target policy smoothing 0.2 clipped at 0.5, actor and
targets every 2nd critic step) with the behaviour-cloning actor loss, on standardised states
(the normaliser is a buffer inside actor and critics: raw states in). The update loop is
:class:`~lit_itpo.modules.actor_critic.ActorCriticModule`'s, whose critic loss is ReBRAC's with
``beta_critic = 0`` (TD3's), the actor loss :func:`lit_itpo.policies.td3bc_actor_loss`. Both
match TorchRL's ``TD3BCLoss`` on the same weights (tests/test_policy.py), without its
TensorDict machinery in the update.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError
from lit_itpo.modules.actor_critic import ActorCriticModule
from lit_itpo.policies import td3bc_actor_loss

# 2: plain actor / critic modules (1 kept them inside TorchRL's loss)
FORMAT_VERSION = 2


class TD3BCModule(ActorCriticModule):
    """TD3+BC.

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        alpha: TD3+BC's alpha (lambda = alpha / mean|Q|).
        gamma, tau, policy_noise, noise_clip, policy_freq, actor_lr, critic_lr, hidden: as the
            TD3+BC paper (3e-4, 2 x 256).
        compile: ``torch.compile`` the update's losses (:func:`~lit_itpo.modules.checkpoints.
            compile_losses`); off: on the CPUs measured it does not pay (stage_speed --compile).
    """

    format_version = FORMAT_VERSION

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        alpha: float = 2.5,
        gamma: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        hidden: list[int] = (256, 256),
        compile: bool = False,
    ):
        super().__init__()
        if alpha < 0 or policy_freq < 1 or not 0 < gamma <= 1:
            raise ConfigError(
                f"model.alpha={alpha} must be >= 0, policy_freq={policy_freq} >= 1 "
                f"and gamma={gamma} in (0, 1]."
            )
        self.save_hyperparameters()
        self.build(obs_dim, action_dim, action_low, action_high, hidden, critic_layer_norm=False)

    def actor_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        return td3bc_actor_loss(self.actor, self.critic, batch, alpha=self.hparams.alpha)
