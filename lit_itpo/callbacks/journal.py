"""The ITPO evaluation's journal: an evaluation stopped part-way continues where it stopped.

One ITPO evaluation runs its episodes in one batch for up to ~40 minutes per world model
(20 HalfCheetah episodes of 1000 steps), inside a single validation step: without a journal, a
stop (a scheduler's SIGTERM, a session's end) lost all of it. Every ``every`` env steps the
callback writes, per world model and rank, ``<default_root_dir>/itpo_journal/<name>.rank<r>.pt``
(atomically): the actions taken so far ``[k, N, act_dim]``, the observation the last of them
was chosen at, and the state after it (each episode's psi and optimiser moments, the
world-model noise generators, the logged statistics). A rerun of the same evaluation replays
those actions in fresh envs of the same seeds (MuJoCo is deterministic: the episodes reach the
same states, which is checked bit for bit at the last recorded step), restores the state and
goes on: the result is the uninterrupted run's. A finished world model's (and the base
policy's) episodes are kept whole, so they are not run again.

A journal is used only by the evaluation that wrote it: its key digests the episodes (env
seeds, step sizes, rank), the ITPO settings, the policy's weights, the world model's
checkpoint and the env. One of other inputs is set aside (``starting over``) and replaced; one
whose replay does not reach the recorded observation (another machine's MuJoCo build) is
dropped and the world model's episodes run from the start. The journal is removed once the
evaluation has written its results.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from lit_itpo.utils import atomic_torch_save, file_sha256

log = logging.getLogger(__name__)

JOURNAL_DIR = "itpo_journal"
JOURNAL_FORMAT = 1


class ReplayDiverged(RuntimeError):
    """The replayed episodes did not reach the journal's recorded observation."""


def module_digest(*modules: nn.Module | None) -> str:
    """SHA-256 of the modules' weights and buffers (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    for m in modules:
        if m is None:
            h.update(b"none")
            continue
        for k, v in sorted(m.state_dict().items()):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"{k}:{t.dtype}:{tuple(v.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_digest(path: str) -> str:
    """A world model's identity for the key: its checkpoint's content (the exact model's spec
    string as it is, e.g. ``auto``)."""
    return file_sha256(path) if Path(path).is_file() else str(path)


class Journal:
    """One world model's (or the base policy's) journal file for one rank.

    Args:
        folder: where the journal lives (None: off, nothing is read or written).
        name: ``base`` or the world model's name.
        rank: the DDP rank (each rank journals its own episodes).
        inputs: what the episodes depend on (JSON-able); its digest is the journal's key.
    """

    def __init__(self, folder: str | Path | None, name: str, rank: int, inputs: dict):
        self.path = None if folder is None else Path(folder) / f"{name}.rank{rank}.pt"
        blob = json.dumps({"format": JOURNAL_FORMAT, **inputs}, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()
        self.saved = self._load()

    def _load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: nothing to continue from
            log.warning("%s cannot be read (%s): starting over", self.path, type(exc).__name__)
            return None
        if not isinstance(blob, dict) or blob.get("key") != self.key:
            log.warning("%s is the journal of other inputs: starting over", self.path)
            return None
        return blob

    @property
    def result(self) -> dict | None:
        """The finished episodes' record, if the journal holds them."""
        return None if self.saved is None else self.saved.get("result")

    @property
    def partial(self) -> dict | None:
        """``{"actions" [k, N, A], "obs" [N, O], "state"}`` of a stopped run, if any."""
        if self.saved is None or "actions" not in self.saved:
            return None
        return self.saved

    def drop(self) -> None:
        """Forget what was read (the replay diverged): the episodes run from the start."""
        self.saved = None

    def save_partial(self, actions: list[torch.Tensor], obs: torch.Tensor, state: dict) -> None:
        self._save({"actions": torch.stack(actions), "obs": obs, "state": state})

    def save_result(self, result: dict) -> None:
        self._save({"result": result})

    def _save(self, blob: dict) -> None:
        """Write the journal (temp file + rename); a failed write (a full disk) is a warning:
        the evaluation goes on, only a stop would then cost more."""
        if self.path is None:
            return
        try:
            atomic_torch_save({"key": self.key, **blob}, self.path)
        except OSError as exc:
            log.warning("%s cannot be written (%s): the evaluation goes on", self.path, exc)

    def remove(self) -> None:
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # the last rank's file gone: the folder too
        except OSError:
            pass
