"""The optimiser every stage uses."""

from __future__ import annotations

import torch


def adam(params, lr: float, fused: bool = True) -> torch.optim.Adam:
    """Adam with the fused kernel: one op per step for all parameters (CPU and CUDA) instead
    of about ten per tensor; same math as the default implementation.

    ``fused=False`` takes the multi-tensor (``foreach``) kernels instead: Lightning refuses
    ``gradient_clip_val`` with a fused optimiser under mixed precision (it assumes the
    optimiser unscales gradients itself), so stages that clip use that.
    """
    if fused:
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)
