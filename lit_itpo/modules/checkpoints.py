"""Loading another stage's checkpoint with guards: stage, format, dims and dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lit_itpo.errors import CheckpointError, ConfigError


class StageCheckpoint:
    """Mixin for LightningModules: writes ``checkpoint["lit_itpo"] = {stage, format_version,
    algorithm, lit_itpo_version}``. Kept out of ``hparams`` because LightningCLI feeds a
    checkpoint's hparams back as init arguments under ``validate --ckpt_path``.

    Also :meth:`log_train`: training metrics logged only on the steps Lightning writes; and
    the ``compile`` option (hparam): the update's loss methods, named in ``compiled_losses``,
    go through ``torch.compile`` (:func:`compile_losses`).
    """

    compiled_losses: tuple[str, ...] = ()  # the training update's loss methods

    def configure_model(self) -> None:
        trainer = self._trainer  # None when called by hand (tests)
        fitting = trainer is None or trainer.state.fn == "fit"  # validate/test use no loss
        if self.hparams.get("compile", False) and fitting:
            compile_losses(self, self.compiled_losses)

    def log_train(self, metrics: dict) -> None:
        """``self.log_dict(metrics)`` on the batches whose metrics reach the logger (every
        ``trainer.log_every_n_steps``); skipped on the others, where Lightning would discard
        them after paying ~0.1 ms per value (10-20% of a small-network update)."""
        trainer = self._trainer  # None when a step is called by hand (tests): nothing to log
        if trainer is None:
            return
        # Lightning's own rule (its logger connector's should_update_logs), on public state:
        # the current batch's index over the whole fit, 0-based
        batch = trainer.fit_loop.epoch_loop.total_batch_idx
        if (batch + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop:
            self.log_dict(metrics)

    stage: str = ""
    format_version: int = 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from lit_itpo import __version__

        checkpoint["lit_itpo"] = {
            "stage": self.stage,
            "format_version": self.format_version,
            "algorithm": type(self).__name__,
            "lit_itpo_version": __version__,
        }


def compile_losses(module, names: tuple[str, ...]) -> None:
    """Replace ``module``'s loss methods ``names`` by ``torch.compile``d ones (once): Inductor
    fuses the element-wise work around the matmuls (LayerNorm, ReLU, the TD target, the
    losses) in the forward and, through AOTAutograd, the backward pass. The first update
    compiles (~30 s per stage on one CPU core, cold); the kernels are cached on disk
    (``$TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``), so a later run of
    the same stage starts warm. On CPU it needs a C++ compiler."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ConfigError(
            "model.compile=true needs a C++ compiler for torch.compile on CPU and none of "
            "g++, c++, clang++ is on PATH; install one (e.g. apt-get install g++) or pass "
            "--model.init_args.compile false."
        )
    for name in names:
        if name not in vars(module):  # not yet replaced (configure_model runs per trainer call)
            setattr(module, name, torch.compile(getattr(module, name)))


def set_obs_normalisers(module, stage: str, nets) -> None:
    """At ``fit``, copy the DataModule's training-split state statistics into the ``obs_norm``
    buffers of ``nets`` (they then travel in the checkpoint); nothing otherwise."""
    dm = getattr(module.trainer, "datamodule", None)
    if stage == "fit" and dm is not None and dm.stats:
        for net in nets:
            net.obs_norm.set(dm.stats["obs_mean"], dm.stats["obs_std"])


def read_hparams(path: str | Path) -> dict:
    """A checkpoint's ``hyper_parameters`` merged with its ``lit_itpo`` stage record."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; pass the path of a .ckpt file.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors; torch's own advice (weights_only=False) is unsafe
        reason = "truncated or damaged" if "zip" in str(exc).lower() else "not a torch checkpoint"
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({reason}, {type(exc).__name__}); pass a "
            "complete .ckpt written by `lit-itpo fit`."
        ) from None
    hp = blob.get("hyper_parameters") if isinstance(blob, dict) else None
    if not isinstance(hp, dict):
        raise CheckpointError(f"Checkpoint {path} has no hyper_parameters; is it from lit_itpo?")
    return {**hp, **blob.get("lit_itpo", {})}


def check_compatible(
    path: str | Path,
    hp: dict,
    *,
    stage: str,
    format_version: int,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
) -> None:
    """Raise :class:`CheckpointError` naming the mismatch when a checkpoint does not fit."""
    got = hp.get("stage")
    if got != stage:
        raise CheckpointError(
            f"Checkpoint {path} is from stage '{got}', not '{stage}'; pass a {stage} checkpoint."
        )
    if hp.get("format_version") != format_version:
        raise CheckpointError(
            f"Checkpoint {path} has format_version {hp.get('format_version')}, this lit_itpo "
            f"reads {format_version}; retrain that stage with this version."
        )
    for name, want in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if want is not None and hp.get(name) != want:
            raise CheckpointError(
                f"Checkpoint {path} has {name}={hp.get(name)} but the data has {name}={want}; "
                "use a checkpoint trained on this dataset."
            )
    if dataset_id is not None and hp.get("dataset_id") != dataset_id:
        raise CheckpointError(
            f"Checkpoint {path} was trained on '{hp.get('dataset_id')}', not '{dataset_id}'; "
            "use a checkpoint of this dataset."
        )


def load_stage(
    path: str | Path,
    cls,
    *,
    stage: str,
    format_version: int,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location="cpu",
    hparams: dict | None = None,
    **overrides,
):
    """``cls.load_from_checkpoint(path)`` in eval mode and frozen, after
    :func:`check_compatible`; ``overrides`` replace saved init arguments."""
    hp = read_hparams(path) if hparams is None else hparams
    check_compatible(
        path,
        hp,
        stage=stage,
        format_version=format_version,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
    )
    module = cls.load_from_checkpoint(
        path, map_location=map_location, weights_only=True, **overrides
    )
    module.eval().requires_grad_(False)
    return module
