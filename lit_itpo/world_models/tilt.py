"""Per-sample loss weights that *tilt* a world model toward where a policy goes.

Our reading of the paper's "tilted" sampler (its exact form is not public, docs/METHOD.md):
the MeanFlow dynamics is fitted with weights ``w_i ∝ pi(a_i | s_i)^eta`` over a minibatch, so
model capacity goes to the transitions the policy's imagined rollouts visit. For a deterministic
actor, ``pi(a | s) = N(a; mu(s), sigma^2 I)`` in normalised action units, so
``log w_i = -eta ||a_i - mu(s_i)||^2 / (2 sigma^2)`` (+ a constant that normalisation removes).
Weights are normalised to mean 1 over the minibatch, optionally clipped at ``clip`` (then
renormalised), and never differentiated. ``eta = 0`` is the untilted model.

A tilt is any module with ``log_weight(obs, action) -> [B]``; :class:`QTilt` (``exp(beta Q)``,
the other reading in METHOD.md) is the second one, so both can be measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def normalise_weights(
    log_w: torch.Tensor, clip: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[B]`` with mean 1 from log-weights ``[B]`` (none above ``clip``: clipped and
    renormalised until that holds), and the normalised effective sample size
    ``(sum w)^2 / (B sum w^2)`` in (0, 1] of the final weights."""
    n = log_w.shape[0]
    w = torch.softmax(log_w.detach().double(), 0) * n
    if clip is not None:  # clip and renormalise until no weight exceeds clip (few rounds)
        for _ in range(100):
            if w.max() <= clip * (1 + 1e-9):
                break
            w = w.clamp(max=clip)
            w = w / w.mean()
    ess = w.sum() ** 2 / (n * w.pow(2).sum())
    return w.to(log_w.dtype), ess.to(log_w.dtype)


class Tilt(nn.Module):
    """Base: :meth:`log_weight` per sample; :meth:`weights` normalises (no gradients)."""

    def __init__(self, clip: float | None = 10.0):
        super().__init__()
        if clip is not None and clip <= 1.0:
            raise ValueError(f"tilt weight clip={clip} must be > 1 (or None).")
        self.clip = clip

    def log_weight(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def weights(self, obs: torch.Tensor, action: torch.Tensor):
        return normalise_weights(self.log_weight(obs, action), self.clip)


class PolicyTilt(Tilt):
    """``w ∝ N(a; mu(s), sigma^2)^eta`` around a deterministic actor ``mu`` (normalised actions).

    Args:
        act: raw obs ``[B, obs_dim]`` -> raw action ``[B, act_dim]`` (a frozen policy).
        action_low, action_high: to normalise actions to [-1, 1].
        eta: tilt exponent (0: untilted).
        sigma: the Gaussian's standard deviation in normalised action units (default 0.2).
        clip: largest weight after normalisation (``None``: no clipping).
    """

    def __init__(
        self,
        act: Callable[[torch.Tensor], torch.Tensor],
        action_low: Sequence[float],
        action_high: Sequence[float],
        eta: float = 0.0,
        sigma: float = 0.2,
        clip: float | None = 10.0,
    ):
        super().__init__(clip)
        if eta < 0 or sigma <= 0:
            raise ValueError(f"tilt eta={eta} must be >= 0 and sigma={sigma} > 0.")
        self.act, self.eta, self.sigma = act, eta, sigma
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2, persistent=False)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi(a | s)`` up to a constant: ``-||a - mu(s)||^2 / (2 sigma^2)``, ``[B]``."""
        with torch.no_grad():
            diff = (action - self.act(obs)) / self.scale
        return -diff.pow(2).sum(-1) / (2 * self.sigma**2)

    def log_weight(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.eta * self.log_prob(obs, action)

    @torch.no_grad()
    def calibrate(
        self, obs: torch.Tensor, action: torch.Tensor, target_ess: float, max_eta: float = 1e3
    ) -> float:
        """Set ``eta`` so the *unclipped* effective sample size on (obs, action) is
        ``target_ess`` (bisection on log eta; ESS falls as eta grows); returns it."""
        if not 0.0 < target_ess < 1.0:
            raise ValueError(f"target_ess={target_ess} must be in (0, 1).")
        lp = self.log_prob(obs, action)
        ess = lambda e: normalise_weights(e * lp)[1].item()  # noqa: E731
        if ess(max_eta) >= target_ess:
            self.eta = max_eta
            return self.eta
        lo, hi = -12.0, float(torch.log10(torch.tensor(max_eta)))
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ess(10**mid) > target_ess else (lo, mid)
        self.eta = 10 ** ((lo + hi) / 2)
        return self.eta


class QTilt(Tilt):
    """``w ∝ exp(beta Q(s, a) / mean|Q|)`` with a frozen critic ``q(obs, action) -> [B]``:
    tilts toward high-value data rather than toward the policy's own actions."""

    def __init__(
        self,
        q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        beta: float = 1.0,
        clip: float | None = 10.0,
    ):
        super().__init__(clip)
        if beta < 0:
            raise ValueError(f"QTilt beta={beta} must be >= 0.")
        self.q, self.beta = q, beta

    def log_weight(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = self.q(obs, action).reshape(obs.shape[0])
        return self.beta * q / q.abs().mean().clamp_min(1e-6)
