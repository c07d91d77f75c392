"""Differentiable world models behind one imagined-rollout interface (``WorldModel``)."""

from lit_itpo.world_models.base import WorldModel
from lit_itpo.world_models.diffusion import (
    DiffusionTransition,
    RewardModel,
    TerminationModel,
    cosine_betas,
)
from lit_itpo.world_models.dwm import DiffusionWorldModel
from lit_itpo.world_models.meanflow import MeanFlowTransition, MeanFlowWorldModel
from lit_itpo.world_models.tilt import PolicyTilt, QTilt, Tilt

__all__ = [
    "DiffusionTransition",
    "DiffusionWorldModel",
    "MeanFlowTransition",
    "MeanFlowWorldModel",
    "PolicyTilt",
    "QTilt",
    "RewardModel",
    "TerminationModel",
    "Tilt",
    "WorldModel",
    "cosine_betas",
]
