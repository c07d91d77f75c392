"""Callbacks: everything that touches an environment."""

from lit_itpo.callbacks.evaluation import EpisodeEvalCallback
from lit_itpo.callbacks.itpo import ITPOCallback

__all__ = ["EpisodeEvalCallback", "ITPOCallback"]
