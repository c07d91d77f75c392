"""One-step MeanFlow transition model p(s' | s, a): the paper's cheap differentiable world model.

MeanFlow (Geng et al. 2025, arXiv 2505.13447) learns the *average* velocity
``u(z, r, t) = 1/(t - r) * int_r^t v(z_tau, tau) dtau`` of the flow ``z_t = (1 - t) x + t eps``
(t = 0 data, t = 1 noise, ``v = eps - x``). It satisfies the MeanFlow identity
``u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t)`` with the total derivative
``d/dt u = v . d_z u + d_t u``, one Jacobian-vector product. Training regresses
``u_theta(z_t, r, t)`` on ``stopgrad(v - (t - r) d/dt u_theta)``; sampling takes one step,
``x = eps - u_theta(eps, 0, 1)``, so an imagined transition costs one network call instead of K.
With the noise ``eps`` held fixed, ``s' = f_theta(s, a, eps)`` is deterministic and
differentiable in (s, a), which is all ITPO needs.

As in the diffusion model, ``x`` is the normalised state change and the network sees
standardised (s, a). (r, t) are logit-normal with a share ``equal_fraction`` of r = t samples
(plain flow matching); the loss uses MeanFlow's adaptive weight ``1 / (||err||^2 + c)^p``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_itpo.nets.flow import AverageVelocityNet
from lit_itpo.world_models.base import WorldModel
from lit_itpo.world_models.parts import Conditioning, RewardModel, TerminationModel


class MeanFlowTransition(Conditioning):
    """Conditional MeanFlow over the normalised state change.

    Args:
        obs_dim, action_dim, action_low, action_high: spaces.
        hidden: widths of the average-velocity MLP.
        sample_steps: sampling steps (1: the one-step model; 2 trades cost for accuracy).
        equal_fraction: share of each batch with r = t (flow matching); MeanFlow's authors use
            0.75 in their PyTorch ImageNet setting, 0.25 in their JAX code.
        time_mean, time_std: logit-normal (r, t) sampling, ``sigmoid(N(mean, std))``.
        adaptive_p, adaptive_c: adaptive loss weight ``1 / (||err||^2 + c)^p`` (p = 0: plain
            MSE); the authors' PyTorch defaults are (1.0, 1e-2).
        target_velocity: ``"sample"`` (MeanFlow: the sampled ``v = eps - x`` in the target and
            as the JVP tangent) or ``"model"``: on the r < t samples the network's own
            instantaneous velocity ``u(z, t, t)`` (no gradient) replaces v there, a target
            without the sampled v's noise; the r = t samples keep v, so the network still
            learns that velocity (needs ``equal_fraction > 0``). On the 1-D mixture it is what
            brings one step within tolerance (benchmarks/studies/meanflow_mixture.py); on
            halfcheetah-medium, whose next states are near-deterministic, it cost one-step
            accuracy (benchmarks/meanflow_quality.py; README).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        hidden: Sequence[int] = (512, 512, 512),
        sample_steps: int = 1,
        equal_fraction: float = 0.75,
        time_mean: float = -0.4,
        time_std: float = 1.0,
        adaptive_p: float = 1.0,
        adaptive_c: float = 1e-2,
        target_velocity: str = "sample",
        mean_hidden: Sequence[int] | None = None,
    ):
        super().__init__(obs_dim, action_dim, action_low, action_high, mean_hidden)
        if target_velocity not in ("sample", "model") or (
            target_velocity == "model" and equal_fraction == 0
        ):
            raise ValueError(
                f"target_velocity={target_velocity!r} must be 'sample' or 'model', and 'model' "
                f"needs equal_fraction > 0 (got {equal_fraction}; e.g. 0.5) to learn the velocity "
                "it uses."
            )
        self.target_velocity = target_velocity
        if sample_steps < 1:
            raise ValueError(f"sample_steps={sample_steps} must be >= 1.")
        if not 0.0 <= equal_fraction <= 1.0 or time_std <= 0:
            raise ValueError(
                f"equal_fraction={equal_fraction} must be in [0, 1] and time_std={time_std} > 0."
            )
        if adaptive_p < 0 or adaptive_c <= 0:
            raise ValueError(f"adaptive_p={adaptive_p} must be >= 0, adaptive_c={adaptive_c} > 0.")
        self.obs_dim, self.sample_steps = obs_dim, sample_steps
        self.equal_fraction, self.time_mean, self.time_std = equal_fraction, time_mean, time_std
        self.adaptive_p, self.adaptive_c = adaptive_p, adaptive_c
        self.net = AverageVelocityNet(obs_dim, obs_dim + action_dim, hidden)

    @property
    def steps(self) -> int:
        """Network evaluations per sample (as ``DiffusionTransition.steps``)."""
        return self.sample_steps

    def u(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        return self.net(z, r, t, cond)

    def sample_times(
        self, n: int, device, dtype=torch.float32, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r, t)`` ``[n]`` each: two logit-normal draws sorted so r <= t, then r = t on a
        random share ``equal_fraction``."""
        g = torch.randn(2, n, device=device, dtype=dtype, generator=generator)
        ab = torch.sigmoid(self.time_mean + self.time_std * g)
        r, t = ab.min(0).values, ab.max(0).values
        equal = torch.rand(n, device=device, dtype=dtype, generator=generator)
        r = torch.where(equal < self.equal_fraction, t, r)
        return r, t

    def meanflow_target(
        self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, v: torch.Tensor, cond
    ) -> torch.Tensor:
        """``v - (t - r) (v . d_z u + d_t u)``, detached: one forward-mode JVP of ``u(z, r, t)``
        with tangents ``(v, 0, 1)`` in that argument order (a swapped order would silently
        differentiate along r). With ``target_velocity="model"`` v is ``u(z, t, t)`` where
        r < t."""

        def fn(z_, r_, t_):
            return self.net(z_, r_, t_, cond)

        with torch.no_grad():
            if self.target_velocity == "model":  # r = t keeps v: there u(z, t, t) learns it
                v = torch.where((r == t).unsqueeze(-1), v, self.net(z, t, t, cond))
            _, dudt = torch.func.jvp(fn, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
        return (v - (t - r).unsqueeze(-1) * dudt).detach()

    def loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """MeanFlow loss on a batch ``[B, ...]`` with optional per-sample ``weight [B]`` (the
        tilt; mean 1). The prediction is a plain forward pass (the JVP only makes the target),
        so the backward runs through whatever wraps the module (DDP synchronises it)."""
        cond, x, mean_se = self.generative_target(obs, action, next_obs)
        r, t = self.sample_times(x.shape[0], x.device, x.dtype)
        eps = torch.randn_like(x)
        t_ = t.unsqueeze(-1)
        z = (1 - t_) * x + t_ * eps
        v = eps - x
        u_tgt = self.meanflow_target(z, r, t, v, cond)
        err = (self.net(z, r, t, cond) - u_tgt).pow(2).sum(-1)
        per = err / (err.detach() + self.adaptive_c).pow(self.adaptive_p)
        info = {"transition/meanflow_mse": err.detach().mean() / x.shape[-1]}
        if mean_se is not None:
            per = per + mean_se
            info["transition/mean_mse"] = mean_se.detach().mean()
        loss = per.mean() if weight is None else (per * weight).mean()
        return loss, info

    def sample_normalised(self, cond: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x`` from ``eps`` in ``sample_steps`` equal average-velocity jumps from t = 1 to 0."""
        z = eps
        n = self.sample_steps
        for i in range(n):
            t_val, r_val = 1.0 - i / n, 1.0 - (i + 1) / n
            t = torch.full(z.shape[:-1], t_val, device=z.device, dtype=z.dtype)
            r = torch.full(z.shape[:-1], r_val, device=z.device, dtype=z.dtype)
            z = z - (t_val - r_val) * self.net(z, r, t, cond)
        return z

    def sample(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``s' [..., obs_dim]`` from raw ``obs``, ``action`` and ``noise [..., obs_dim]``;
        deterministic and differentiable in (s, a)."""
        cond = self.cond(obs, action)
        return self.to_next_obs(obs, self.sample_normalised(cond, noise), cond)


class MeanFlowWorldModel(WorldModel):
    """One MeanFlow step per imagined transition (``sample_steps`` network calls); each step
    needs one noise vector."""

    def __init__(
        self,
        transition: MeanFlowTransition,
        reward_model: RewardModel,
        termination_model: TerminationModel | None = None,
    ):
        super().__init__(reward_model, termination_model)
        self.transition = transition

    @property
    def nfe_per_step(self) -> int:
        return self.transition.sample_steps

    def noise_shape(self, batch: int, particles: int, horizon: int) -> tuple[int, ...]:
        return (batch, particles, horizon, self.transition.obs_dim)

    def next(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.transition.sample(obs, action, noise)
