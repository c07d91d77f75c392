"""Plain ``nn.Module`` building blocks (no Lightning)."""

from lit_itpo.nets.ensemble import EnsembleLinear, EnsembleMLP, TwinCritic
from lit_itpo.nets.mlp import MLP, GaussianActor, TanhActor, TanhGaussianMode, ValueNet

__all__ = [
    "MLP",
    "EnsembleLinear",
    "EnsembleMLP",
    "GaussianActor",
    "TanhActor",
    "TanhGaussianMode",
    "TwinCritic",
    "ValueNet",
]
