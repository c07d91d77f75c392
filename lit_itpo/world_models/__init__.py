"""Differentiable world models behind one imagined-rollout interface (``WorldModel``)."""

from lit_itpo.world_models.base import WorldModel
from lit_itpo.world_models.diffusion import (
    DiffusionTransition,
    RewardModel,
    TerminationModel,
    cosine_betas,
)
from lit_itpo.world_models.dwm import DiffusionWorldModel

__all__ = [
    "DiffusionTransition",
    "DiffusionWorldModel",
    "RewardModel",
    "TerminationModel",
    "WorldModel",
    "cosine_betas",
]
