"""Fused ensembles: N MLPs evaluated as one batched matmul chain (twin critics in one call)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_itpo.nets.normalizer import Normalizer


class EnsembleLinear(nn.Module):
    """``x [N, B, in] -> [N, B, out]`` with separate weights per member (``torch.baddbmm``);
    ``float32``: run in float32 under autocast (output layers, as ``Float32Linear``)."""

    def __init__(self, n: int, in_features: int, out_features: int, float32: bool = False):
        super().__init__()
        self.float32 = float32
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features))
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32 and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return torch.baddbmm(self.bias, x.to(self.weight.dtype), self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with per-member affine parameters ``[N, 1, h]``."""

    def __init__(self, n: int, h: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, 1, h))
        self.bias = nn.Parameter(torch.zeros(n, 1, h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class EnsembleMLP(nn.Module):
    """N independent MLPs (optionally with LayerNorm, as ReBRAC's critics) fused into one.

    ``forward(x [B, in] or [N, B, in]) -> [N, B, out]``.
    """

    def __init__(
        self,
        n: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        layer_norm: bool = True,
    ):
        super().__init__()
        self.n = n
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(EnsembleLinear(n, d, h))
            if layer_norm:
                layers.append(EnsembleLayerNorm(n, h))
            layers.append(nn.ReLU())
            d = h
        layers.append(EnsembleLinear(n, d, out_dim, float32=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, *x.shape)
        return self.net(x)


class TwinCritic(nn.Module):
    """Q_i(s, a) for i in 1..N on standardised states, raw actions: ``[N, B, 1]``."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        layer_norm: bool = True,
        n: int = 2,
    ):
        super().__init__()
        self.q = EnsembleMLP(n, obs_dim + action_dim, 1, hidden, layer_norm)
        self.obs_norm = Normalizer(obs_dim)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        x = torch.cat([self.obs_norm(obs), action], -1).reshape(
            -1, obs.shape[-1] + action.shape[-1]
        )
        return self.q(x).reshape(self.q.n, *lead, 1)
