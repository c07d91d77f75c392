"""Differentiable world models behind one imagined-rollout interface (``WorldModel``)."""

from lit_itpo.world_models.base import WorldModel
from lit_itpo.world_models.diffusion import DiffusionTransition, cosine_betas
from lit_itpo.world_models.dwm import DiffusionWorldModel
from lit_itpo.world_models.meanflow import MeanFlowTransition, MeanFlowWorldModel
from lit_itpo.world_models.parts import Conditioning, RewardModel, TerminationModel
from lit_itpo.world_models.tilt import PolicyTilt, QTilt, Tilt

__all__ = [
    "Conditioning",
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
