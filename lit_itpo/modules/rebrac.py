"""``ReBRACModule``: stage 2, the paper's base policy (Tarasov et al. 2023).

Deterministic tanh actor (3 x 256), twin LayerNorm critics (3 x 256, fused), actor and critic BC
penalties, target policy smoothing (0.2, clipped 0.5), actor and target updates every
``policy_freq`` critic steps, soft targets (tau 0.005) as frozen submodules updated with
``lerp_``. Manual optimisation (two optimisers; the update loop is
:class:`~lit_itpo.modules.actor_critic.ActorCriticModule`'s). Losses:
:mod:`lit_itpo.policies.rebrac`.

Deviation: states are standardised with the training split's statistics (as TD3+BC does;
CORL's ReBRAC leaves Gym states raw); the normaliser is a buffer inside actor and critic, so the
modules still take raw states (ITPO and the world models call them on raw states).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError
from lit_itpo.modules.actor_critic import ActorCriticModule
from lit_itpo.policies import rebrac_actor_loss

FORMAT_VERSION = 1
STAGE = "policy"


class ReBRACModule(ActorCriticModule):
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
        compile: ``torch.compile`` the update's losses (:func:`~lit_itpo.modules.checkpoints.
            compile_losses`); off: on the CPUs measured it does not pay (stage_speed --compile).
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
        compile: bool = False,
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
        self.build(obs_dim, action_dim, action_low, action_high, hidden, critic_layer_norm)

    def actor_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        return rebrac_actor_loss(
            self.actor, self.critic, batch, beta_actor=hp.beta_actor, normalize_q=hp.normalize_q
        )
