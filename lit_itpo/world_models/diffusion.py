"""Conditional DDPM transition model p(s' | s, a) with differentiable fixed-noise sampling.

Ho et al. 2020 (DDPM), cosine schedule of Nichol & Dhariwal 2021. The paper (arXiv 2603.22430)
uses a conditional diffusion model as the differentiable world model: with the K noise vectors
of the reverse chain held fixed, ``s' = f_theta(s, a, eps)`` is a deterministic function of
(s, a) and gradients flow through all K denoising steps (the reparameterisation trick).

Deviations / choices (the paper does not report them): the model predicts the *normalised state
change* ``x = (s' - s - mu_delta) / sigma_delta``; the denoiser is an MLP with a sinusoidal
time embedding; the x0 estimate is clipped to +-``clip_x0`` standard deviations during sampling
(zero gradient only outside that range).

Why the default target is v (Salimans & Ho 2022), not DDPM's eps: the cosine schedule ends at
alpha_bar ~ 0 (6e-6 at the last of K = 20 steps), where x is pure noise. An eps model's x0
estimate ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` divides by sqrt(abar) there and amplifies
the network's error ~400x, so the +-5 clip fires on most entries, the noisiest step contributes
nothing and passes no gradient. A v model's estimate ``sqrt(abar) x_t - sqrt(1 - abar) v`` needs no
division and is well posed at zero terminal SNR (Lin et al. 2024). ``"eps"`` stays for old
checkpoints and comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lit_itpo.errors import ConfigError
from lit_itpo.nets.diffusion import Denoiser
from lit_itpo.world_models.parts import Conditioning

PREDICTIONS = ("v", "eps", "x0")


def cosine_betas(K: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, ``[K]`` betas."""
    t = torch.linspace(0, K, K + 1, dtype=torch.float64) / K
    abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(max=max_beta)


def check_sample_steps(
    sample_steps: int | None, trained_k: int | None, option: str, source: str, fix: str
) -> None:
    """Refuse sampling with more reverse steps than the model was trained with (K): the
    respaced chain picks its steps among the K trained ones. Called before anything runs (the
    pipeline before its first stage, ITPOCallback before its first episode), so the one line
    comes before the work instead of a traceback after it; None (not given, or K unknown)
    passes.

    Args:
        option: how the user gave ``sample_steps`` (``--pipeline.sample_steps``).
        source: where K comes from (the stage-1 config, the checkpoint).
        fix: the other way out (``raise diffusion_steps in that config``).
    """
    if sample_steps is None or trained_k is None or sample_steps <= trained_k:
        return
    raise ConfigError(
        f"{option}={sample_steps} is above the world model's trained K (diffusion_steps="
        f"{trained_k} in {source}); pass {option} {trained_k} or fewer (or null: the "
        f"checkpoint's), or {fix}."
    )


class DiffusionTransition(Conditioning):
    """DDPM over the normalised state change, conditioned on (s, a).

    Args:
        obs_dim, action_dim, action_low, action_high: spaces.
        steps: K diffusion steps of training.
        hidden: denoiser widths.
        prediction: ``"v"`` (velocity ``sqrt(abar) eps - sqrt(1 - abar) x0``; well posed at the
            noisiest step), ``"eps"`` (DDPM's noise prediction; ill posed there, see the module
            docstring) or ``"x0"`` (the clean sample).
        clip_x0: clip the x0 estimate while sampling (in normalised units); ``None`` disables.
        variance: reverse-step variance, DDPM's two choices: ``"beta"`` (upper bound; with few
            steps it keeps the spread, measured in tests/test_world_model.py) or
            ``"beta_tilde"`` (the posterior's, a lower bound that shrinks the spread).
        sample_steps: reverse steps when sampling (default ``steps``); fewer steps sample the
            same trained model on an evenly respaced schedule (Nichol & Dhariwal 2021, Sec. 4).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        steps: int = 10,
        hidden: Sequence[int] = (512, 512, 512),
        prediction: str = "v",
        clip_x0: float | None = 5.0,
        variance: str = "beta",
        sample_steps: int | None = None,
        mean_hidden: Sequence[int] | None = None,
    ):
        super().__init__(obs_dim, action_dim, action_low, action_high, mean_hidden)
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} must be one of {PREDICTIONS}.")
        if variance not in ("beta_tilde", "beta"):
            raise ValueError(f"variance={variance!r} must be 'beta_tilde' or 'beta'.")
        if steps < 1:
            raise ValueError(f"diffusion steps={steps} must be >= 1.")
        self.obs_dim, self.prediction, self.clip_x0 = obs_dim, prediction, clip_x0
        self.train_steps, self.variance = steps, variance
        self.denoiser = Denoiser(obs_dim, obs_dim + action_dim, hidden)
        abar = torch.cumprod(1 - cosine_betas(steps), 0)
        self.register_buffer("train_sqrt_abar", abar.sqrt().float())
        self.register_buffer("train_sqrt_1m_abar", (1 - abar).sqrt().float())
        self.set_sample_steps(sample_steps or steps)

    def set_sample_steps(self, k: int, variance: str | None = None) -> None:
        """Sample with ``k`` reverse steps on evenly respaced trained timesteps, always starting
        from the noisiest one (``K - 1``) and, for ``k >= 2``, ending at ``0`` (and optionally
        another reverse variance: with few, large steps ``"beta"`` is ~1 per step and adds a
        full unit of noise late in the chain, ``"beta_tilde"`` shrinks with the jump)."""
        if not 1 <= k <= self.train_steps:
            raise ValueError(f"sample_steps={k} must be in [1, {self.train_steps}] (trained K).")
        if variance is not None:
            if variance not in ("beta_tilde", "beta"):
                raise ValueError(f"variance={variance!r} must be 'beta_tilde' or 'beta'.")
            self.variance = variance
        self.steps = k
        abar_all = torch.cumprod(1 - cosine_betas(self.train_steps), 0)
        # spaced down from K - 1: with k = 1 the chain is the single noisiest step, not t = 0
        ts = torch.linspace(self.train_steps - 1, 0, k).round().long().flip(0)
        abar = abar_all[ts]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1 - abar / abar_prev
        post_var = betas * (1 - abar_prev) / (1 - abar) if self.variance == "beta_tilde" else betas
        dev = self.train_sqrt_abar.device
        f = lambda x: x.float().to(dev)  # noqa: E731
        # Non-persistent buffers: derived from k, so a checkpoint serves any sampling choice.
        for name, val in (
            ("ts", ts.to(dev)),
            ("sqrt_abar", f(abar.sqrt())),
            ("sqrt_1m_abar", f((1 - abar).sqrt())),
            ("coef_x0", f(abar_prev.sqrt() * betas / (1 - abar))),
            ("coef_xt", f((1 - betas).sqrt() * (1 - abar_prev) / (1 - abar))),
            ("post_std", f(post_var.sqrt())),
        ):
            self.register_buffer(name, val, persistent=False)

    def loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Denoising loss on a batch ``[B, ...]``; optional per-sample ``weight [B]``."""
        cond, x0, mean_se = self.generative_target(obs, action, next_obs)
        t = torch.randint(0, self.train_steps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.train_sqrt_abar[t, None] * x0 + self.train_sqrt_1m_abar[t, None] * eps
        out = self.denoiser(xt, t, cond)
        if self.prediction == "v":
            target = self.train_sqrt_abar[t, None] * eps - self.train_sqrt_1m_abar[t, None] * x0
        else:
            target = eps if self.prediction == "eps" else x0
        per = (out - target).pow(2).mean(-1)
        info = {"transition/denoise_mse": per.detach().mean()}
        if mean_se is not None:
            per = per + mean_se
            info["transition/mean_mse"] = mean_se.detach().mean()
        loss = per.mean() if weight is None else (per * weight).mean()
        return loss, info

    def x0_estimate(self, xt: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        """x0 estimate at position ``i`` (ascending) of the sampling chain."""
        out = self.denoiser(xt, self.ts[i].expand(xt.shape[:-1]), cond)
        if self.prediction == "eps":
            out = (xt - self.sqrt_1m_abar[i] * out) / self.sqrt_abar[i]
        elif self.prediction == "v":
            out = self.sqrt_abar[i] * xt - self.sqrt_1m_abar[i] * out
        if self.clip_x0 is not None:
            out = out.clamp(-self.clip_x0, self.clip_x0)
        return out

    def sample(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Reverse chain with fixed noise: ``s' [..., obs_dim]``, differentiable in (s, a).

        Args:
            obs: ``[..., obs_dim]`` raw.
            action: ``[..., act_dim]`` raw.
            noise: ``[..., K, obs_dim]`` (K = sampling steps): ``noise[..., 0, :]`` is the
                starting x, ``noise[..., j, :]`` the noise added at the j-th reverse step.
        """
        cond = self.cond(obs, action)
        x = noise[..., 0, :]
        for j, i in enumerate(range(self.steps - 1, -1, -1)):
            x0 = self.x0_estimate(x, i, cond)
            if i == 0:
                x = x0
            else:
                x = (
                    self.coef_x0[i] * x0
                    + self.coef_xt[i] * x
                    + self.post_std[i] * noise[..., j + 1, :]
                )
        return self.to_next_obs(obs, x, cond)
