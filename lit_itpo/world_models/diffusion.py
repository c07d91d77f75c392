"""Conditional DDPM transition model p(s' | s, a) with differentiable fixed-noise sampling.

Ho et al. 2020 (DDPM), cosine schedule of Nichol & Dhariwal 2021. The paper (arXiv 2603.22430)
uses a conditional diffusion model as the differentiable world model: with the K noise vectors
of the reverse chain held fixed, ``s' = f_theta(s, a, eps)`` is a deterministic function of
(s, a) and gradients flow through all K denoising steps (the reparameterisation trick).

Deviations / choices (the paper does not report them): the model predicts the *normalised state
change* ``x = (s' - s - mu_delta) / sigma_delta``; the denoiser is an MLP with a sinusoidal
time embedding; the x0 estimate is clipped to +-``clip_x0`` standard deviations during sampling
(zero gradient only outside that range, which held-out data essentially never reaches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_itpo.nets.diffusion import Denoiser


def cosine_betas(K: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, ``[K]`` betas."""
    t = torch.linspace(0, K, K + 1, dtype=torch.float64) / K
    abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(max=max_beta)


class _Conditioning(nn.Module):
    """Normaliser buffers shared by the transition models: state, state change, action."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
    ):
        super().__init__()
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("delta_mean", torch.zeros(obs_dim))
        self.register_buffer("delta_std", torch.ones(obs_dim))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k in ("obs_mean", "obs_std", "delta_mean", "delta_std"):
                getattr(self, k).copy_(stats[k])

    def cond(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[..., obs_dim + act_dim]`` network input from raw (s, a)."""
        return torch.cat(
            [(obs - self.obs_mean) / self.obs_std, (action - self.action_bias) / self.action_scale],
            dim=-1,
        )

    def target(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return (next_obs - obs - self.delta_mean) / self.delta_std

    def to_next_obs(self, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return obs + self.delta_mean + self.delta_std * x


class DiffusionTransition(_Conditioning):
    """DDPM over the normalised state change, conditioned on (s, a).

    Args:
        obs_dim, action_dim, action_low, action_high: spaces.
        steps: K denoising steps.
        hidden: denoiser widths.
        prediction: ``"eps"`` (DDPM's noise prediction) or ``"x0"`` (predict the clean sample,
            often better with few steps on low-dimensional data).
        clip_x0: clip the x0 estimate while sampling (in normalised units); ``None`` disables.
        variance: reverse-step variance, DDPM's two choices: ``"beta_tilde"`` (the posterior's,
            a lower bound) or ``"beta"`` (an upper bound; with few steps it keeps more spread).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        steps: int = 10,
        hidden: Sequence[int] = (512, 512, 512),
        prediction: str = "eps",
        clip_x0: float | None = 5.0,
        variance: str = "beta",
    ):
        super().__init__(obs_dim, action_dim, action_low, action_high)
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction={prediction!r} must be 'eps' or 'x0'.")
        if variance not in ("beta_tilde", "beta"):
            raise ValueError(f"variance={variance!r} must be 'beta_tilde' or 'beta'.")
        if steps < 1:
            raise ValueError(f"diffusion steps={steps} must be >= 1.")
        self.obs_dim, self.steps, self.prediction, self.clip_x0 = (
            obs_dim,
            steps,
            prediction,
            clip_x0,
        )
        self.denoiser = Denoiser(obs_dim, obs_dim + action_dim, hidden)
        betas = cosine_betas(steps)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        f = lambda x: x.float()  # noqa: E731
        self.register_buffer("sqrt_abar", f(abar.sqrt()))
        self.register_buffer("sqrt_1m_abar", f((1 - abar).sqrt()))
        # posterior q(x_{t-1} | x_t, x0) mean coefficients and std
        self.register_buffer("coef_x0", f(abar_prev.sqrt() * betas / (1 - abar)))
        self.register_buffer("coef_xt", f(alphas.sqrt() * (1 - abar_prev) / (1 - abar)))
        post_var = betas * (1 - abar_prev) / (1 - abar) if variance == "beta_tilde" else betas
        self.register_buffer("post_std", f(post_var.sqrt()))

    def loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Denoising loss on a batch ``[B, ...]``; optional per-sample ``weight [B]``."""
        x0 = self.target(obs, next_obs)
        cond = self.cond(obs, action)
        t = torch.randint(0, self.steps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.sqrt_abar[t, None] * x0 + self.sqrt_1m_abar[t, None] * eps
        out = self.denoiser(xt, t, cond)
        per = (out - (eps if self.prediction == "eps" else x0)).pow(2).mean(-1)
        loss = per.mean() if weight is None else (per * weight).mean()
        return loss, {"transition/denoise_mse": per.detach().mean()}

    def x0_estimate(self, xt: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        k = torch.full(xt.shape[:-1], t, device=xt.device)
        out = self.denoiser(xt, k, cond)
        if self.prediction == "eps":
            out = (xt - self.sqrt_1m_abar[t] * out) / self.sqrt_abar[t]
        if self.clip_x0 is not None:
            out = out.clamp(-self.clip_x0, self.clip_x0)
        return out

    def sample(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Reverse chain with fixed noise: ``s' [..., obs_dim]``.

        Args:
            obs: ``[..., obs_dim]`` raw.
            action: ``[..., act_dim]`` raw.
            noise: ``[..., K, obs_dim]``: ``noise[..., 0, :]`` is x_{K-1}, ``noise[..., i, :]``
                the noise added at reverse step ``t = K - i`` (``i >= 1``).
        """
        cond = self.cond(obs, action)
        x = noise[..., 0, :]
        for i, t in enumerate(range(self.steps - 1, -1, -1)):
            x0 = self.x0_estimate(x, t, cond)
            if t == 0:
                x = x0
            else:
                x = (
                    self.coef_x0[t] * x0
                    + self.coef_xt[t] * x
                    + self.post_std[t] * noise[..., i + 1, :]
                )
        return self.to_next_obs(obs, x)


class RewardModel(nn.Module):
    """r(s, a): MLP (paper: 3 x 512 ReLU) on standardised inputs, predicting the standardised
    reward; MSE in standardised units. Raw units in and out."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        hidden: Sequence[int] = (512, 512, 512),
    ):
        super().__init__()
        from lit_itpo.nets.mlp import MLP

        self.io = _Conditioning(obs_dim, action_dim, action_low, action_high)
        self.net = MLP(obs_dim + action_dim, 1, hidden)
        self.register_buffer("reward_mean", torch.zeros(1))
        self.register_buffer("reward_std", torch.ones(1))

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        self.io.set_stats(stats)
        with torch.no_grad():
            self.reward_mean.copy_(stats["reward_mean"])
            self.reward_std.copy_(stats["reward_std"])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(self.io.cond(obs, action)) * self.reward_std + self.reward_mean

    def loss(
        self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        pred = self.net(self.io.cond(obs, action))
        loss = F.mse_loss(pred, (reward - self.reward_mean) / self.reward_std)
        return loss, {"reward/mse_std_units": loss.detach()}
