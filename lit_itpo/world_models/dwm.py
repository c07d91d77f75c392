"""The paper's differentiable world model (DWM): diffusion transition + reward model."""

from __future__ import annotations

import torch

from lit_itpo.world_models.base import WorldModel
from lit_itpo.world_models.diffusion import DiffusionTransition
from lit_itpo.world_models.parts import RewardModel, TerminationModel


class DiffusionWorldModel(WorldModel):
    """K denoising steps per imagined transition; each step needs K noise vectors."""

    def __init__(
        self,
        transition: DiffusionTransition,
        reward_model: RewardModel,
        termination_model: TerminationModel | None = None,
    ):
        super().__init__(reward_model, termination_model)
        self.transition = transition

    @property
    def nfe_per_step(self) -> int:  # follows set_sample_steps
        return self.transition.steps

    def noise_shape(self, batch: int, particles: int, horizon: int) -> tuple[int, ...]:
        return (batch, particles, horizon, self.transition.steps, self.transition.obs_dim)

    def next(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.transition.sample(obs, action, noise)
