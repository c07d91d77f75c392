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

    @staticmethod
    def checksums(pl_module) -> dict[str, float]:
        return {
            n: float(p.detach().double().sum()) + float(p.detach().double().abs().sum())
            for n, p in pl_module.named_parameters()
            if p.requires_grad
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = float(batch["observation"].double().sum())
            self.initial = self.checksums(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        out = os.environ["LIT_ITPO_PROBE_DIR"]
        record = {
            "world_size": trainer.world_size,
            "first_batch": self.first_batch,
            "initial": self.initial,
            "sums": self.checksums(pl_module),
        }
        with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as fh:
            json.dump(record, fh)


class EvalProbe(pl.Callback):
    """After validation, every rank writes the gathered per-episode values of each evaluation
    callback (base policy and each ITPO world model) to ``$LIT_ITPO_PROBE_DIR/eval<r>.json``."""

    def on_validation_end(self, trainer, pl_module) -> None:
        from lit_itpo.callbacks import EpisodeEvalCallback

        out: dict = {"world_size": trainer.world_size}
        for cb in trainer.callbacks:
            if isinstance(cb, EpisodeEvalCallback):
                runs = cb.last if "base" in cb.last else {"base": cb.last}
                for name, res in runs.items():
                    out[name] = {k: v.tolist() for k, v in res.items() if v.dim() == 1}
        path = os.path.join(os.environ["LIT_ITPO_PROBE_DIR"], f"eval{trainer.global_rank}.json")
        with open(path, "w") as fh:
            json.dump(out, fh)
