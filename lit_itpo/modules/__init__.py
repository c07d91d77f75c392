"""LightningModules: wiring, optimisers, logging. The math lives in ``nets`` and loss functions."""

from lit_itpo.modules.bc import BCModule
from lit_itpo.modules.world_model import WorldModelModule, load_world_model

__all__ = ["BCModule", "WorldModelModule", "load_world_model"]
