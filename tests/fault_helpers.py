"""Fault injection for tests/test_faults.py: a callback that signals its own process."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Send ``sig`` (``TERM``, ``INT`` or ``KILL``) to this process after training batch
    ``step`` (1-based global step), or as the ``validation``-th validation starts (the
    evaluation episodes then stop at their first env step). ``mid_step``: inside the next
    batch's update instead, just before its first optimizer step (a Ctrl-C falls anywhere).
    ``times``: the signal sent that many times in a row (Ctrl-C twice: stop at once, unsaved)."""

    def __init__(
        self,
        step: int = 0,
        sig: str = "TERM",
        validation: int = 0,
        mid_step: bool = False,
        times: int = 1,
    ):
        self.step, self.sig, self.validation, self.mid_step = step, sig, validation, mid_step
        self.times = times
        self._vals = 0
        self._fired = False

    def _fire(self) -> None:
        if not self._fired:  # once: a second SIGINT means "stop at once"
            self._fired = True
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, f"SIG{self.sig}"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step and not self.mid_step and trainer.global_step == self.step:
            self._fire()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.step and self.mid_step and trainer.global_step == self.step:
            self._fire()

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.validation:
            return
        self._vals += 1
        if self._vals == self.validation:
            self._fire()


class RaiseAt(Callback):
    """Raise ``error`` (a builtin exception's name, e.g. ``OSError``) as the ``validation``-th
    validation starts (sanity checks not counted): an error inside a run, before the
    checkpoint that validation would have saved."""

    def __init__(self, validation: int = 1, error: str = "RuntimeError"):
        self.validation, self.error = validation, error
        self._vals = 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._vals += 1
        if self._vals == self.validation:
            import builtins

            raise getattr(builtins, self.error)(f"injected {self.error} in validation")
