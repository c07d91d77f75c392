"""Plain ``nn.Module`` building blocks (no Lightning)."""

from lit_itpo.nets.ensemble import EnsembleLinear, EnsembleMLP, TwinCritic
from lit_itpo.nets.mlp import MLP, TanhActor

__all__ = ["MLP", "EnsembleLinear", "EnsembleMLP", "TanhActor", "TwinCritic"]
