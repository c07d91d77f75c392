"""lit_itpo: Inference Time Policy Optimization (arXiv 2603.22430) on Lightning + TorchRL."""

from __future__ import annotations

__version__ = "0.1.0"
