"""Denoiser network of the conditional diffusion transition model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lit_itpo.nets.mlp import MLP


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of a (diffusion) time ``t [...]`` -> ``[..., dim]``."""

    def __init__(self, dim: int = 32, max_period: float = 10_000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(self.freqs.dtype).unsqueeze(-1) * self.freqs
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Denoiser(nn.Module):
    """``f(x_k [..., x_dim], k [...], cond [..., c_dim]) -> [..., x_dim]`` (noise or x0 estimate).

    An MLP on ``[x_k, cond, emb(k)]``, the common choice for low-dimensional diffusion models
    (e.g. Diffusion Policy's MLP variant, SynthER uses a residual MLP of the same inputs).
    """

    def __init__(
        self, x_dim: int, cond_dim: int, hidden: Sequence[int] = (512, 512, 512), time_dim: int = 32
    ):
        super().__init__()
        self.embed = SinusoidalEmbedding(time_dim)
        self.net = MLP(x_dim + cond_dim + time_dim, x_dim, hidden, activation=nn.SiLU)

    def forward(self, x: torch.Tensor, k: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.embed(k).expand(*x.shape[:-1], -1)
        return self.net(torch.cat([x, cond, emb], dim=-1))
