"""LightningCLI for the stages (``fit|validate|test``), with the project's guards.

Faults: every bad input ends in one line (a :class:`~lit_itpo.errors.LitItpoError` the
entry point prints as ``lit-itpo: error: ...``, exit status 2), checked before a run directory
is made (config files, argument names and types, trainer values, ``--ckpt_path``: exists, is a
readable checkpoint of the configured class, of this dataset and shape). A run stopped by
SIGTERM or SIGINT (Ctrl-C) finishes its current batch and saves ``last.ckpt``
(:class:`StopSignals`); ``fit --ckpt_path last`` continues the newest run of that logger
directory (same ``tb/version_N``) and reaches the step and weights an uninterrupted run would.

:func:`lightning_main` takes command-line arguments (``lit-itpo fit ...``) or a config dict
(the typed stage runs of :mod:`lit_itpo.stages`); :func:`parse_dataclass_command` gives the
dataclass commands (``collect``, ``pipeline``) the same conventions.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import (
    Callback,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.errors import CheckpointError, ConfigError, LitItpoError, StorageError
from lit_itpo.utils import atomic_torch_save, remove_dir, remove_stale_temps, temp_prefix

log = logging.getLogger(__name__)

# Dataset facts every stage takes from the DataModule (``apply_on="instantiate"``: they are read
# from the dataset's metadata when the DataModule is built).
LINKED = ("obs_dim", "action_dim", "action_low", "action_high", "dataset_id")

# What the last stop by signal saved, and which signal (for the one-line message in ``main``).
_STOPPED: dict = {}


# --- argument errors -> one line -------------------------------------------------------------
# A negative number as a value: argparse (before Python 3.13) takes "-1e-3", "-inf" or "-nan"
# for an option (its matcher knows only "-1" and "-1.5") and says "expected one argument"
NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-\.?(inf|infinity|nan)$", re.IGNORECASE
)


def _raw_value(option: str, args: Sequence[str]) -> str | None:
    """What the command line gave ``option`` (its last occurrence), or None."""
    args = [str(a) for a in args]
    found = None
    for i, a in enumerate(args):
        if a == option and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith(option + "="):
            found = a.split("=", 1)[1]
    return found


def _type_error_line(prog: str, message: str, args: Sequence[str]) -> str | None:
    """A value of the wrong type (nan / inf for a number, 1e6 for an int, ...) as one short
    line naming the option and the value; None where ``message`` is no such error."""
    head = re.search(r'Parser key "([\w.]+)"', message)
    if head is None:
        return None
    option, text = f"--{head.group(1)}", message
    blocks = re.split(r"- Problem with given class_path '[\w.]+':", message)
    if len(blocks) > 1:  # a class's argument (model, callbacks): the class that took the value
        block = next((b for b in blocks[1:] if "Expected a <class" in b), None)
        inner = re.search(r'Parser key "([\w.]+)"', block or "")
        if block is None or inner is None:
            return None
        option, text = f"{option}.init_args.{inner.group(1)}", block
        text = re.split(r"\n {0,4}(?:- |Given value)", text)[0]  # the outer union's lines off
    types = [t for t in re.findall(r"Expected a <class '(\w+)'>", text) if t != "NoneType"]
    if not types:
        return None
    got = re.search(r"Got value: (.+)", text)
    got = got.group(1).strip() if got else None
    given = re.findall(r"Given value: (?!NestedArg)(.+)", text)
    nested = re.search(r"NestedArg\(key='[\w.]+', val='(.*)'\)", message)
    raw = _raw_value(option, args) or (nested.group(1) if nested else None)
    value = raw or (given[-1].strip() if given else got) or "?"
    element = got or value
    nullable = bool(re.search(r"Subtypes: \[.*NoneType", text))
    kind = "a whole number" if "int" in types and "float" not in types else "a finite number"
    if element.strip("'\" ").lower().lstrip("+-.") in ("nan", "inf", "infinity"):
        what = "is" if element == value else f"has {element},"
        return (
            f"{option} {value} {what} not a finite number; pass {kind}"
            f"{' (or null)' if nullable else ''}."
        )
    if "int" in types and got and re.fullmatch(r"-?\d+\.0", got):
        return (
            f"{option} {value} is read as the float {got}, not a whole number; pass it "
            f"without an exponent or decimal point: {option} {got[:-2]}."
        )
    names = " or ".join(types) + (" or null" if nullable else "")
    what = "is" if element == value else f"has {element},"
    return f"{option} {value} {what} not of type {names}; pass such a value (`{prog} --help`)."


def _parse_error_line(prog: str, message: str, args: Sequence[str] = ()) -> str:
    """jsonargparse's multi-line parse error as one sentence with the fix."""
    typed = _type_error_line(prog, message, args)
    if typed is not None:
        return typed
    unknown = re.search(r"class_path '([\w.]+)':\s*Option '([^']+)' is not accepted", message)
    if unknown:
        cls, key = unknown.groups()
        head = re.search(r'Parser key "([\w.]+)"', message)
        group = head.group(1) if head else "model"
        return (
            f"--{group}.init_args.{key} is not an argument of {cls}; list its arguments with "
            f"`{prog} --{group}.help {cls}`."
        )
    noise = (
        "Does not validate against any of the",
        "Subtypes:",
        "Errors:",
        "Given value type:",
        "- Expected a <class 'NoneType'>",
    )
    lines = [ln.strip() for ln in message.splitlines()]
    text = " ".join(ln for ln in lines if ln and not ln.startswith(noise))
    text = re.sub(r"\s+", " ", text).rstrip(".")
    return f"{prog}: {text}; see `{prog} --help` for the accepted options."


def _parse_or_one_line(parser, parse, args):
    """``parse(args)`` with the parser's errors raised (``exit_on_error`` off for this call
    only: jsonargparse's nested parsers keep theirs) and turned into one-line
    :class:`ConfigError` s instead of the whole usage before the reason."""
    from jsonargparse import ArgumentError

    action = getattr(parser, "_subcommands_action", None)
    subs = dict(action._name_parser_map) if action is not None else {}
    parsers = [parser, *subs.values()]
    old = [p.exit_on_error for p in parsers]
    for p in parsers:
        p.exit_on_error = False
        p._negative_number_matcher = NEGATIVE_NUMBER  # no option here looks like a number
    try:
        return parse(args)
    except ArgumentError as exc:
        argv = [] if isinstance(args, dict) else list(args or sys.argv[1:])
        sub = next((a for a in (args or sys.argv[1:]) if a in subs), None)
        prog = f"{parser.prog} {sub}" if sub else parser.prog
        raise ConfigError(_parse_error_line(prog, str(exc), argv)) from None
    finally:
        for p, o in zip(parsers, old, strict=True):
            p.exit_on_error = o


def is_a_folder(named: str, path: str | Path, pattern: str, example: str) -> str:
    """The message for a folder ``path`` given where a file is expected (``named``: the option
    and value as the user wrote them): the files of ``pattern`` in it (up to 3), else
    ``example``."""
    found = sorted(str(p) for p in Path(path).glob(pattern))
    some = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    hint = f"one of those in it: {some}" if found else f"e.g. {example}"
    return f"{named} is a directory, not a file; pass a file ({hint})."


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config FILE`` exists and is YAML (a syntax error names its file and line)."""
    args = list(args)
    files = [b for a, b in zip(args, args[1:], strict=False) if a == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for f in files:
        if "\n" in f or (":" in f and not Path(f).exists()):
            continue  # an inline YAML string, not a file
        path = Path(f)
        if path.is_dir():
            raise ConfigError(
                is_a_folder(f"--config {f}", f, "*.yaml", "conf/embedded/rebrac.yaml")
            )
        if not path.is_file():
            raise ConfigError(
                f"--config {f} does not exist; pass the path of a YAML file "
                "(e.g. conf/embedded/rebrac.yaml)."
            )
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(
                f"--config {f} is not valid YAML{where} ({problem}); fix the syntax there."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--config {f} cannot be read ({exc}); pass a YAML text file."
            ) from None


def check_trainer_values(cfg: dict, subcommand: str | None = "fit") -> None:
    """Trainer values Lightning accepts at construction but fails on later (a division by
    zero mid-run, or a silent no-op: a fit with a budget of 0 steps or epochs exits 0 with a
    run directory and no checkpoint)."""
    if subcommand in (None, "fit"):
        for key, unit, other in (
            ("max_steps", "updates", "max_epochs"),
            ("max_epochs", "epochs", "max_steps"),
        ):
            if cfg.get(key) == 0 and not isinstance(cfg.get(key), bool):
                raise ConfigError(
                    f"--trainer.{key}=0 trains nothing; pass a budget >= 1 ({unit}), or -1 for "
                    f"no limit ({other} then ends the run)."
                )
    at_least = {
        "accumulate_grad_batches": 1,
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": -1,
        "gradient_clip_val": 0,
    }
    for key, low in at_least.items():
        val = cfg.get(key)
        if isinstance(val, int | float) and not isinstance(val, bool) and val < low:
            raise ConfigError(
                f"--trainer.{key}={val} must be >= {low}; fix it on the command line or in the "
                "config's trainer section."
            )


def check_accelerator(accelerator) -> None:
    """A GPU accelerator asked where none is visible (Lightning: "No supported gpu backend
    found!", naming no value)."""
    name = str(accelerator).lower() if isinstance(accelerator, str) else None
    mps = getattr(torch.backends, "mps", None)
    visible = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(mps and mps.is_available()),
    }
    visible["gpu"] = visible["cuda"] or visible["mps"]
    if name in visible and not visible[name]:
        raise ConfigError(
            f"--trainer.accelerator={accelerator}: no GPU is visible to this process "
            f"(torch sees no {'CUDA or MPS' if name == 'gpu' else name.upper()} device); use "
            "--trainer.accelerator cpu, or auto (a GPU where one is visible, else the CPU)."
        )


def check_writable(folder: str | Path, named: str) -> None:
    """``folder`` can be made and written (its nearest existing part is a writable folder);
    else a :class:`ConfigError` naming ``named`` (the option) and the folder."""
    import os

    path = Path(folder).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    why = "not a folder" if not probe.is_dir() else "read-only for this process"
    where = f"{probe} is {why}" if probe != path else why
    raise ConfigError(
        f"{named}={folder} is not writable ({where}); pass a folder you can write to, or make "
        "that one writable."
    )


def init_defaults(class_path: str) -> dict:
    """The ``__init__`` defaults of the class a config's ``class_path`` names (e.g.
    ``lit_itpo.modules.WorldModelModule``), for reading a config file as LightningCLI would."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    return {k: p.default for k, p in params.items() if p.default is not p.empty}


# --- checkpoints -----------------------------------------------------------------------------
def read_checkpoint(path: str | Path, what: str = "--ckpt_path") -> dict:
    """A stage checkpoint (``weights_only``), or :class:`CheckpointError` naming what is wrong."""
    if Path(path).is_dir():
        ckpts = "*.ckpt" if any(Path(path).glob("*.ckpt")) else "**/checkpoints/*.ckpt"
        example = "<save_dir>/tb/version_N/checkpoints/last.ckpt"
        raise CheckpointError(is_a_folder(f"{what} {path}", path, ckpts, example))
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{what} {path} does not exist; pass a .ckpt file written by `lit-itpo fit` (in "
            "<save_dir>/tb/version_N/checkpoints/), or `--ckpt_path last` to resume the newest run."
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors: all mean "not a checkpoint"
        reason = "truncated or damaged" if "zip" in str(exc).lower() else "not a torch checkpoint"
        raise CheckpointError(
            f"{what} {path} cannot be read as a Lightning checkpoint ({reason}, "
            f"{type(exc).__name__}); pass a complete .ckpt written by `lit-itpo fit`."
        ) from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "lit_itpo" not in blob:
        raise CheckpointError(
            f"{what} {path} is not a lit_itpo stage checkpoint (no state_dict and lit_itpo "
            "record); pass a .ckpt written by `lit-itpo fit`."
        )
    return blob


def _class_name(class_path: str | None) -> str:
    return (class_path or "").rsplit(".", 1)[-1]


def check_checkpoint_class(path: str | Path, blob: dict, class_path: str | None) -> None:
    """The checkpoint was written by the configured model class (LightningCLI would otherwise
    swap in the checkpoint's class and run another stage)."""
    rec = blob["lit_itpo"]
    got, want = rec.get("algorithm"), _class_name(class_path)
    if want and got != want:
        raise CheckpointError(
            f"--ckpt_path {path} holds a {got} (stage '{rec.get('stage')}') but the config's "
            f"model is {class_path}; pass a {want} checkpoint, or the config of the stage that "
            "wrote this one."
        )


def check_checkpoint_data(path: str | Path, blob: dict, dm: MinariDataModule) -> None:
    """The checkpoint's dims and dataset are the DataModule's."""
    hp = blob.get("hyper_parameters") or {}
    for name in ("obs_dim", "action_dim"):
        if name in hp and hp[name] != getattr(dm, name):
            raise CheckpointError(
                f"--ckpt_path {path} has {name}={hp[name]} but dataset '{dm.dataset_id}' has "
                f"{name}={getattr(dm, name)}; pass a checkpoint trained on this dataset or "
                f"--data.dataset_id {hp.get('dataset_id') or '<its dataset>'}."
            )
    if hp.get("dataset_id") and hp["dataset_id"] != dm.dataset_id:
        raise CheckpointError(
            f"--ckpt_path {path} was trained on '{hp['dataset_id']}', not '{dm.dataset_id}'; "
            f"pass --data.dataset_id {hp['dataset_id']} or a checkpoint of this dataset."
        )


def check_checkpoint_budget(path: str | Path, blob: dict, max_steps: int) -> None:
    """A fit resumed from a checkpoint is not already past its ``max_steps`` (Lightning would
    end at once, "max_steps reached", exit 0, with the checkpoint beyond the budget asked)."""
    step = blob.get("global_step")
    if isinstance(step, int) and max_steps is not None and 0 <= max_steps < step:
        raise CheckpointError(
            f"--ckpt_path {path} holds step {step}, past --trainer.max_steps={max_steps}: there "
            f"is nothing left to train; pass --trainer.max_steps {step} or more to continue "
            "that run, or fit without --ckpt_path (another save_dir) for a run of "
            f"{max_steps} steps."
        )


def _version_of(ckpt: Path) -> int | str | None:
    """The logger version a checkpoint under ``<root>/<version>/checkpoints/`` belongs to."""
    name = ckpt.parent.parent.name
    if ckpt.parent.name != "checkpoints":
        return None
    return int(name[len("version_") :]) if re.fullmatch(r"version_\d+", name) else name


def find_last_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The newest readable checkpoint of this run's logger directory (any version; last.ckpt
    first when several share a step), or None. Unreadable files (a kill during a write) are
    skipped."""
    logger = trainer.logger
    if logger is not None and getattr(logger, "root_dir", None):
        found = list(Path(logger.root_dir).glob("*/checkpoints/*.ckpt"))
    else:
        found = list(Path(trainer.default_root_dir).glob("checkpoints/*.ckpt"))
    found.sort(key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    for path in found:
        try:
            read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        return path
    return None


def remove_attempt(log_dir: Path, up_to: Path | None = None) -> bool:
    """The one rule for a run's log folder (``<save_dir>/tb/version_N``) that holds no
    checkpoint: nothing in it can be resumed (an attempt that failed, or was stopped or killed
    before its first save), so it is removed (renamed aside first) instead of staying beside
    the next attempt's ``version_N+1``; then its parents up to ``up_to`` (excluded) that are
    left empty. A folder with a checkpoint is kept. Returns whether it was removed."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir() or any(log_dir.rglob("*.ckpt")):
        return False
    remove_dir(log_dir)
    parent = log_dir.parent
    while up_to is not None and parent != up_to and parent.is_relative_to(up_to):
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return True


def remove_stopped_attempts(log_root: Path) -> list[Path]:
    """Before a run that starts over: every ``version_*`` folder under ``log_root`` (the
    logger's ``<save_dir>/tb``) that holds no checkpoint, by :func:`remove_attempt`, so the run
    logs into its own ``version_0``. Returns what was removed."""
    removed = []
    for folder in sorted(Path(log_root).glob("version_*")):
        if remove_attempt(folder):
            log.info("removed %s, the logs of an attempt that saved no checkpoint", folder)
            removed.append(folder)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint written whole or not at all: ``torch.save`` to a temp file beside it
    (``.tmp-<pid>-<name>.*.tmp``), synced, then renamed over it. Lightning's own writer goes
    through a temp file in ``$TMPDIR`` and a move, which across filesystems is a copy that a
    full disk stops half-way, leaving a truncated ``.ckpt`` that the next ``--ckpt_path last``
    skipped. A failed write is a :class:`StorageError` (one line) with the earlier checkpoints
    as they were; a killed writer's temp file is removed by the next save in that folder."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote: Lightning's own
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path.parent)
            atomic_torch_save(checkpoint, path, prefix=f"{temp_prefix()}{path.name}.", fsync=True)
        except OSError as exc:
            raise StorageError.writing(
                path, exc, kept=" and the earlier checkpoints are as they were"
            ) from None


class RunCheckpoint(ModelCheckpoint):
    """Lightning's checkpointing at every validation, plus ``last.ckpt``, the final step (also
    when ``max_steps`` is not a multiple of ``val_check_interval``) and a save on SIGTERM or
    Ctrl-C, so ``--ckpt_path last`` continues exactly where a run stopped."""

    def __init__(self):
        super().__init__(save_last=True)

    def _save_now(self, trainer: pl.Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_now(trainer)
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # SIGTERMException: a stop at a batch's end (SIGTERM or SIGINT, :class:`StopSignals`);
        # a KeyboardInterrupt (a second Ctrl-C) can fall mid-update, where a save would hold
        # half a step, so the run resumes from its last save instead
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.global_step > 0:
            if self._last_global_step_saved != trainer.global_step:
                self._save_now(trainer)
            _STOPPED.update(step=trainer.global_step, ckpt=self.last_model_path)


class StopSignals(_SignalConnector):
    """Lightning's signal handling, with SIGINT (Ctrl-C) handled as it handles SIGTERM: the
    trainer notes it and stops at the end of the current batch (or at the next env step of an
    evaluation) with a ``SIGTERMException``, so :class:`RunCheckpoint` saves a whole step and a
    resumed run matches an uninterrupted one. Lightning's own Ctrl-C handling stops mid-update
    and exits 1. A second Ctrl-C stops at once (``KeyboardInterrupt``; nothing saved). The
    signal's name goes to ``_STOPPED["signal"]`` for the entry point's exit status."""

    def register_signal_handlers(self) -> None:
        super().register_signal_handlers()
        _STOPPED.clear()  # a new run: nothing stopped yet
        self._register_signal(signal.SIGINT, self._sigint_notifier_fn)

    def _sigterm_notifier_fn(self, signum, frame) -> None:
        _STOPPED.setdefault("signal", signal.Signals(signum).name)
        super()._sigterm_notifier_fn(signum, frame)

    def _sigint_notifier_fn(self, signum, frame) -> None:
        if self.received_sigterm:
            raise KeyboardInterrupt
        log.info("Ctrl-C: stopping after the current batch (Ctrl-C again stops at once)")
        _STOPPED.setdefault("signal", "SIGINT")
        # Not passed on to DDP's child processes as Lightning passes SIGTERM on: Ctrl-C reaches
        # the terminal's whole process group already (a second one would stop them at once),
        # and rank 0 broadcasts its stop to every rank at each step.
        self.received_sigterm = True


class RNGState(Callback):
    """Torch's global RNG in every checkpoint, restored where training (or a validation cut
    short) continues, so a resumed run draws the noise the uninterrupted run would have."""

    def __init__(self):
        self._at_val_start: dict | None = None
        self._pending: dict | None = None

    @staticmethod
    def _now() -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    @staticmethod
    def _set(state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def state_dict(self) -> dict:
        # saved mid-validation (a stop): the state at its start, as the validation is rerun
        return dict(self._at_val_start or self._now())

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def _apply(self) -> None:
        if self._pending is not None:
            self._set(self._pending)
            self._pending = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._apply()
            self._at_val_start = self._now()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._at_val_start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._apply()


class StepProgressBar(TQDMProgressBar):
    """One bar over the run's updates (the stages train for ``max_steps`` updates, so
    Lightning's per-data-epoch "Epoch 2/-2" said nothing), labelled with the stage, without
    Lightning's ``v_num``. Where stdout is not a terminal (a log file, CI) a bar's every redraw
    is a line of its own: there it redraws once per tenth of the run and the validation bars
    (seconds long) are off."""

    def _tty(self) -> bool:
        return sys.stdout.isatty()

    def init_validation_tqdm(self):
        return super().init_validation_tqdm() if self._tty() else Tqdm(disable=True)

    def init_sanity_tqdm(self):
        return super().init_sanity_tqdm() if self._tty() else Tqdm(disable=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self.train_progress_bar
        total = trainer.max_steps if trainer.max_steps > 0 else None
        if bar.total != total:  # once per run (a resumed run starts where it stopped)
            bar.reset(total=total)
            bar.n = trainer.global_step
            bar.set_description(f"{type(pl_module).__name__} (updates)")
            bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar, n = self.train_progress_bar, trainer.global_step
        every = self.refresh_rate if self._tty() else max(1, (bar.total or 10) // 10)
        if self.is_enabled and (n % every == 0 or n == bar.total):
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # one bar for the whole run: nothing to close between data epochs


class StageSummary(ModelSummary):
    """Lightning's model summary as one line per top-level part, without its FLOPs column and
    total (always 0 here: the stages define no ``example_input_array``)."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, *_, **__
    ) -> None:
        cols = dict(summary_data)
        parts = ", ".join(
            f"{name} {params}" for name, params in zip(cols["Name"], cols["Params"], strict=True)
        )
        log.info(
            "model: %s trainable of %s parameters (%.1f MB): %s",
            get_human_readable_count(int(trainable_parameters)),
            get_human_readable_count(int(total_parameters)),
            model_size,
            parts,
        )


class LitItpoCLI(LightningCLI):
    """LightningCLI with dataset dims and bounds linked into the model, one-line errors and
    checkpoint guards."""

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Command-line lists, or (the project's own callers, :mod:`lit_itpo.stages`) a config
        dict ``{"subcommand": ..., <subcommand>: {...}}``."""
        parse = parser.parse_object if isinstance(args, dict) else parser.parse_args
        self.config = _parse_or_one_line(parser, parse, args)

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _subcommand_parser(self, trainer_class, subcommand: str):
        """As LightningCLI's; ``validate``/``test`` default to ``verbose: false``: Lightning's
        box of every logged key is replaced by the callbacks' one-line summaries (pass
        ``--verbose true`` for the box)."""
        parser = super()._subcommand_parser(trainer_class, subcommand)
        if "verbose" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(verbose=False)
        return parser

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` (exists, readable, the configured class) before LightningCLI
        reads its hyperparameters; ``last`` is resolved once the logger is known."""
        self._ckpt_blob = None
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path == "best":  # Lightning's: the best of this process's own ModelCheckpoint
            raise CheckpointError(
                "--ckpt_path best: the stages' checkpoints monitor no metric, so none is 'best' "
                "(and a new run has no best of its own yet); pass a checkpoint file, or last "
                "(the newest of this run's logger folder)."
            )
        if ckpt_path is None or ckpt_path == "last":
            return
        self._ckpt_blob = read_checkpoint(ckpt_path)
        check_checkpoint_class(ckpt_path, self._ckpt_blob, self._model_class_path())
        super()._parse_ckpt_path()

    def _model_class_path(self) -> str | None:
        model = self.config[self.config.subcommand].get("model")
        return model.get("class_path") if model is not None else None

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but our own errors from a class's ``__init__`` (a bad config
        value, a checkpoint of the wrong stage) surface as themselves: jsonargparse wraps them
        in a ValueError listing every subclass it tried."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            cause = exc
            while cause is not None and not isinstance(cause, LitItpoError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        """Lightning's trainer with :class:`RunCheckpoint` (fit, unless checkpointing is off or
        a ModelCheckpoint is configured), :class:`RNGState` and :class:`AtomicCheckpointIO`
        (unless another CheckpointIO is configured); a value Lightning rejects is a
        :class:`ConfigError` naming it."""
        cfg = self._get(self.config_init, "trainer", default={})
        callbacks = cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if (
            self.subcommand in (None, "fit")
            and cfg.get("enable_checkpointing") is not False
            and not any(isinstance(c, ModelCheckpoint) for c in callbacks)
        ):
            callbacks.append(RunCheckpoint())
        callbacks.append(RNGState())
        if cfg.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(StepProgressBar())
        if cfg.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks
        ):
            callbacks.append(StageSummary())
        cfg["callbacks"] = callbacks
        check_trainer_values(cfg, self.subcommand)
        check_accelerator(cfg.get("accelerator"))
        try:
            with warnings.catch_warnings():  # the substitution below is refused instead
                warnings.filterwarnings("ignore", message=r"You passed `Trainer\(accelerator='cpu'")
                trainer = super().instantiate_trainer(**kwargs)
        except ImportError as exc:
            raise ConfigError(
                f"--trainer.accelerator={cfg.get('accelerator')!r} / --trainer.strategy="
                f"{cfg.get('strategy')!r} needs a package that is not installed ({exc}); "
                "install it or use accelerator auto."
            ) from None
        except (MisconfigurationException, ValueError, TypeError) as exc:
            msg = " ".join(str(exc).split()).rstrip(".")
            keys = [k for k in cfg.keys() if "." not in k]  # nested keys are dotted
            key = next((k for k in keys if re.search(rf"\b{k}\b", msg)), None)
            name = f"--trainer.{key}={cfg[key]!r}" if key else "a trainer value"
            raise ConfigError(
                f"{name} is rejected by Lightning: {msg}; fix it on the command line or in the "
                "config's trainer section."
            ) from None
        if str(cfg.get("precision")) in ("16", "16-mixed") and trainer.precision != "16-mixed":
            # Lightning has no fp16 autocast on a CPU: it trains in bf16-mixed instead, while
            # the saved config (and a resumed run's) says 16-mixed
            raise ConfigError(
                f"--trainer.precision={cfg['precision']} is not available on a "
                f"{type(trainer.accelerator).__name__.removesuffix('Accelerator')} accelerator "
                f"(Lightning would train in {trainer.precision} while the saved config says "
                "16-mixed); pass --trainer.precision bf16-mixed or 32-true, or run on a GPU."
            )
        trainer._signal_connector = StopSignals(trainer)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a configured one
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _resolve_checkpoint(self) -> None:
        """``--ckpt_path last`` -> the newest checkpoint of this logger directory (fit also logs
        into that run's version again; with none, fit starts over, after the logs of attempts
        stopped before their first checkpoint are removed by :func:`remove_stopped_attempts`);
        every checkpoint checked against the config and data."""
        sub = self.subcommand
        ckpt_path = self.config_init[sub].get("ckpt_path")
        if ckpt_path == "last":
            found = find_last_checkpoint(self.trainer)
            if found is None:
                if sub != "fit":
                    raise CheckpointError(
                        f"--ckpt_path last: no checkpoint under {self._ckpt_root()}; run "
                        "`lit-itpo fit` with this config first or pass a checkpoint file."
                    )
                log.info("no checkpoint under %s yet: starting at step 0", self._ckpt_root())
                logger = self.trainer.logger
                if logger is not None and getattr(logger, "root_dir", None):
                    # a killed attempt's logs hold nothing to resume: the run starts over in its
                    # own version_0, not in a version_1 beside them
                    remove_stopped_attempts(Path(logger.root_dir))
                self.config_init[sub]["ckpt_path"] = None
                return
            self._ckpt_blob = read_checkpoint(found)
            check_checkpoint_class(found, self._ckpt_blob, self._model_class_path())
            version = _version_of(found)
            if sub == "fit" and self.trainer.logger is not None and version is not None:
                self.trainer.logger._version = version  # continue that run's logs
            log.info("resuming from %s (step %d)", found, self._ckpt_blob.get("global_step", 0))
            self.config_init[sub]["ckpt_path"] = str(found)
        if self._ckpt_blob is not None and self.datamodule is not None:
            check_checkpoint_data(
                self.config_init[sub]["ckpt_path"], self._ckpt_blob, self.datamodule
            )
        if self._ckpt_blob is not None and sub == "fit":
            check_checkpoint_budget(
                self.config_init[sub]["ckpt_path"], self._ckpt_blob, self.trainer.max_steps
            )

    def _ckpt_root(self) -> str:
        logger = self.trainer.logger
        if logger is not None and getattr(logger, "root_dir", None):
            return f"{logger.root_dir}/*/checkpoints"
        return f"{self.trainer.default_root_dir}/checkpoints"

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a run that fails its checks leaves no run directory behind (one it made that
        holds no checkpoint is removed). The dataset is read and checked first
        (:meth:`MinariDataModule.load`), before the logger makes a directory."""
        logger = self.trainer.logger
        if logger is not None and getattr(logger, "save_dir", None):
            check_writable(logger.save_dir, "--trainer.logger.init_args.save_dir")
        check_writable(self.trainer.default_root_dir, "--trainer.default_root_dir")
        self._resolve_checkpoint()
        if subcommand in ("test", "predict") and not is_overridden(
            f"{subcommand}_step", self.model, pl.LightningModule
        ):
            raise ConfigError(
                f"`lit-itpo {subcommand}`: no stage defines a {subcommand} loop "
                f"({type(self.model).__name__} has no {subcommand}_step); use `lit-itpo validate` "
                "with the same arguments (the stages evaluate in their validation loop)."
            )
        if isinstance(self.datamodule, MinariDataModule):
            self.datamodule.load()
        logger = self.trainer.logger
        log_dir = Path(logger.log_dir).absolute() if logger is not None and logger.log_dir else None
        existed = log_dir is None or log_dir.exists()
        kept = log_dir  # the nearest folder that exists before the run: it stays
        while kept is not None and not kept.exists() and kept != kept.parent:
            kept = kept.parent
        try:
            super()._run_subcommand(subcommand)
        except Exception:  # an error (not a stop): this attempt's folder, if it saved nothing
            if not existed:
                remove_attempt(log_dir, up_to=kept)
            raise
        except SystemExit as exc:
            # Lightning's answer to a KeyboardInterrupt (a second Ctrl-C, or one before the
            # trainer's handlers are set): ``sys.exit(1)`` with SIGINT left ignored. Raised on
            # as the interrupt, for the entry point's one line and exit status 130.
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _STOPPED.setdefault("signal", "SIGINT")
            raise KeyboardInterrupt from None


def _no_advert(record: logging.LogRecord) -> bool:
    """Drops Lightning's "Tip: ... try installing litlogger" line (printed at every fit) and
    its note that the project's own model summary replaces its default one."""
    msg = str(record.msg)
    return not (msg.startswith("💡 Tip") or msg.startswith("Trainer already configured with"))


def lightning_main(args: Sequence[str] | dict | None = None, run: bool = True) -> LitItpoCLI:
    """Run LightningCLI (``fit|validate|test``) on ``args``: command-line arguments (default
    ``sys.argv[1:]``) or a config dict ``{"subcommand": "fit", "fit": {...}}``."""
    import lit_itpo.modules  # noqa: F401  (registers the model classes for class_path lookup)

    for handler in logging.getLogger("lightning.pytorch").handlers:  # its own, not the root's
        if _no_advert not in handler.filters:
            handler.addFilter(_no_advert)

    if not isinstance(args, dict):
        check_config_files(sys.argv[1:] if args is None else args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LitItpoCLI(
            pl.LightningModule,
            MinariDataModule,
            subclass_mode_model=True,
            args=args,
            run=run,
            parser_kwargs={
                "prog": "lit-itpo",
                "parser_mode": "omegaconf",
                "description": "lit_itpo: fit|validate|test a stage with LightningCLI. "
                "Datasets: `lit-itpo collect --help`; all stages: `lit-itpo pipeline --help`.",
            },
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )


def parse_dataclass_command(
    name: str, cls: type, description: str, args: Sequence[str], progress: bool = False
):
    """Parse ``lit-itpo <name> [--config F] [--<name>.field value ...]`` into a ``cls``
    instance, with LightningCLI's conventions (omegaconf interpolation, ``--print_config``).
    Returns ``(instance, namespace)``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    check_config_files(args)
    parser = ArgumentParser(
        prog=f"lit-itpo {name}", parser_mode="omegaconf", description=description
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(cls, name, as_group=True)
    if progress:
        parser.add_argument("--progress", type=bool, default=True, help="Show progress bars.")
    cfg = _parse_or_one_line(parser, parser.parse_args, list(args))
    return parser.instantiate_classes(cfg)[name], cfg
