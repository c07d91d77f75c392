"""The imagined-rollout interface every differentiable world model implements.

ITPO (arXiv 2603.22430, Sec. 3) rolls the policy out inside the world model with all the model's
noise held fixed, so the imagined return is a deterministic, differentiable function of the
policy parameters. At this boundary states, actions and rewards are in the environment's raw
units; each model normalises internally with its own buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict
from torch import nn

Policy = Callable[[torch.Tensor], torch.Tensor]


class WorldModel(nn.Module):
    """Components plus short verbs: :meth:`next`, :meth:`reward`, :meth:`rollout`.

    Subclasses hold a transition model and a reward model and define :meth:`noise_shape` and
    :meth:`next`. ``nfe_per_step`` is the number of transition-network evaluations one imagined
    step costs (K for diffusion, 1 for one-step MeanFlow).
    """

    nfe_per_step: int = 1

    def __init__(self, reward_model: nn.Module, termination_model: nn.Module | None = None):
        super().__init__()
        self.reward_model = reward_model
        self.termination_model = termination_model

    def noise_shape(self, batch: int, particles: int, horizon: int) -> tuple[int, ...]:
        """Shape of the noise one rollout needs, starting ``[batch, particles, horizon, ...]``."""
        raise NotImplementedError

    def sample_noise(
        self, batch: int, particles: int, horizon: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Standard normal noise of :meth:`noise_shape`, from ``generator`` when given."""
        # a world model may hold only buffers (frozen or analytic models)
        device = next(iter(self.state_dict().values())).device
        return torch.randn(
            self.noise_shape(batch, particles, horizon), generator=generator, device=device
        )

    def next(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Next state ``[..., obs_dim]`` from ``obs [..., obs_dim]``, ``action [..., act_dim]``
        and this step's ``noise [..., *step_noise]``; deterministic and differentiable."""
        raise NotImplementedError

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Predicted reward ``[..., 1]`` in raw units."""
        return self.reward_model(obs, action)

    def rollout(
        self,
        obs: torch.Tensor,
        policy: Policy,
        horizon: int,
        particles: int,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TensorDict:
        """Imagine ``horizon`` steps of ``policy`` from each start state, ``particles`` times.

        Args:
            obs: start states ``[B, obs_dim]`` (raw units).
            policy: ``obs [..., obs_dim] -> action [..., act_dim]``; for given parameters wrap
                it, e.g. ``lambda s: torch.func.functional_call(actor, params, (s,))``.
            horizon: H imagined steps.
            particles: M rollouts per start state (each with its own noise).
            noise: ``noise_shape(B, M, H)``; drawn from ``generator`` when ``None``.

        Returns:
            TensorDict ``[B, M, H]`` with ``observation``, ``action``, ``("next", "observation")``,
            ``("next", "reward")`` (``[..., 1]``), and with a termination model
            ``("next", "terminated")``: its probability ``[..., 1]`` (the rollout itself never
            stops; the objective decides how to use it). The autograd graph is kept.
        """
        B = obs.shape[0]
        if noise is None:
            noise = self.sample_noise(B, particles, horizon, generator)
        expected = self.noise_shape(B, particles, horizon)
        if tuple(noise.shape) != tuple(expected):
            raise ValueError(f"rollout noise has shape {tuple(noise.shape)}, expected {expected}.")
        s = obs.unsqueeze(1).expand(B, particles, obs.shape[-1])
        states, actions, next_states, rewards, terms = [], [], [], [], []
        for j in range(horizon):
            a = policy(s)
            s_next = self.next(s, a, noise[:, :, j])
            states.append(s)
            actions.append(a)
            rewards.append(self.reward(s, a))
            next_states.append(s_next)
            if self.termination_model is not None:
                terms.append(self.termination_model(s, a, s_next))
            s = s_next
        stack = lambda xs: torch.stack(xs, dim=2)  # noqa: E731
        nxt = {"observation": stack(next_states), "reward": stack(rewards)}
        if terms:
            nxt["terminated"] = stack(terms)
        return TensorDict(
            {
                "observation": stack(states),
                "action": stack(actions),
                "next": nxt,
            },
            batch_size=[B, particles, horizon],
        )
