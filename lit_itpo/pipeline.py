"""``lit-itpo pipeline``: every stage for one dataset, a short chain of typed stage runs.

world model (stage 1) -> policy (stage 2, ReBRAC) -> tilted MeanFlow world model (stage 3,
tilted toward that policy, reusing stage 1's reward model) -> alpha per world model on held-out
env seeds (the whole grid in one batch) -> ITPO evaluation (base vs ITPO with the task's exact
dynamics where they are built in, diffusion-ITPO and MeanFlow-ITPO on the same seeds, paired
gains with 95% intervals, the share of the exact arm's gain each learned model keeps) ->
results table (stdout), ``results.json`` and TensorBoard (each run logs under
``out_dir/<stage>``).

Each step is a :func:`lit_itpo.stages.fit_stage` / :func:`lit_itpo.stages.evaluate` call on
the committed stage config with typed overrides; every run is done, resumed or fresh by the one
rule of :func:`lit_itpo.stages.stage_state`, so rerunning the same command resumes the pipeline
where it stopped (a finished run is reused, an interrupted fit continues from its last.ckpt).
One run at a time per ``out_dir``: a run holds its lock (:func:`hold_out_dir`), and a second
one started on the same folder is refused with one line.
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig
from lit_itpo.lightning_cli import (
    check_config_files,
    check_writable,
    init_defaults,
    is_a_folder,
    parse_dataclass_command,
)
from lit_itpo.stages import (
    BudgetError,
    EvalResult,
    EvalSpec,
    StageResult,
    StageSpec,
    StaleRunError,
    evaluate,
    fit_stage,
)
from lit_itpo.stats import MIN_PAIRED_EPISODES
from lit_itpo.utils import write_record

log = logging.getLogger(__name__)

AUTO = "auto"  # a PipelineConfig value decided from the dataset in __post_init__
STAGES = ("world_model", "policy", "meanflow")  # the order run_pipeline trains them in
ITPO_MODELS = ("exact", "diffusion", "meanflow")  # the world models ITPO can run with
LEARNED = ("diffusion", "meanflow")  # ... of which trained by the pipeline
# An ITPO arm is a world model, optionally with a rule suffix that overrides the run's rule
# (reset_every_step): "meanflow_reset" resets psi before every real step, "exact_carry"
# carries it over (the paper's rule). Results key: itpo_<arm>.
RULES = {"_reset": True, "_carry": False}
STAGE_CONFIGS = {
    "world_model_config": "world_model.yaml",
    "policy_config": "rebrac.yaml",
    "meanflow_config": "meanflow.yaml",
    "itpo_config": "itpo.yaml",
}


# The stage configs' folder: conf/ of the working directory, else of the repository the package
# is installed from (an editable install or a checkout: lit_itpo's parent)
REPO_CONF = Path(__file__).resolve().parent.parent / "conf"


def conf_root() -> Path:
    """Where the "auto" stage configs come from: ``conf/`` here if it holds the generic ones,
    else the package's repository's (``REPO_CONF``); ``conf`` (missing: check_config says so)
    where neither does."""
    here = Path("conf")
    if (here / "embedded").is_dir() or not (REPO_CONF / "embedded").is_dir():
        return here
    return REPO_CONF


DEFAULT_PARTICLES = 64  # the CPU default (METHOD.md); the paper's GPU reading is 4096
PAPER_ALPHA_GRID = (5e-7, 5e-6, 5e-5, 5e-4)  # the paper's grid, set for D4RL's reward scales
# Other tasks' grids, by env family. Pendulum: one decade above the paper's (its critic's |Q|
# at the main job's budget is ~30, against ~100-1000 on D4RL, so gradients are smaller); a
# seed-1 pilot chose the paper grid's top and beyond
# (docs/notes/2026-12-07-pendulum-mechanism-check.md)
ALPHA_GRIDS = {"pendulum": (5e-6, 5e-5, 5e-4, 5e-3, 5e-2)}


def _itpo_init_args(path: str) -> dict:
    """The ITPOCallback's ``init_args`` in an ITPO config file ({} when unreadable: the file
    is checked, with a one-line error, by :func:`check_config`)."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
        callbacks = cfg.get("trainer", {}).get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        for cb in callbacks:
            if str(cb.get("class_path", "")).endswith("ITPOCallback"):
                return cb.get("init_args") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return {}


def banner(text: str) -> None:
    """A stage's first line in the console: what runs now and where it writes."""
    log.info("==== pipeline: %s", text)


def auto_config(dataset_id: str, file: str) -> tuple[Path, Path]:
    """The stage config ``file`` (e.g. ``itpo.yaml``) that "auto" gives a dataset, and the
    dataset's own one it looked for first: ``conf/<env>-<dataset>/file`` if present, else
    ``conf/embedded/file`` (under :func:`conf_root`)."""
    conf = conf_root()
    tuned = conf / conf_folder(dataset_id) / file
    return (tuned if tuned.is_file() else conf / "embedded" / file), tuned


def conf_folder(dataset_id: str) -> str:
    """``<env>-<name>`` of a Minari id ``<namespace>/<env>/<name>-v<N>`` (the conf/ folder a
    dataset's tuned stage configs live in), e.g. ``hopper-medium``."""
    parts = dataset_id.split("/")
    name = parts[-1].rsplit("-v", 1)[0]
    return f"{parts[-2]}-{name}" if len(parts) >= 2 else name


@dataclass
class PipelineConfig:
    """One dataset end to end.

    Attributes:
        dataset_id: the Minari dataset id (default: the embedded Pendulum-v1 medium dataset,
            whose exact dynamics are built in; ``lit_itpo/halfcheetah/medium-small-v0`` is the
            embedded halfcheetah-medium sample).
        data_dir: its root; "auto": the package's embedded root when the id is there, otherwise
            Minari's own (``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``).
        out_dir: where every run writes (checkpoints, TensorBoard, metrics.json, results.json);
            "auto": ``runs/pipeline/<dataset id>/s<seed>``.
        world_model_config: stage-1 config; "auto": ``conf/<env>-<dataset>/world_model.yaml``
            (e.g. ``conf/hopper-medium/`` for ``*/hopper/medium-v0``, ``conf/pendulum-medium/``
            for the embedded pendulum) if present, else ``conf/embedded/world_model.yaml``
            (the halfcheetah sample's; dims, bounds and env come from the dataset); conf/ of
            the working directory, else of the repository the package is installed from.
        policy_config: stage-2 config (ReBRAC); "auto" as world_model_config (rebrac.yaml).
        meanflow_config: stage-3 config; "auto" as world_model_config (meanflow.yaml).
        itpo_config: the ITPO validate config; "auto" as world_model_config (itpo.yaml).
        world_model_steps: stage-1 budget (updates).
        policy_steps: stage-2 budget (updates).
        meanflow_steps: stage-3 budget (updates).
        policy_eval_every: the policy stage evaluates (and checkpoints) every this many updates.
        policy_eval_episodes: episodes of each of those evaluations (seeds eval_seed + i).
        policy_batch_size: the policy stage's batch (None: its config's).
        sample_steps: diffusion sampling steps in ITPO (5 respaced steps: the accuracy/cost
            choice of benchmarks/studies/world_model_k.py; None: the checkpoint's).
        sample_variance: diffusion reverse variance in ITPO, beta or beta_tilde (None: the
            checkpoint's).
        particles: ITPO's M, imagined noise sequences per real step (None: the ITPO config's
            ``itpo.particles``, else 64); refused up front where a lower bound of the imagined
            rollout's memory (:func:`rollout_memory`) exceeds what the machine has.
        horizon: ITPO's H, imagined steps.
        inner_steps: ITPO's E, gradient steps per real step.
        itpo_precision: "32-true" (the paper) or "bf16-mixed": ITPO's imagined rollout and its
            gradient under bfloat16 autocast (acting and the ascent step stay float32;
            benchmarks/studies/itpo_precision.py measures the cost and the agreement).
        reset_every_step: psi back to the base policy's parameters before every real step
            (the paper carries psi over from step to step: false); the rule of every arm
            without a rule suffix (see itpo_models). None: the ITPO config's
            ``itpo.reset_every_step`` (Pendulum's: true), else false.
        proximity: a pull back to the base parameters, J - proximity * ||psi - psi_0||^2
            (the paper: 0).
        itpo_models: the ITPO arms: world models (any of exact, diffusion, meanflow), each
            optionally with a rule suffix that overrides reset_every_step for that arm
            (``meanflow_reset``: psi reset before every real step; ``exact_carry``: carried
            over, the paper's rule); results key ``itpo_<arm>``. ``exact`` needs an exact
            model (``exact_model``) and is left out, with a log line, where the default list
            meets an env without a built-in one.
        exact_model: the exact arm's model: "auto" (the env's built-in equations,
            :mod:`lit_itpo.world_models.exact`) or the dotted path of your own differentiable
            ``WorldModel`` subclass.
        itpo_dir: the folder under out_dir for the ITPO runs. Another name leaves the first
            ITPO runs alone and writes its results.json there (not in out_dir): another ITPO
            rule on the same trained stages, with the same command plus the changed options.
        alpha_grid: candidate step sizes, all run on the held-out episodes in one batch per
            world model; none beating the base policy: alpha 0. None: the grid of the dataset's
            family (``<namespace>/<family>/<name>``) in ``ALPHA_GRIDS`` (pendulum: 5e-6 ..
            5e-2), else the paper's 5e-7 .. 5e-4 (set for D4RL's reward and Q scales).
        alpha_seed: first held-out env seed (disjoint from the evaluation seeds).
        alpha_episodes: held-out episodes per grid point (seeds alpha_seed + i; the choice is
            made on their mean return; 1 is the paper's protocol).
        num_episodes: evaluation episodes (seeds eval_seed + i), base and ITPO on the same.
        eval_seed: first evaluation env seed.
        max_episode_steps: cut evaluation episodes there (None: the env's limit).
        seed: seed_everything of every stage.
        restart: stages whose runs may start over: where a run of one of them cannot be reused
            or resumed (made from other inputs: config content, dataset, seed, budget, an
            upstream checkpoint; or a record or checkpoint that does not verify) its directory
            is deleted and the stage run again, instead of the error. A run of the same inputs
            is kept (reused, or resumed if it was stopped), so repeating the command after a
            stop resumes. Later stages that read a named one are included, and likewise start
            over only where what they read changed: meanflow and the ITPO runs read
            world_model and policy, the ITPO runs read meanflow. Names: world_model, policy,
            meanflow, itpo (the ITPO runs of itpo_dir), or all; one name or a list.
    """

    dataset_id: str = "lit_itpo/pendulum/medium-v0"
    data_dir: str | None = AUTO
    out_dir: str = AUTO
    world_model_config: str = AUTO
    policy_config: str = AUTO
    meanflow_config: str = AUTO
    itpo_config: str = AUTO
    world_model_steps: int = 3000
    policy_steps: int = 5000
    meanflow_steps: int = 3000
    policy_eval_every: int = 1000
    policy_eval_episodes: int = 2
    policy_batch_size: int | None = None
    sample_steps: int | None = 5
    sample_variance: str | None = "beta_tilde"
    particles: int | None = None
    horizon: int = 5
    inner_steps: int = 1
    itpo_precision: str = "32-true"
    reset_every_step: bool | None = None
    proximity: float = 0.0
    itpo_models: list[str] = field(default_factory=lambda: list(ITPO_MODELS))
    exact_model: str = AUTO
    itpo_dir: str = "itpo"
    alpha_grid: list[float] | None = None
    alpha_seed: int = 999
    alpha_episodes: int = 5
    num_episodes: int = 20
    eval_seed: int = 1_000_000
    max_episode_steps: int | None = 200
    seed: int = 0
    restart: list[str] | str = field(default_factory=list)

    def __post_init__(self) -> None:
        """Every "auto" value decided from the dataset (logged, one line each)."""
        from lit_itpo.data.minari_io import EMBEDDED, EMBEDDED_ROOT

        embedded = (EMBEDDED_ROOT / self.dataset_id).is_dir()
        if self.data_dir == AUTO:
            self.data_dir = EMBEDDED if embedded else None
            log.info("pipeline: data_dir = %s", self.data_dir or "Minari's root")
        if self.out_dir == AUTO:  # per seed: a seed sweep never meets another seed's runs
            self.out_dir = f"runs/pipeline/{self.dataset_id}/s{self.seed}"
            log.info("pipeline: out_dir = %s", self.out_dir)
        self._auto_configs = set()  # not a field: which configs were "auto" (check_config)
        for name, file in STAGE_CONFIGS.items():
            if getattr(self, name) == AUTO:
                path, tuned = auto_config(self.dataset_id, file)
                setattr(self, name, str(path))
                self._auto_configs.add(name)
                why = "" if path == tuned else f" (no {tuned}: the generic config)"
                log.info("pipeline: %s = %s%s", name, path, why)
        itpo = _itpo_init_args(self.itpo_config)
        if self.particles is None:
            self.particles = int(itpo.get("itpo", {}).get("particles", DEFAULT_PARTICLES))
            log.info("pipeline: particles = %d (%s)", self.particles, self.itpo_config)
        if self.reset_every_step is None:
            self.reset_every_step = bool(itpo.get("itpo", {}).get("reset_every_step", False))
            log.info("pipeline: reset_every_step = %s (%s)", self.reset_every_step,
                     self.itpo_config)  # fmt: skip
        if self.alpha_grid is None:
            family = self.dataset_id.split("/")[-2] if self.dataset_id.count("/") else None
            self.alpha_grid = list(ALPHA_GRIDS.get(family, PAPER_ALPHA_GRID))
            log.info("pipeline: alpha_grid = %s", self.alpha_grid)


def _fit(
    cfg: PipelineConfig,
    out: Path,
    stage: str,
    config: str,
    steps: int,
    overrides: dict,
    val_every: int = 1000,
) -> StageResult:
    """Train one stage under ``out/<stage>`` to ``steps`` updates (done, resumed or fresh by
    the rule of :func:`lit_itpo.stages.stage_state`)."""
    n = list(STAGES).index(stage) + 1
    banner(f"stage {n}/3, {stage} ({config}): {steps} updates -> {out / stage}")
    spec = StageSpec(
        "fit",
        config,
        str(out / stage),
        cfg.dataset_id,
        cfg.data_dir,
        cfg.seed,
        max_steps=steps,
        val_every=val_every,
        overrides=overrides,
    )
    try:
        return fit_stage(spec, _restarts(cfg, stage))
    except StaleRunError as exc:
        raise _stale(exc, stage) from None
    except BudgetError as exc:  # named by the pipeline's own option
        raise BudgetError(spec, exc.ckpt, exc.got, f"--pipeline.{stage}_steps") from None


def arm_rule(arm: str, default_reset: bool) -> tuple[str, bool]:
    """``(world model, reset_every_step)`` of an ITPO arm name (``"meanflow_reset"`` ->
    ``("meanflow", True)``; no suffix: the run's rule ``default_reset``)."""
    for suffix, reset in RULES.items():
        if arm.endswith(suffix):
            return arm[: -len(suffix)], reset
    return arm, default_reset


def _env_spec(cfg: PipelineConfig) -> str | None:
    from lit_itpo.data.minari_io import dataset_info, open_dataset

    return dataset_info(open_dataset(cfg.dataset_id, cfg.data_dir), cfg.dataset_id).env_spec


def exact_available(cfg: PipelineConfig) -> bool:
    """Whether the exact arm runs: a given model always; "auto" where the env has one built in
    (else it is left out with a log line, unless the user named only it)."""
    from lit_itpo.world_models.exact import has_exact_model

    if cfg.exact_model != AUTO or has_exact_model(_env_spec(cfg)):
        return True
    log.info("pipeline: no built-in exact model for %s: ITPO runs without the exact arm",
             cfg.dataset_id)  # fmt: skip
    return False


RESTARTABLE = (*STAGES, "itpo")
UPSTREAM = {"meanflow": ("world_model", "policy"), "itpo": STAGES}  # what each run reads


def _restart_names(cfg: PipelineConfig) -> list[str]:
    return [cfg.restart] if isinstance(cfg.restart, str) else list(cfg.restart)


def _restarts(cfg: PipelineConfig, stage: str) -> bool:
    """Whether ``stage`` (or ``"itpo"``) may start over: named in ``restart``, or reading a
    stage that is (:class:`PipelineConfig`)."""
    names = _restart_names(cfg)
    asked = set(RESTARTABLE) if "all" in names else set(names)
    return stage in asked or bool(asked & set(UPSTREAM.get(stage, ())))


def _stale(exc: StaleRunError, stage: str) -> StaleRunError:
    """The stage API's error in the pipeline's words: its options and its way out."""
    names = {"seed": "--pipeline.seed", "max_steps": f"--pipeline.{stage}_steps"}
    if stage == "policy":
        names["val_every"] = "--pipeline.policy_eval_every"
    fix = (
        f"pass --pipeline.restart {stage} to start it over (later stages that read it follow "
        "where it changed), or another --pipeline.out_dir"
    )
    what = None if exc.changes else exc.what
    return StaleRunError(exc.root, what, exc.changes, fix=fix, names=names)


def _evaluate(cfg: PipelineConfig, spec: EvalSpec) -> EvalResult:
    """One ITPO run (done, fresh, or started over by ``restart``)."""
    try:
        return evaluate(spec, _restarts(cfg, "itpo"))
    except StaleRunError as exc:
        raise _stale(exc, "itpo") from None


def world_model_args(world_model_config: str) -> dict | None:
    """The stage-1 config's ``model.init_args`` over WorldModelModule's defaults, or None
    where the file does not say (another class, unreadable: :func:`check_config` names it)."""
    import yaml

    try:
        model = (yaml.safe_load(Path(world_model_config).read_text()) or {}).get("model") or {}
        given = dict(model.get("init_args") or {})
        class_path = str(model.get("class_path", ""))
        if not class_path.endswith("WorldModelModule"):
            return None
        return init_defaults(class_path) | given
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError, ImportError):
        return None


def trained_k(world_model_config: str) -> int | None:
    """The diffusion steps K the stage-1 config trains (its ``diffusion_steps``, else
    WorldModelModule's default), or None where the file does not say (an interpolation)."""
    k = (world_model_args(world_model_config) or {}).get("diffusion_steps")
    return k if isinstance(k, int) and not isinstance(k, bool) else None


# What the backward pass through a frozen net keeps of each hidden unit: its activation's
# input (SiLU) or output (ReLU), one float (the Linear layers keep nothing: their weights need
# no gradient); bytes by ITPO's precision
BYTES_PER_UNIT = {"32-true": 4, "bf16-mixed": 2}


def rollout_memory(cfg: PipelineConfig) -> int | None:
    """A lower bound on the bytes one ITPO run's imagined rollout keeps for its gradient:
    particles x episodes in one batch (the alpha grid's x alpha_episodes, or num_episodes) x
    horizon x the bytes per imagined sample: one float per hidden unit (``BYTES_PER_UNIT``)
    of the diffusion denoiser's sample_steps passes and of the reward model (the policy, the
    critic and MeanFlow's one pass not counted). None where the world-model config does not
    say its widths."""
    args = world_model_args(cfg.world_model_config)
    try:
        steps = int(cfg.sample_steps or args["sample_steps"] or args["diffusion_steps"])
        units = steps * sum(args["hidden"]) + sum(args["reward_hidden"])
    except (TypeError, KeyError, ValueError):
        return None
    episodes = max(len(cfg.alpha_grid) * cfg.alpha_episodes, cfg.num_episodes)
    per_unit = BYTES_PER_UNIT.get(cfg.itpo_precision, 4)
    return cfg.particles * episodes * cfg.horizon * units * per_unit


def available_memory() -> tuple[int, str] | None:
    """``(bytes, where)``: the free memory of the GPU the ITPO runs use where one is visible,
    else the machine's available RAM (Linux's MemAvailable); None where unknown."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, f"free on {torch.cuda.get_device_name()}"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.3g} PB"  # unreachable


def check_config(cfg: PipelineConfig) -> None:
    """Every argument checked before any stage trains (one :class:`ConfigError` each), and
    the dataset by the checks every stage's DataModule runs (:meth:`MinariDataModule.load`:
    a continuous 1-D Box action space with finite bounds, actions inside it, shapes that agree
    with the metadata, finite values)."""
    from lit_itpo.data.datamodule import MinariDataModule
    from lit_itpo.world_models.diffusion import check_sample_steps

    if not cfg.dataset_id.strip():  # an unset shell variable
        raise ConfigError(
            f"--pipeline.dataset_id={cfg.dataset_id!r} is empty; pass a Minari id "
            "<namespace>/<env>/<name>-vN, or leave it out for the embedded "
            "lit_itpo/pendulum/medium-v0."
        )
    counts = {
        "world_model_steps": cfg.world_model_steps,
        "policy_steps": cfg.policy_steps,
        "meanflow_steps": cfg.meanflow_steps,
        "policy_eval_every": cfg.policy_eval_every,
        "policy_eval_episodes": cfg.policy_eval_episodes,
        "alpha_episodes": cfg.alpha_episodes,
        "num_episodes": cfg.num_episodes,
        "policy_batch_size": cfg.policy_batch_size,
        "sample_steps": cfg.sample_steps,
        "max_episode_steps": cfg.max_episode_steps,
        "particles": cfg.particles,
        "horizon": cfg.horizon,
        "inner_steps": cfg.inner_steps,
    }
    for name, val in counts.items():
        if val is not None and val < 1:
            raise ConfigError(f"--pipeline.{name}={val} must be >= 1; pass a positive count.")
    # env seeds reach gymnasium only when an evaluation starts (after stage 1) and the seed
    # Lightning's seed_everything, which swaps a value out of range for 0 with a warning
    for name, top in (("eval_seed", None), ("alpha_seed", None), ("seed", 2**32 - 1)):
        val = getattr(cfg, name)
        if val < 0 or (top is not None and val > top):
            span = f"between 0 and {top}" if top is not None else ">= 0"
            raise ConfigError(
                f"--pipeline.{name}={val} must be {span} (a seed); pass e.g. "
                f"--pipeline.{name} {getattr(PipelineConfig, name)}."
            )
    if not cfg.alpha_grid:
        raise ConfigError(
            "--pipeline.alpha_grid=[] is empty; give candidate step sizes, e.g. "
            "[5e-7, 5e-6, 5e-5, 5e-4]."
        )
    for lr in cfg.alpha_grid:
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(
                f"--pipeline.alpha_grid has {lr}; every step size must be finite and > 0 (the "
                "base policy, alpha 0, is always compared)."
            )
    if cfg.itpo_precision not in ("32-true", "bf16-mixed"):
        raise ConfigError(
            f"--pipeline.itpo_precision={cfg.itpo_precision!r} must be '32-true' or 'bf16-mixed'."
        )
    if not (math.isfinite(cfg.proximity) and cfg.proximity >= 0):
        raise ConfigError(
            f"--pipeline.proximity={cfg.proximity} must be finite and >= 0 (0: no pull back)."
        )
    arms = [arm_rule(a, cfg.reset_every_step) for a in cfg.itpo_models or []]
    if not arms or {m for m, _ in arms} - set(ITPO_MODELS):
        raise ConfigError(
            f"--pipeline.itpo_models={cfg.itpo_models} must name some of "
            f"{list(ITPO_MODELS)}, each optionally with a rule suffix {list(RULES)}, e.g. "
            "[exact, meanflow, meanflow_reset]."
        )
    if len(set(arms)) < len(arms):
        raise ConfigError(
            f"--pipeline.itpo_models={cfg.itpo_models} names one arm twice (a suffix equal to "
            f"the run's rule, reset_every_step={cfg.reset_every_step}, is the arm without it)."
        )
    if Path(cfg.itpo_dir).name != cfg.itpo_dir or cfg.itpo_dir in (*STAGES, ".", ".."):
        raise ConfigError(
            f"--pipeline.itpo_dir={cfg.itpo_dir!r} must be one folder name under out_dir, not a "
            f"path nor a stage's ({', '.join(STAGES)}); e.g. itpo_reset."
        )
    if cfg.sample_variance not in (None, "beta", "beta_tilde"):
        raise ConfigError(
            f"--pipeline.sample_variance={cfg.sample_variance!r} must be 'beta', 'beta_tilde' "
            "or null (the checkpoint's)."
        )
    alpha = range(cfg.alpha_seed, cfg.alpha_seed + cfg.alpha_episodes)
    evals = range(cfg.eval_seed, cfg.eval_seed + max(cfg.num_episodes, cfg.policy_eval_episodes))
    if alpha.start < evals.stop and evals.start < alpha.stop:
        raise ConfigError(
            f"--pipeline.alpha_seed={cfg.alpha_seed} (+{cfg.alpha_episodes} episodes) overlaps "
            f"the evaluation seeds eval_seed={cfg.eval_seed} (+{cfg.num_episodes}); alpha is "
            "chosen on held-out seeds: move one of them."
        )
    for name in ("world_model_config", "policy_config", "meanflow_config", "itpo_config"):
        path = getattr(cfg, name)
        if Path(path).is_dir():
            example = f"conf/embedded/{STAGE_CONFIGS[name]}"
            own = STAGE_CONFIGS[name] if (Path(path) / STAGE_CONFIGS[name]).is_file() else "*.yaml"
            raise ConfigError(is_a_folder(f"--pipeline.{name}={path}", path, own, example))
        if not Path(path).is_file() and name in getattr(cfg, "_auto_configs", ()):
            raise ConfigError(
                f"the default stage config {path} (--pipeline.{name} auto) is not found from "
                f"{Path.cwd()}, and the package's repository has no conf/ ({REPO_CONF}); run "
                f"from the repository root, or pass --pipeline.{name} (and the other stage "
                "configs) as paths."
            )
        if not Path(path).is_file():
            raise ConfigError(
                f"--pipeline.{name}={path} does not exist; pass a stage config, e.g. "
                f"conf/embedded/{STAGE_CONFIGS[name]}, or auto."
            )
        check_config_files(["--config", path])
    if any(arm_rule(a, False)[0] == "diffusion" for a in cfg.itpo_models):
        check_sample_steps(
            cfg.sample_steps, trained_k(cfg.world_model_config), "--pipeline.sample_steps",
            cfg.world_model_config, "raise diffusion_steps in that config",
        )  # fmt: skip
    if not str(cfg.out_dir).strip():
        raise ConfigError(
            f"--pipeline.out_dir={cfg.out_dir!r} is empty and would put every stage in the "
            "working directory; pass a directory (e.g. runs/pipeline/<name>), or auto for "
            "runs/pipeline/<dataset id>/s<seed>."
        )
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise ConfigError(
            f"--pipeline.out_dir={cfg.out_dir} is a file; pass a directory for the stages' logs."
        )
    check_writable(cfg.out_dir, "--pipeline.out_dir")
    unknown = [s for s in _restart_names(cfg) if s not in (*RESTARTABLE, "all")]
    if unknown:
        raise ConfigError(
            f"--pipeline.restart={cfg.restart} names {unknown}; give one or a list of "
            f"{[*RESTARTABLE, 'all']}, e.g. [policy]."
        )
    need, have = rollout_memory(cfg), available_memory()
    if need is not None and have is not None and need > have[0]:
        episodes = max(len(cfg.alpha_grid) * cfg.alpha_episodes, cfg.num_episodes)
        fit = max(1, int(cfg.particles * have[0] / need))
        raise ConfigError(
            f"--pipeline.particles={cfg.particles} needs ~{_size(need)} for ITPO's imagined "
            f"rollout (particles x {episodes} episodes x horizon {cfg.horizon} x "
            f"{_size(need / (cfg.particles * episodes * cfg.horizon))} per sample, a lower "
            f"bound) but {_size(have[0])} is {have[1]}; pass --pipeline.particles well under "
            f"{fit} (the most that estimate fits)."
        )
    # DatasetNotFound / DatasetFormat / EnvSpec errors, as stage 1 would raise them
    data = MinariDataModule(cfg.dataset_id, data_dir=cfg.data_dir)
    data.load()
    if "exact" in cfg.itpo_models and (cfg.exact_model != AUTO or cfg.itpo_models == ["exact"]):
        from lit_itpo.world_models.exact import make_exact_model

        make_exact_model(cfg.exact_model, data.env_spec)  # ConfigError: not built in / not found


LOCK = ".lit-itpo.lock"  # in out_dir: held by the pipeline run that writes there


@contextmanager
def hold_out_dir(out: Path, made: bool = False) -> Iterator[None]:
    """Hold ``out/.lit-itpo.lock`` (an OS file lock, :mod:`filelock`) for the whole run, so two
    pipelines never train into one folder at once; the OS releases it when the process ends,
    however it ends (an error, SIGTERM, kill -9). A run that leaves nothing else in ``out``
    (its first stage failed, and the stage run removed its own folder) removes the lock file
    while it still holds it, and ``out`` itself where it ``made`` the folder.

    Raises:
        ConfigError: another run holds it (nothing in the folder is touched).
    """
    from filelock import FileLock, Timeout

    lock = FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"--pipeline.out_dir {out} is in use: another `lit-itpo pipeline` run holds it "
            f"({out / LOCK} is locked); wait for that run to end (then the same command "
            "resumes or reuses its stages), or pass another --pipeline.out_dir."
        ) from None
    try:
        yield
    finally:
        try:
            if [p.name for p in out.iterdir()] == [LOCK]:
                (out / LOCK).unlink()
                if made:
                    out.rmdir()
        finally:
            lock.release()


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run (or resume) every stage; returns the results dict also written to results.json.
    The run holds ``out_dir`` (:func:`hold_out_dir`): a second run on it at once is refused."""
    check_config(cfg)
    out = Path(cfg.out_dir)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with hold_out_dir(out, made):
        return _run_stages(cfg, out)


def _run_stages(cfg: PipelineConfig, out: Path) -> dict:
    wm = _fit(cfg, out, "world_model", cfg.world_model_config, cfg.world_model_steps, {})
    cb = "trainer.callbacks.init_args."
    policy = _fit(
        cfg,
        out,
        "policy",
        cfg.policy_config,
        cfg.policy_steps,
        {
            f"{cb}num_episodes": cfg.policy_eval_episodes,
            f"{cb}seed": cfg.eval_seed,
            f"{cb}max_episode_steps": cfg.max_episode_steps,
        }
        | ({} if cfg.policy_batch_size is None else {"data.batch_size": cfg.policy_batch_size}),
        val_every=cfg.policy_eval_every,
    )
    meanflow = _fit(
        cfg,
        out,
        "meanflow",
        cfg.meanflow_config,
        cfg.meanflow_steps,
        {
            "model.init_args.policy_ckpt": str(policy.checkpoint),
            "model.init_args.world_model_ckpt": str(wm.checkpoint),
        },
    )
    sources = {"diffusion": str(wm.checkpoint), "meanflow": str(meanflow.checkpoint)}
    if any(arm_rule(a, False)[0] == "exact" for a in cfg.itpo_models) and exact_available(cfg):
        sources["exact"] = cfg.exact_model
    # arm -> (world model, reset), in the order given; exact arms first
    arms = {a: arm_rule(a, cfg.reset_every_step) for a in cfg.itpo_models}
    arms = {a: mr for a, mr in arms.items() if mr[0] in sources}
    arms = dict(sorted(arms.items(), key=lambda kv: kv[1][0] != "exact"))
    itpo = ITPOConfig(
        horizon=cfg.horizon,
        particles=cfg.particles,
        inner_steps=cfg.inner_steps,
        precision=cfg.itpo_precision,
        reset_every_step=cfg.reset_every_step,
        proximity=cfg.proximity,
    )

    def itpo_run(tag: str, world_models: dict, **kw) -> EvalResult:
        what = "alpha on held-out episodes" if tag == "alpha" else "evaluation"
        banner(f"ITPO {what}, {tag} ({', '.join(world_models)}) -> {out / cfg.itpo_dir / tag}")
        return _evaluate(
            cfg,
            EvalSpec(
                cfg.itpo_config,
                str(out / cfg.itpo_dir / tag),
                cfg.dataset_id,
                str(policy.checkpoint),
                world_models,
                kw.pop("itpo", itpo),
                data_dir=cfg.data_dir,
                seed=cfg.seed,
                max_episode_steps=cfg.max_episode_steps,
                sample_steps=cfg.sample_steps,
                sample_variance=cfg.sample_variance,
                **kw,
            ),
        )

    # alpha: every grid point on the held-out episodes, one batch per world model and rule
    # (the run's rule in "alpha", another in "alpha_reset" / "alpha_carry")
    chosen: dict[str, float] = {}
    held_out: dict[str, dict[float, float]] = {}
    base_held_out = None
    for reset in sorted({r for _, r in arms.values()}, key=lambda r: r != cfg.reset_every_step):
        group = {a: m for a, (m, r) in arms.items() if r == reset}
        tag = "alpha" if reset == cfg.reset_every_step else "alpha" + ("_carry", "_reset")[reset]
        sel = itpo_run(
            tag, {m: sources[m] for m in group.values()}, alpha_grid=cfg.alpha_grid,
            episodes=cfg.alpha_episodes, env_seed=cfg.alpha_seed,
            itpo=replace(itpo, reset_every_step=reset),
        )  # fmt: skip
        base_held_out = sel.base.return_mean
        for a, m in group.items():
            chosen[a] = sel.alpha[m]
            held_out[a] = {lr: sel.grid[m][lr].return_mean for lr in cfg.alpha_grid}
    results = {
        "dataset_id": cfg.dataset_id,
        "config": asdict(cfg),
        "command": " ".join(["lit-itpo", *sys.argv[1:]]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoints": {"world_model": sources["diffusion"], "policy": str(policy.checkpoint)}
        | {"meanflow": sources["meanflow"]},
        "alpha_selection": {
            f"{lr:g}": {"base_return": base_held_out}
            | {f"itpo_{a}_return": held_out[a][lr] for a in arms}
            for lr in cfg.alpha_grid
        },
        "alpha": chosen,
    }
    for arm, (model, reset) in arms.items():
        alpha = chosen[arm]
        final = itpo_run(
            f"final_{arm}", {model: sources[model]},
            itpo=replace(itpo, lr=alpha, reset_every_step=reset),
            episodes=cfg.num_episodes, env_seed=cfg.eval_seed,
        )  # fmt: skip
        results["base"] = asdict(final.base)  # identical in each final run: same seeds
        d = final.itpo[model]
        results[f"itpo_{arm}"] = asdict(d.score) | {
            "world_model": model,
            "reset_every_step": reset,
            "alpha": alpha,
            "fell_back": alpha == 0.0,  # no grid point beat the base policy on held-out seeds
            "improvement": d.gain if d.score.normalized_score is not None else None,
            "gain": d.gain,
            # None (n/a): fewer paired episodes than an interval needs (stats.MIN_PAIRED_EPISODES)
            "gain_ci": [v if math.isfinite(v) else None for v in d.gain_ci],
            "gain_unit": "normalised score" if d.score.normalized_score is not None else "return",
            "ms_per_step": d.ms_per_step,
            "fallbacks": d.fallbacks,
            "nfe_per_step": d.nfe_per_step,
            "ascent_rate": d.ascent_rate,
        }
    for arm, (model, reset) in arms.items():
        # the share of the exact arm's gain (same rule, same base, same episodes) this learned
        # model keeps; undefined where the exact arm did not gain
        exact = next(
            (results[f"itpo_{a}"] for a, (m, r) in arms.items() if m == "exact" and r == reset),
            None,
        )
        if model != "exact" and exact is not None:
            d = results[f"itpo_{arm}"]
            d["share_of_exact_gain"] = d["gain"] / exact["gain"] if exact["gain"] > 0 else None
    write_record(results, results_path(cfg))
    return results


def results_path(cfg: PipelineConfig) -> Path:
    """``out_dir/results.json``, or ``out_dir/<itpo_dir>/results.json`` for another ITPO run."""
    out = Path(cfg.out_dir)
    return out / "results.json" if cfg.itpo_dir == "itpo" else out / cfg.itpo_dir / "results.json"


def format_table(res: dict) -> str:
    """The results as a Markdown table: score, return, paired gain over the base on the same
    episodes with its 95% bootstrap interval, the share of the exact arm's gain a learned world
    model keeps, the share of ITPO steps that raised the true objective
    (:mod:`lit_itpo.ascent`), cost, and each row's mean episode length."""

    def f(x, spec=".1f"):
        return "n/a" if x is None else format(x, spec)

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"

    b, cfg = res["base"], res["config"]
    unit = next((res[k]["gain_unit"] for k in res if k.startswith("itpo_")), "normalised score")
    rows = [
        f"| policy | normalised score | return | gain in {unit} [95% CI] | share of exact gain "
        "| ascent rate | ms / env step | net evals / step | mean length |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| base policy | {f(b['normalized_score'])} | {f(b['return_mean'])} | | | | | | "
        f"{b['length_mean']:.0f} |",
    ]
    names = {
        "exact": "exact dynamics",
        "diffusion": "diffusion WM",
        "meanflow": "tilted MeanFlow WM",
    }
    arms = [k[len("itpo_") :] for k in res if k.startswith("itpo_")]
    rules = {res[f"itpo_{a}"].get("reset_every_step", False) for a in arms}
    has_exact = any(res[f"itpo_{a}"].get("world_model", a) == "exact" for a in arms)
    for arm in arms:
        d = res[f"itpo_{arm}"]
        name = d.get("world_model", arm)
        label = names.get(name, name)
        if len(rules) > 1:  # say each row's rule where the table mixes them
            reset = d.get("reset_every_step", False)
            label += ", psi reset each step" if reset else ", psi carried over"
        share = pct(d.get("share_of_exact_gain")) if name != "exact" and has_exact else ""
        length = f"{d['length_mean']:.0f}"
        if d["fell_back"]:
            rows.append(
                f"| ITPO, {label}: fell back to the base policy (no alpha of the grid beat it on "
                f"the held-out episodes) | {f(d['normalized_score'])} | {f(d['return_mean'])} | "
                f"+0.0 | {share} | - | - | - | {length} |"
            )
            continue
        lo, hi = d["gain_ci"]
        ci = "n/a" if lo is None or hi is None or not math.isfinite(lo) else f"{lo:+.1f}, {hi:+.1f}"
        rows.append(
            f"| ITPO, {label} (alpha {d['alpha']:g}) | {f(d['normalized_score'])} | "
            f"{f(d['return_mean'])} | {d['gain']:+.1f} [{ci}] | {share} | "
            f"{pct(d.get('ascent_rate'))} | {f(d['ms_per_step'])} | "
            f"{f(d['nfe_per_step'], '.0f')} | {length} |"
        )
    steps = cfg["max_episode_steps"] or "the env's limit"
    head = (
        f"{res['dataset_id']}: {cfg['num_episodes']} evaluation "
        f"episode{'s' if cfg['num_episodes'] != 1 else ''} (cut at {steps} steps), "
        f"env seeds {cfg['eval_seed']}+i, the same for every row"
    )
    notes = []
    measured = [res[f"itpo_{a}"] for a in arms]
    n = cfg["num_episodes"]
    if n < MIN_PAIRED_EPISODES and any(None in d["gain_ci"] for d in measured):
        notes.append(
            f"95% CI n/a: fewer than {MIN_PAIRED_EPISODES} paired episodes ({n} evaluation "
            f"episode{'s' if n != 1 else ''}; --pipeline.num_episodes {MIN_PAIRED_EPISODES} or "
            "more gives one)"
        )
    if any(d["ascent_rate"] is None for d in measured if not d["fell_back"]):
        notes.append(
            "ascent rate n/a: the env's state cannot be set from its observation, so J_true "
            "cannot be evaluated (lit_itpo.ascent)"
        )
    return head + "\n" + "\n".join(rows) + "".join(f"\n{n}" for n in notes)


def pipeline_main(args) -> dict:
    """``lit-itpo pipeline [--config F] [--pipeline.field value ...]``."""
    cfg, _ = parse_dataclass_command(
        "pipeline",
        PipelineConfig,
        "World model -> policy -> MeanFlow -> ITPO evaluation, resumable.",
        args,
    )
    res = run_pipeline(cfg)
    sys.stdout.write(f"\n{format_table(res)}\nresults: {results_path(cfg)}\n")
    return res
