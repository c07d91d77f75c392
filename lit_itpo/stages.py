"""Typed stage runs below the CLI: ``fit_stage(spec) -> StageResult`` and
``evaluate(spec) -> EvalResult``; the pipeline and the benchmarks chain these calls.

A :class:`StageSpec` is what ``lit-itpo fit|validate --config <file> ...`` would get, as data:
the config file, the run's directory, the dataset, the budget and typed overrides. It runs
through the same LightningCLI (:func:`lit_itpo.lightning_cli.lightning_main` with a config dict, no
argument strings), so a stage behaves exactly as on the command line.

A run's result depends on its *inputs*: the stage config's content (the parsed YAML, not its
path), the dataset's content (:func:`lit_itpo.data.minari_io.dataset_digest`), the seed, the
budget (``max_steps``, ``val_every``), every other override, and the content of the checkpoints
it reads (upstream stages, the evaluated policy). A run records them (SHA-256 digests, paths
only for the messages) in ``run.json`` when it starts, and again in ``metrics.json`` with its
result and its checkpoint's digest when it ends; both files carry a checksum of themselves.
One rule decides what a run does (:func:`stage_state`), for every caller:

- **done**: ``metrics.json`` verifies, records these very inputs, and the checkpoint it names
  has the recorded digest: its result is returned without running;
- **resume** (fit): no result yet, a checkpoint under the run's directory, and ``run.json``
  records these very inputs: Lightning continues from it (``ckpt_path="last"``, the run's own
  ``last.ckpt``) and reaches the uninterrupted run's weights;
- **fresh**: nothing to reuse (no result, no checkpoint): the run starts at step 0, in its own
  ``tb/version_0`` (the logs of an attempt stopped before its first checkpoint, or of an
  evaluation stopped part-way, hold nothing to resume: they are removed first, not left beside a
  new ``version_1``); an ITPO evaluation stopped part-way continues its episodes from its
  journal (``itpo_journal/``, :mod:`lit_itpo.callbacks.journal`), which checks its own inputs;
- otherwise :class:`StaleRunError`, one line naming what changed (``seed 0 -> 1``, ``config
  conf/x.yaml content changed``, ``dataset ... was rewritten``, ``upstream checkpoint ...
  changed``), or the file that does not verify (``metrics.json`` edited or truncated, a
  checkpoint changed after its result was recorded, a run without a record); nothing is reused
  and nothing is overwritten. ``restart=True`` deletes such a run's directory and starts it
  over instead.

The budget is an input like the others: a run recorded with another ``max_steps`` is neither
reused nor continued, also for a larger budget (a fit extended past its budget is not the run a
fresh one would be: the cosine schedules decay over ``max_steps``, and the validation,
checkpoint and noise draws fall at other steps). Continuing a finished fit further by hand
stays possible with ``lit-itpo fit ... --ckpt_path last --trainer.max_steps N``.
Paths are not inputs: the same run spelled relative or absolute, a moved run directory, or a
copy of the dataset elsewhere give the same record. The code's own version is not recorded.

Each finished run writes one ``metrics.json`` in its directory (atomically), beside its
``run.json``, ``tb/version_N/`` logs and checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig
from lit_itpo.utils import file_sha256, remove_dir, write_record

log = logging.getLogger(__name__)

METRICS = "metrics.json"  # a finished run's result and what made it
RUN = "run.json"  # what a run is made from, written as it starts
RECORD_FORMAT = 2  # 1 (paths and file stamps) cannot be checked against content


@dataclass(frozen=True)
class StageSpec:
    """One run of a stage config.

    Attributes:
        command: ``"fit"`` or ``"validate"``.
        config: the stage's YAML (e.g. ``conf/embedded/rebrac.yaml``).
        root: the run's directory (TensorBoard logs, checkpoints, ``metrics.json``).
        dataset_id, data_dir: the dataset (``data_dir`` None: Minari's own root).
        seed: ``seed_everything``.
        max_steps: fit: the budget in updates; its final checkpoint must hold exactly this.
        val_every: fit: validation (and checkpoint) interval in updates.
        ckpt_path: validate: the checkpoint evaluated.
        overrides: dotted config keys -> values, e.g. ``{"model.init_args.hidden": [64]}``; a
            key through a list (``trainer.callbacks.init_args.x``) sets its last item, as the
            command line does.
    """

    command: str
    config: str
    root: str
    dataset_id: str
    data_dir: str | None = None
    seed: int = 0
    max_steps: int | None = None
    val_every: int | None = None
    ckpt_path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.command not in ("fit", "validate"):
            raise ConfigError(f"StageSpec command={self.command!r} must be 'fit' or 'validate'.")
        if self.command == "fit" and (self.max_steps is None or self.max_steps < 1):
            raise ConfigError(f"StageSpec max_steps={self.max_steps}: a fit needs a budget >= 1.")
        if self.command == "validate" and self.ckpt_path is None:
            raise ConfigError("StageSpec: validate needs ckpt_path, the checkpoint evaluated.")

    def to_config(self) -> dict:
        """The LightningCLI config of this run: the YAML with the spec's values set."""
        try:
            cfg = yaml.safe_load(Path(self.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"Stage config {self.config} cannot be read ({exc}).") from None
        values: dict[str, Any] = {
            "seed_everything": self.seed,
            "data.dataset_id": self.dataset_id,
            "data.data_dir": self.data_dir,  # always: the config's own (e.g. embedded) never wins
            "trainer.default_root_dir": self.root,
            "trainer.logger.init_args.save_dir": self.root,
        }
        if self.command == "fit":
            values["trainer.max_steps"] = self.max_steps
            if self.val_every is not None:
                values["trainer.val_check_interval"] = max(1, min(self.max_steps, self.val_every))
        for key, val in {**values, **self.overrides}.items():
            _set(cfg, key, copy.deepcopy(val))
        cfg["ckpt_path"] = "last" if self.command == "fit" else self.ckpt_path
        return cfg

    def inputs(self) -> list[str]:
        """The checkpoint files this run reads (its result depends on them)."""
        vals = [self.ckpt_path, *self.overrides.values()]
        return sorted({str(v) for v in vals if isinstance(v, str) and v.endswith(".ckpt")})


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    keys = dotted.split(".")
    for key in keys[:-1]:
        nxt = node.get(key)
        if isinstance(nxt, list):
            if not nxt:
                raise ConfigError(f"Override {dotted}: {key} is an empty list in the config.")
            nxt = nxt[-1]
        elif nxt is None:
            nxt = node[key] = {}
        node = nxt
    node[keys[-1]] = value


def _digest_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _config_digest(path: str) -> str:
    """The digest of a stage config's parsed content (a comment or key order edit keeps it)."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Stage config {path} cannot be read ({exc}).") from None
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def _is_ckpt(v: Any) -> bool:
    return isinstance(v, str) and v.endswith(".ckpt")


def _record(spec: StageSpec) -> dict:
    """What makes a run's result (module docstring): the spec, every path resolved (a relative
    and an absolute spelling of one run agree), and the digests of the config's content, the
    dataset and the checkpoints it reads."""
    from lit_itpo.data.minari_io import dataset_digest

    def canonical(v):
        is_path = isinstance(v, str) and (v.endswith(".ckpt") or v.endswith(".yaml"))
        return str(Path(v).resolve()) if is_path else v

    spec_d = asdict(spec)
    spec_d["root"] = str(Path(spec.root).resolve())
    spec_d["config"] = canonical(spec.config)
    spec_d["ckpt_path"] = canonical(spec.ckpt_path)
    spec_d["overrides"] = {k: canonical(v) for k, v in spec.overrides.items()}
    inputs = {}
    for p in spec.inputs():
        inputs[str(Path(p).resolve())] = file_sha256(p) if Path(p).is_file() else None
    return {
        "format": RECORD_FORMAT,
        "spec": spec_d,
        "config_sha256": _config_digest(spec.config),
        "dataset": dataset_digest(spec.dataset_id, spec.data_dir),
        "inputs": inputs,
    }


_UNSET = "<unset>"


def _diff_values(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for each differing leaf (nested dicts by dotted key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_values(f"{key}.{k}", a.get(k, _UNSET), b.get(k, _UNSET))
        return out
    return [] if a == b else [(key, a, b)]


def _changes(old: dict, new: dict) -> list[tuple[str, Any, Any, str]]:
    """What differs between two records, as ``(key, old, new, text)``; empty: the same
    inputs."""
    if not isinstance(old, dict) or old.get("format") != RECORD_FORMAT:
        return [("format", None, RECORD_FORMAT, "its record is of an older lit_itpo, without "
                 "the digests of its inputs, so it cannot be checked")]  # fmt: skip
    o, n = old["spec"], new["spec"]
    out = []
    for key in ("command", "dataset_id", "seed", "max_steps", "val_every"):
        if o.get(key) != n.get(key):
            out.append((key, o.get(key), n.get(key), f"{key} {o.get(key)} -> {n.get(key)}"))
    if old["config_sha256"] != new["config_sha256"]:
        text = (
            f"config {n['config']} content changed"
            if o["config"] == n["config"]
            else f"config {o['config']} -> {n['config']} with other content"
        )
        out.append(("config", o["config"], n["config"], text))
    d_old, d_new = old["dataset"], new["dataset"]
    if d_old["sha256"] != d_new["sha256"] and o.get("dataset_id") == n.get("dataset_id"):
        text = (
            f"dataset {n['dataset_id']} at {d_new['path']} was rewritten (other content)"
            if d_new["sha256"] is not None
            else f"dataset {n['dataset_id']} is gone from {d_new['path']}"
        )
        out.append(("dataset", d_old["path"], d_new["path"], text))
    ov = {**o["overrides"], "ckpt_path": o["ckpt_path"]}
    nv = {**n["overrides"], "ckpt_path": n["ckpt_path"]}
    for key in sorted(set(ov) | set(nv)):
        a, b = ov.get(key, _UNSET), nv.get(key, _UNSET)
        if _is_ckpt(a) and _is_ckpt(b):
            da, db = old["inputs"].get(a), new["inputs"].get(b)
            if db is None:
                out.append((key, a, b, f"upstream checkpoint {b} is gone ({key})"))
            elif da != db:
                text = (
                    f"upstream checkpoint {b} changed ({key})"
                    if a == b
                    else f"upstream checkpoint {a} -> {b} with other content ({key})"
                )
                out.append((key, a, b, text))
            continue
        out += [(k, x, y, _change_text(k, x, y)) for k, x, y in _diff_values(key, a, b)]
    return out


def _change_text(key: str, old: Any, new: Any) -> str:
    if old is _UNSET:
        return f"{key}={new!r} added"
    if new is _UNSET:
        return f"{key}={old!r} dropped"
    return f"{key} {old!r} -> {new!r}"


class StaleRunError(ConfigError):
    """A run directory that cannot give this spec's result: made from other inputs, or with a
    record or checkpoint that does not verify. Reusing or continuing it would give a stale
    result, so nothing is reused; the message names what changed and the two ways out.

    Attributes:
        root: the run's directory.
        what: what is wrong, e.g. ``"holds a run of other inputs (seed 0 -> 1)"``.
        changes: ``(key, old, new, text)`` for each changed input (empty for a file that does
            not verify).
    """

    def __init__(
        self,
        root: str | Path,
        what: str | None = None,
        changes: list[tuple[str, Any, Any, str]] | None = None,
        fix: str | None = None,
        names: dict[str, str] | None = None,
    ):
        self.root, self.changes = Path(root), list(changes or [])
        names = names or {}
        texts = [f"{names[k]} {a} -> {b}" if k in names else t for k, a, b, t in self.changes]
        self.what = what or f"holds a run of other inputs ({'; '.join(texts)})"
        fix = fix or (
            f"use another run directory, or start it over (delete {root}, or restart=True)"
        )
        why = "its result would be stale" if self.changes else "it cannot be reused"
        super().__init__(f"{root} {self.what}; {why}: {fix}.")


class BudgetError(ConfigError):
    """A fit whose checkpoint holds another step than its budget (it had gone further)."""

    def __init__(self, spec: StageSpec, ckpt: Path, got: int | None, option: str = "max_steps"):
        self.spec, self.ckpt, self.got = spec, ckpt, got
        super().__init__(
            f"{spec.root} holds a checkpoint at step {got} ({ckpt}), not the {option}="
            f"{spec.max_steps} asked; ask for {got} or more, or delete {spec.root} to start over."
        )


@dataclass
class StageResult:
    """A finished run: its final checkpoint (fit) and its logged metrics."""

    root: Path
    checkpoint: Path | None
    step: int
    metrics: dict[str, float]


def _write_sealed(obj: dict, path: Path) -> None:
    write_record({**obj, "sha256": _digest_json(obj)}, path)


def _read_sealed(path: Path, root: Path) -> dict | None:
    """A record written by :func:`_write_sealed` (None: no such file), or
    :class:`StaleRunError` naming the file when it does not verify."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StaleRunError(
            root, f"holds {path}, which cannot be read ({type(exc).__name__}: truncated or damaged)"
        ) from None
    if not isinstance(obj, dict) or "sha256" not in obj:
        raise StaleRunError(
            root, f"holds {path} without a checksum (an older lit_itpo's, or written by hand)"
        )
    body = {k: v for k, v in obj.items() if k != "sha256"}
    if _digest_json(body) != obj["sha256"]:
        raise StaleRunError(root, f"holds {path}, which does not match its checksum (edited)")
    return body


def stage_state(spec: StageSpec, record: dict | None = None) -> tuple[str, StageResult | None]:
    """``("done", result)``, ``("resume", None)`` or ``("fresh", None)`` by the module's rule.

    Raises:
        StaleRunError: the run directory holds a run of other inputs, or a ``metrics.json``,
            ``run.json`` or checkpoint that does not verify.
    """
    root = Path(spec.root)
    record = record or _record(spec)
    kept = _read_sealed(root / METRICS, root)
    ckpts = spec.command == "fit" and any(root.glob("tb/*/checkpoints/*.ckpt"))
    if kept is None and not ckpts:
        return "fresh", None
    made_by = kept["made_by"] if kept is not None else _read_sealed(root / RUN, root)
    if made_by is None:
        raise StaleRunError(
            root, f"holds checkpoints but no {RUN}, the record of the inputs they were made from"
        )
    changes = _changes(made_by, record)
    if changes:
        raise StaleRunError(root, changes=changes)
    if kept is None:
        return "resume", None
    ckpt = None
    if kept["checkpoint"] is not None:
        ckpt = root.resolve() / kept["checkpoint"]
        if not ckpt.is_file():
            raise StaleRunError(root, f"has lost {ckpt}, the checkpoint its {METRICS} describes")
        if file_sha256(ckpt) != kept["checkpoint_sha256"]:
            raise StaleRunError(
                root, f"holds {ckpt}, which changed after {root / METRICS} recorded its digest"
            )
    return "done", StageResult(root, ckpt, kept["step"], kept["metrics"])


def run_stage(spec: StageSpec, restart: bool = False) -> StageResult:
    """Run (or resume, or reuse) one stage run by the rule of :func:`stage_state`.

    Args:
        spec: the run.
        restart: a run directory that the rule refuses (:class:`StaleRunError`) is deleted and
            the run started over, instead of the error; a run of the same inputs is still
            reused or resumed.
    """
    from lit_itpo.lightning_cli import (
        find_last_checkpoint,
        lightning_main,
        read_checkpoint,
        remove_stopped_attempts,
    )

    root = Path(spec.root)
    made_by = _record(spec)  # before the run: what it read, as it was
    try:
        state, result = stage_state(spec, made_by)
    except StaleRunError as exc:
        if not restart:
            raise
        log.warning("%s %s: deleting it to start over", root, exc.what)
        remove_dir(root)
        state, result = "fresh", None
    if state == "done":
        log.info("%s: done before (%s), reusing it", spec.root, root / METRICS)
        return result
    if state == "fresh":  # the record first, so a stopped run is resumed only by these inputs
        remove_stopped_attempts(root / "tb")
        _write_sealed(made_by, root / RUN)
    try:
        cli = lightning_main({"subcommand": spec.command, spec.command: spec.to_config()})
    except BaseException:
        if state == "fresh" and not any(root.glob("tb/*/checkpoints/*.ckpt")):
            (root / RUN).unlink(missing_ok=True)  # nothing to resume: no record left behind
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
        raise
    trainer = cli.trainer
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt = None
    if spec.command == "fit":
        # the file Lightning saved last (``last.ckpt``; ``last-v1.ckpt`` in a copied run)
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        ckpt = Path(last) if last else find_last_checkpoint(trainer)
        if ckpt is None or not ckpt.is_file():
            raise ConfigError(f"{spec.root}: the fit wrote no checkpoint under {spec.root}.")
        ckpt = ckpt.resolve()  # the same spelling as a reused run's
        got = read_checkpoint(ckpt).get("global_step")
        if got != spec.max_steps:
            raise BudgetError(spec, ckpt, got)
    step = trainer.global_step
    _write_sealed(
        {
            "made_by": made_by,
            # relative to the run's directory: a moved or copied run names its own file
            "checkpoint": None if ckpt is None else os.path.relpath(ckpt, root.resolve()),
            "checkpoint_sha256": None if ckpt is None else file_sha256(ckpt),
            "step": step,
            "metrics": metrics,
        },
        root / METRICS,
    )
    return StageResult(root, ckpt, step, metrics)


def fit_stage(spec: StageSpec, restart: bool = False) -> StageResult:
    """Train a stage to ``spec.max_steps`` updates (resumed or reused by the rule; ``restart``
    as :func:`run_stage`)."""
    if spec.command != "fit":
        raise ConfigError(f"fit_stage got a {spec.command} spec.")
    return run_stage(spec, restart)


# --- ITPO evaluation -------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """Base policy vs ITPO with each world model, on the same episodes.

    Attributes:
        config: the ITPO validate config (``conf/embedded/itpo.yaml``).
        root, dataset_id, data_dir, seed: as :class:`StageSpec`.
        policy: the policy checkpoint (any policy stage).
        world_models: ``{"diffusion": stage-1 ckpt, "meanflow": stage-3 ckpt, "exact": "auto"
            or a WorldModel class path}`` (any of them).
        itpo: ITPO's hyperparameters (alpha = ``itpo.lr``).
        alpha_grid: choose alpha on these episodes instead (one batch per world model).
        episodes, env_seed: episodes ``env_seed + i``, ``i < episodes``.
        max_episode_steps: cut episodes there (None: the env's limit).
        sample_steps, sample_variance: diffusion sampling for ITPO (None: the checkpoint's).
    """

    config: str
    root: str
    dataset_id: str
    policy: str
    world_models: dict[str, str]
    itpo: ITPOConfig
    data_dir: str | None = None
    seed: int = 0
    alpha_grid: list[float] | None = None
    episodes: int = 10
    env_seed: int = 1_000_000
    max_episode_steps: int | None = None
    sample_steps: int | None = None
    sample_variance: str | None = None

    def stage(self) -> StageSpec:
        """The validate run: the ITPO config with the policy stage's own class (any policy
        stage: ReBRAC, TD3+BC, IQL, BC), the callback's arguments, the world models."""
        from lit_itpo.lightning_cli import read_checkpoint

        algorithm = read_checkpoint(self.policy, "EvalSpec policy")["lit_itpo"]["algorithm"]
        cb = "trainer.callbacks.init_args."
        keys = {
            "diffusion": "world_model_ckpt",
            "meanflow": "meanflow_ckpt",
            "exact": "exact_model",
        }
        overrides = {
            "model": {"class_path": f"lit_itpo.modules.{algorithm}"},
            f"{cb}itpo": asdict(self.itpo),
            f"{cb}alpha_grid": self.alpha_grid,
            f"{cb}num_episodes": self.episodes,
            f"{cb}seed": self.env_seed,
            f"{cb}max_episode_steps": self.max_episode_steps,
            # every arm named: one the spec leaves out is off, whatever the config file says
            **{f"{cb}{key}": self.world_models.get(name) for name, key in keys.items()},
        }
        if self.sample_steps is not None:
            overrides[f"{cb}sample_steps"] = self.sample_steps
        if self.sample_variance is not None:
            overrides[f"{cb}sample_variance"] = self.sample_variance
        return StageSpec(
            "validate",
            self.config,
            self.root,
            self.dataset_id,
            self.data_dir,
            self.seed,
            ckpt_path=str(self.policy),
            overrides=overrides,
        )


@dataclass
class Score:
    """One policy's evaluation: mean return, episode length, normalised score (None without
    reference scores), success rate (mazes, else None)."""

    return_mean: float
    length_mean: float
    normalized_score: float | None = None
    success_rate: float | None = None

    @classmethod
    def read(cls, m: dict[str, float], prefix: str) -> Score:
        return cls(
            m[f"{prefix}/return_mean"],
            m[f"{prefix}/length_mean"],
            m.get(f"{prefix}/normalized_score"),
            m.get(f"{prefix}/success_rate"),
        )


@dataclass
class ITPOScore:
    """ITPO with one world model: its score, the paired gain over the base (normalised points
    where the dataset has reference scores, else return) with its 95% bootstrap interval over
    the episodes (``(nan, nan)``: fewer than ``stats.MIN_PAIRED_EPISODES`` episodes), its
    cost, and its ascent rate (:mod:`lit_itpo.ascent`)."""

    alpha: float
    score: Score
    gain: float
    gain_ci: tuple[float, float]
    fallbacks: float
    ms_per_step: float
    nfe_per_step: float
    ascent_rate: float | None = None  # share of ITPO steps that raised J_true (settable envs)


@dataclass
class EvalResult:
    """The base policy's score; per world model the ITPO score (an evaluation) or the grid's
    held-out scores and chosen alpha (0: none beat the base policy)."""

    base: Score
    itpo: dict[str, ITPOScore] = field(default_factory=dict)
    grid: dict[str, dict[float, Score]] = field(default_factory=dict)
    alpha: dict[str, float] = field(default_factory=dict)
    root: Path | None = None


def evaluate(spec: EvalSpec, restart: bool = False) -> EvalResult:
    """Run (or reuse, by the rule of :func:`stage_state`; ``restart`` as :func:`run_stage`)
    one ITPO evaluation."""
    res = run_stage(spec.stage(), restart)
    m = res.metrics
    out = EvalResult(Score.read(m, "eval"), root=res.root)
    for name in spec.world_models:
        p = f"itpo/{name}"
        if spec.alpha_grid is not None:
            out.grid[name] = {a: Score.read(m, f"{p}/alpha_{a:g}") for a in spec.alpha_grid}
            # the logged value is float32: back to the grid's own number
            out.alpha[name] = min([0.0, *spec.alpha_grid], key=lambda a: abs(a - m[f"{p}/alpha"]))
            continue
        out.itpo[name] = ITPOScore(
            alpha=spec.itpo.lr,
            score=Score.read(m, p),
            gain=m[f"{p}/gain"],
            gain_ci=(m[f"{p}/gain_ci_low"], m[f"{p}/gain_ci_high"]),
            fallbacks=m[f"{p}/fallbacks"],
            ms_per_step=m[f"time/itpo_{name}_ms_per_step"],
            nfe_per_step=m[f"{p}/nfe_per_step"],
            ascent_rate=m.get(f"{p}/ascent_rate"),
        )
    return out
