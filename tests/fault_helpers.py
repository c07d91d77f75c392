"""Fault injection for tests/test_faults.py: a callback that signals its own process."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Send ``sig`` (``TERM`` or ``KILL``) to this process after training batch ``step``
    (1-based global step), or as the ``validation``-th validation starts (the evaluation
    episodes then stop at their first env step)."""

    def __init__(self, step: int = 0, sig: str = "TERM", validation: int = 0):
        self.step, self.sig, self.validation = step, sig, validation
        self._vals = 0

    def _fire(self) -> None:
        os.kill(os.getpid(), getattr(signal, f"SIG{self.sig}"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step and trainer.global_step == self.step:
            self._fire()

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.validation:
            return
        self._vals += 1
        if self._vals == self.validation:
            self._fire()
