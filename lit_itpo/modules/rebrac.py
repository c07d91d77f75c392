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

from pathlib import Path

import torch
from tensordict import TensorDict

from lit_itpo.errors import ConfigError
from lit_itpo.modules.actor_critic import ActorCriticModule
from lit_itpo.modules.checkpoints import check_compatible, load_stage, read_hparams
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


def load_policy(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location="cpu",
) -> ReBRACModule:
    """A frozen, eval-mode policy module from a policy-stage checkpoint (guards as
    :func:`lit_itpo.modules.checkpoints.check_compatible`)."""
    from lit_itpo.errors import CheckpointError

    hp = read_hparams(path)
    check_compatible(
        path,
        hp,
        stage=STAGE,
        format_version=FORMAT_VERSION,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
    )
    classes = {"ReBRACModule": ReBRACModule}
    cls = classes.get(hp.get("algorithm", ""))
    if cls is None:
        raise CheckpointError(
            f"Checkpoint {path} is a policy of algorithm '{hp.get('algorithm')}', which has no "
            f"loader here; known: {sorted(classes)}."
        )
    return load_stage(
        path, cls, stage=STAGE, format_version=FORMAT_VERSION, map_location=map_location, hparams=hp
    )
