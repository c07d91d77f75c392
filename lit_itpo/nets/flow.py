"""Average-velocity network of the MeanFlow transition model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lit_itpo.nets.diffusion import SinusoidalEmbedding
from lit_itpo.nets.mlp import MLP


class AverageVelocityNet(nn.Module):
    """``u(z [..., x_dim], r [...], t [...], cond [..., c_dim]) -> [..., x_dim]``.

    An MLP on ``[z, cond, emb(t), emb(t - r)]`` (conditioning on ``(t, t - r)`` as in the
    MeanFlow authors' code); times in [0, 1] are embedded as ``time_scale * t``. Smooth in every
    input (SiLU), so the Jacobian-vector products of MeanFlow training are well defined.
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        hidden: Sequence[int] = (512, 512, 512),
        time_dim: int = 32,
        time_scale: float = 1.0,
    ):
        super().__init__()
        self.embed = SinusoidalEmbedding(time_dim)
        self.time_scale = time_scale
        self.net = MLP(x_dim + cond_dim + 2 * time_dim, x_dim, hidden, activation=nn.SiLU)

    def forward(
        self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        lead = z.shape[:-1]
        e_t = self.embed(self.time_scale * t).expand(*lead, -1)
        e_h = self.embed(self.time_scale * (t - r)).expand(*lead, -1)
        return self.net(torch.cat([z, cond, e_t, e_h], dim=-1))
