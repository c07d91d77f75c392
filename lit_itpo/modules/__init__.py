"""LightningModules: wiring, optimisers, logging. The math lives in ``nets`` and loss functions."""

from lit_itpo.modules.bc import BCModule

__all__ = ["BCModule"]
