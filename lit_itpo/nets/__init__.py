"""Plain ``nn.Module`` building blocks (no Lightning)."""

from lit_itpo.nets.mlp import MLP, TanhActor

__all__ = ["MLP", "TanhActor"]
