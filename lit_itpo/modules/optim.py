"""The optimiser every stage uses."""

from __future__ import annotations

import torch


def adam(params, lr: float, fused: bool = True) -> torch.optim.Adam:
    """Adam with the fused kernel: one op per step for all parameters (CPU and CUDA) instead
    of about ten per tensor; same math as the default implementation.

    ``fused=False`` takes the per-tensor loop (on CPU faster than the ``foreach`` kernels:
    3.5 vs 6.0 ms a step for the world model's parameters, fused 0.8 ms): for fp16 with a
    gradient scaler, where Lightning refuses to clip a fused optimiser's gradients.
    """
    return torch.optim.Adam(params, lr=lr, fused=True if fused else None, foreach=False)
