"""Typed stage runs below the CLI: ``fit_stage(spec) -> StageResult`` and
``evaluate(spec) -> EvalResult``; the pipeline and the benchmarks chain these calls.

A :class:`StageSpec` is what ``lit-itpo fit|validate --config <file> ...`` would get, as data:
the config file, the run's directory, the dataset, the budget and typed overrides. It runs
through the same LightningCLI (:func:`lit_itpo.lightning_cli.lightning_main` with a config dict, no
argument strings), so a stage behaves exactly as on the command line.

One rule decides what a run does (:func:`stage_state`), for every caller:

- **done**: the run's ``metrics.json`` records this very spec and the files it read are
  unchanged (size and mtime): its result is returned without running;
- **resume** (fit): a checkpoint exists under the run's directory: Lightning continues from it
  (``ckpt_path="last"``, the run's own ``last.ckpt``);
- **fresh**: otherwise.

Each finished run writes one ``metrics.json`` in its directory (atomically), beside its
``tb/version_N/`` logs and checkpoints.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig
from lit_itpo.utils import atomic_write_json

log = logging.getLogger(__name__)

METRICS = "metrics.json"


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


def _stamp(path: str) -> list[int] | None:
    p = Path(path)
    return [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None


def _record(spec: StageSpec) -> dict:
    """What makes a run's result: the spec (every path resolved, so a relative and an absolute
    spelling of one run agree) and its input files' stamps."""

    def canonical(v):
        is_path = isinstance(v, str) and (v.endswith(".ckpt") or v.endswith(".yaml"))
        return str(Path(v).resolve()) if is_path else v

    spec_d = asdict(spec)
    spec_d["root"] = str(Path(spec.root).resolve())
    spec_d["config"] = canonical(spec.config)
    spec_d["ckpt_path"] = canonical(spec.ckpt_path)
    spec_d["overrides"] = {k: canonical(v) for k, v in spec.overrides.items()}
    return {"spec": spec_d, "inputs": {str(Path(p).resolve()): _stamp(p) for p in spec.inputs()}}


def stage_state(spec: StageSpec) -> tuple[str, StageResult | None]:
    """``("done", result)``, ``("resume", None)`` or ``("fresh", None)`` (module docstring)."""
    root = Path(spec.root)
    done = root / METRICS
    if done.is_file():
        kept = json.loads(done.read_text())
        ckpt = kept.get("checkpoint")
        if kept.get("made_by") == _record(spec) and (ckpt is None or Path(ckpt).is_file()):
            return "done", StageResult(
                root, Path(ckpt) if ckpt else None, kept["step"], kept["metrics"]
            )
    if spec.command == "fit" and any(root.glob("tb/*/checkpoints/*.ckpt")):
        return "resume", None
    return "fresh", None


def run_stage(spec: StageSpec) -> StageResult:
    """Run (or resume, or reuse) one stage run by the rule of :func:`stage_state`."""
    from lit_itpo.lightning_cli import find_last_checkpoint, lightning_main, read_checkpoint

    state, result = stage_state(spec)
    if state == "done":
        log.info("%s: done before (%s), reusing it", spec.root, Path(spec.root) / METRICS)
        return result
    made_by = _record(spec)  # before the run: what it read, as it was
    cli = lightning_main({"subcommand": spec.command, spec.command: spec.to_config()})
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
    atomic_write_json(
        {
            "made_by": made_by,
            "checkpoint": None if ckpt is None else str(ckpt),
            "step": step,
            "metrics": metrics,
        },
        Path(spec.root) / METRICS,
    )
    return StageResult(Path(spec.root), ckpt, step, metrics)


def fit_stage(spec: StageSpec) -> StageResult:
    """Train a stage to ``spec.max_steps`` updates (resumed or reused by the rule)."""
    if spec.command != "fit":
        raise ConfigError(f"fit_stage got a {spec.command} spec.")
    return run_stage(spec)


# --- ITPO evaluation -------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """Base policy vs ITPO with each world model, on the same episodes.

    Attributes:
        config: the ITPO validate config (``conf/embedded/itpo.yaml``).
        root, dataset_id, data_dir, seed: as :class:`StageSpec`.
        policy: the policy checkpoint (any policy stage).
        world_models: ``{"diffusion": stage-1 ckpt, "meanflow": stage-3 ckpt}`` (either).
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
        keys = {"diffusion": "world_model_ckpt", "meanflow": "meanflow_ckpt"}
        overrides = {
            "model": {"class_path": f"lit_itpo.modules.{algorithm}"},
            f"{cb}itpo": asdict(self.itpo),
            f"{cb}alpha_grid": self.alpha_grid,
            f"{cb}num_episodes": self.episodes,
            f"{cb}seed": self.env_seed,
            f"{cb}max_episode_steps": self.max_episode_steps,
            **{f"{cb}{keys[name]}": str(path) for name, path in self.world_models.items()},
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
    the episodes, its cost, and its ascent rate (:mod:`lit_itpo.ascent`)."""

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


def evaluate(spec: EvalSpec) -> EvalResult:
    """Run (or reuse, by the rule of :func:`stage_state`) one ITPO evaluation."""
    res = run_stage(spec.stage())
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
