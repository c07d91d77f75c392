"""Affine normalisers held as registered buffers, so they travel inside every checkpoint."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """``(x - mean) / std`` with buffers ``mean``, ``std`` of shape ``[dim]``.

    Starts as the identity; :meth:`fit` sets it from data. Dimensions with (near-)zero spread
    keep std = 1 so constant features (e.g. a fixed goal) pass through unscaled.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> Normalizer:
        """Set the statistics from ``x: [N, dim]``."""
        x = x.reshape(-1, self.mean.numel()).double()
        std = x.std(0, unbiased=False)
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))
        return self

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> Normalizer:
        with torch.no_grad():
            self.mean.copy_(mean)
            self.std.copy_(std)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean
