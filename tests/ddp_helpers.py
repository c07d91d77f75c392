"""Callbacks for the multi-process tests (imported by class_path in a subprocess)."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl


class WeightSyncProbe(pl.Callback):
    """Every rank writes a checksum of its first training batch and, after training, of each
    trainable parameter to ``$LIT_ITPO_PROBE_DIR/rank<r>.json``: different batches but equal
    parameters mean DDP synchronised the gradients."""

    def __init__(self):
        self.first_batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = float(batch["observation"].double().sum())

    def on_train_end(self, trainer, pl_module) -> None:
        out = os.environ["LIT_ITPO_PROBE_DIR"]
        sums = {
            n: float(p.detach().double().sum()) + float(p.detach().double().abs().sum())
            for n, p in pl_module.named_parameters()
            if p.requires_grad
        }
        with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as fh:
            json.dump(
                {"world_size": trainer.world_size, "first_batch": self.first_batch, "sums": sums},
                fh,
            )
