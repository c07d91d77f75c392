"""The ITPO step and its batched-per-episode engine (no Lightning)."""

from lit_itpo.itpo.step import ITPOConfig, ITPOEngine, imagined_objective

__all__ = ["ITPOConfig", "ITPOEngine", "imagined_objective"]
