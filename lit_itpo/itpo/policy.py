"""What ITPO, the tilt and the evaluation take from any policy stage (no Lightning)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class PolicyParts:
    """A trained policy as ITPO sees it; every policy stage returns one from ``policy_parts()``.

    Attributes:
        actor: the deterministic policy, raw observations ``[..., obs_dim]`` -> raw actions
            ``[..., act_dim]``; ITPO adapts its parameters (``functional_call``), so its
            parameters must be the ones that shape the action.
        critic: ``(obs, action) -> [n_q, ..., 1]`` Q-values in the units training used, or None
            (behaviour cloning: no terminal value in the imagined objective).
        reward_scale, reward_bias: the reward transform of training (``r * scale + bias``), so
            imagined rewards are in the critic's units.
    """

    actor: nn.Module
    critic: nn.Module | None = None
    reward_scale: float = 1.0
    reward_bias: float = 0.0
