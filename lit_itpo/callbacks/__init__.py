"""Callbacks: everything that touches an environment."""

from lit_itpo.callbacks.evaluation import EpisodeEvalCallback

__all__ = ["EpisodeEvalCallback"]
