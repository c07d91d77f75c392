"""The ITPO step and its batched-per-episode engine (no Lightning)."""

from lit_itpo.itpo.policy import PolicyParts
from lit_itpo.itpo.step import (
    ITPOConfig,
    ITPOEngine,
    episode_generators,
    episode_noise,
    imagined_returns,
    objective,
)

__all__ = [
    "ITPOConfig",
    "ITPOEngine",
    "PolicyParts",
    "episode_generators",
    "episode_noise",
    "imagined_returns",
    "objective",
]
