"""``lit-itpo pipeline``: every stage for one dataset, resumable per stage.

world model (stage 1) -> policy (stage 2, ReBRAC) -> tilted MeanFlow world model (stage 3,
tilted toward that policy, reusing stage 1's reward model) -> alpha chosen per world model on a
held-out env seed -> ITPO evaluation (base vs diffusion-ITPO vs MeanFlow-ITPO on the same seeds)
-> results table (stdout), JSON and TensorBoard (each stage logs under ``out_dir/<stage>``).

Each stage runs the committed stage config through LightningCLI with the overrides below; its
final checkpoint is copied to ``out_dir/<stage>.ckpt`` atomically, and a stage whose file exists
is skipped, so an interrupted pipeline resumes at the first missing stage.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lit_itpo.errors import ConfigError
from lit_itpo.utils import atomic_write_json

log = logging.getLogger(__name__)

AUTO = "auto"  # a PipelineConfig value decided from the dataset in __post_init__
STAGES = ("world_model", "policy", "meanflow")  # the order run_pipeline trains them in
STAGE_CONFIGS = {
    "world_model_config": "world_model.yaml",
    "policy_config": "rebrac.yaml",
    "meanflow_config": "meanflow.yaml",
    "itpo_config": "itpo.yaml",
}


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
        dataset_id, data_dir: the dataset (default: the embedded sample). ``data_dir`` "auto":
            the package's embedded root when the id is there, otherwise Minari's own root
            (``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``).
        out_dir: where every stage writes (checkpoints, TensorBoard, results.json); "auto":
            ``runs/pipeline/embedded`` for the embedded sample, else ``runs/pipeline/<id>``.
        world_model_config, policy_config, meanflow_config, itpo_config: stage configs to run;
            "auto": ``conf/<env>-<dataset>/`` (e.g. ``conf/hopper-medium/`` for
            ``*/hopper/medium-v0``) where it has the stage's file, else the generic
            ``conf/embedded/`` one (budgets come from this config's ``*_steps``; dims, bounds and
            the evaluation env from the dataset).
        world_model_steps, policy_steps, meanflow_steps: training budgets (updates).
        policy_eval_every, policy_eval_episodes: the policy stage's evaluation episodes while
            it trains (its best score is read from them).
        policy_batch_size: the policy stage's batch (None: its config's).
        sample_steps, sample_variance: diffusion sampling used by ITPO (5 respaced steps with
            the posterior variance: the accuracy/cost choice of benchmarks/world_model_k.py).
        particles, horizon, inner_steps: ITPO's M, H, E.
        alpha_grid: candidate step sizes; chosen on ``alpha_seed`` (paper: {5e-7 .. 5e-4}).
        alpha_seed: the held-out env seed (disjoint from the evaluation seeds).
        alpha_episodes: held-out episodes per grid point (seeds alpha_seed + i; the choice is
            made on their mean return). 1 is the paper's protocol.
        num_episodes, eval_seed: evaluation episodes (seeds eval_seed + i).
        max_episode_steps: cut evaluation episodes there (None: the env's limit).
        seed: seed_everything of every stage.
    """

    dataset_id: str = "lit_itpo/halfcheetah/medium-small-v0"
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
    particles: int = 64
    horizon: int = 5
    inner_steps: int = 1
    alpha_grid: list[float] = field(default_factory=lambda: [5e-7, 5e-6, 5e-5, 5e-4])
    alpha_seed: int = 999
    alpha_episodes: int = 1
    num_episodes: int = 10
    eval_seed: int = 1_000_000
    max_episode_steps: int | None = 200
    seed: int = 0

    def __post_init__(self) -> None:
        """Every "auto" value decided from the dataset (logged, one line each)."""
        from lit_itpo.data.minari_io import EMBEDDED, EMBEDDED_ROOT

        embedded = (EMBEDDED_ROOT / self.dataset_id).is_dir()
        folder = EMBEDDED if embedded else conf_folder(self.dataset_id)
        if self.data_dir == AUTO:
            self.data_dir = EMBEDDED if embedded else None
            log.info("pipeline: data_dir = %s", self.data_dir or "Minari's root")
        if self.out_dir == AUTO:
            self.out_dir = f"runs/pipeline/{EMBEDDED if embedded else self.dataset_id}"
            log.info("pipeline: out_dir = %s", self.out_dir)
        for name, file in STAGE_CONFIGS.items():
            if getattr(self, name) == AUTO:
                tuned = Path("conf") / folder / file
                path = tuned if tuned.is_file() else Path("conf") / EMBEDDED / file
                setattr(self, name, str(path))
                why = "" if path == tuned else f" (no {tuned}: the generic config)"
                log.info("pipeline: %s = %s%s", name, path, why)


def _data_args(cfg: PipelineConfig) -> list[str]:
    """The dataset for every stage; data_dir always, so a stage config's own (e.g. the ITPO
    config's ``embedded``) never wins over the pipeline's (None: Minari's default root)."""
    data_dir = "null" if cfg.data_dir is None else cfg.data_dir
    return ["--data.dataset_id", cfg.dataset_id, "--data.data_dir", data_dir]


def _stage_args(out: Path, stage: str, seed: int) -> list[str]:
    """Logs and checkpoints of a stage under ``out/<stage>``, with the pipeline's seed."""
    d = str(out / stage)
    return [
        "--trainer.default_root_dir",
        d,
        "--trainer.logger.init_args.save_dir",
        d,
        "--seed_everything",
        str(seed),
    ]


def _fit_stage(
    cfg: PipelineConfig,
    out: Path,
    stage: str,
    config: str,
    steps: int,
    extra: list[str],
    val_every: int = 1000,
) -> Path:
    """Fit (or resume: ``--ckpt_path last``) one stage to ``steps`` updates and copy its final
    checkpoint to ``out/<stage>.ckpt``; a stage whose file exists is skipped. Either way the
    checkpoint must hold exactly ``steps`` updates."""
    from lit_itpo.cli import lightning_main

    final = out / f"{stage}.ckpt"
    n = list(STAGES).index(stage) + 1
    log.info("pipeline: stage %d/3, %s (%s): %d updates -> %s", n, stage, config, steps, final)
    if final.exists():
        check_budget(final, stage, steps)
        log.info("%s: %s exists, skipping (delete it to retrain)", stage, final)
        return final
    args = [
        "fit",
        "--config",
        config,
        *_data_args(cfg),
        *_stage_args(out, stage, cfg.seed),
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(max(1, min(steps, val_every))),
        *extra,
        "--ckpt_path",
        "last",  # the newest checkpoint of this stage's logs, if any (cli.find_last_checkpoint)
    ]
    lightning_main(args)
    newest = _newest_checkpoint(out / stage)
    if newest is None:
        raise ConfigError(f"Stage {stage} wrote no checkpoint under {out / stage}.")
    check_budget(newest, stage, steps)
    tmp = final.with_suffix(".ckpt.tmp")
    shutil.copyfile(newest, tmp)
    tmp.replace(final)
    return final


def check_budget(path: Path, stage: str, steps: int) -> None:
    """A stage checkpoint holds the ``steps`` updates asked for (not an earlier validation's)."""
    import torch

    got = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    if got != steps:
        raise ConfigError(
            f"{stage} checkpoint {path} holds step {got}, not the {stage}_steps={steps} asked; "
            f"delete it (and {path.with_suffix('')}/ to start over) or ask for {got} steps."
        )


def _newest_checkpoint(stage_dir: Path) -> Path | None:
    """The newest checkpoint Lightning wrote for a stage (any logger version; ``last.ckpt``
    first among files of the same time); ``*.ckpt.tmp`` files are never picked."""
    found = sorted(
        stage_dir.glob("**/checkpoints/*.ckpt"),
        key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"),
    )
    return found[-1] if found else None


def _canonical(made_by: dict | None) -> dict | None:
    """``made_by`` with every argument and checkpoint key that names an existing path resolved,
    so an ``out_dir`` given once relative and once absolute (same working directory) still
    finds its finished runs."""

    def resolve(a: str) -> str:
        try:
            return str(Path(a).resolve()) if Path(a).exists() else a
        except OSError:  # not a path (e.g. too long for one)
            return a

    if made_by is None:
        return None
    return {
        "args": [resolve(a) for a in made_by.get("args", [])],
        "checkpoints": {resolve(k): v for k, v in made_by.get("checkpoints", {}).items()},
    }


def run_itpo(
    cfg: PipelineConfig,
    out: Path,
    tag: str,
    ckpts: dict[str, Path],
    policy: Path,
    lr: float,
    seed: int,
    episodes: int,
) -> dict:
    """One ITPO evaluation (``lit-itpo validate`` of ``cfg.itpo_config`` on ``policy``) at step
    size ``lr`` with the world models in ``ckpts``, on ``episodes`` episodes from env seed
    ``seed``; logs under ``out/itpo/<tag>``. Returns its metrics (``eval/*``, ``itpo/<model>/*``,
    ``time/*``); a finished run with the same arguments and checkpoints is reused."""
    from lit_itpo.cli import lightning_main

    cb = "--trainer.callbacks.init_args."
    args = [
        "validate",
        "--config",
        cfg.itpo_config,
        *_data_args(cfg),
        *_stage_args(out, f"itpo/{tag}", cfg.seed),
        f"{cb}lr",
        str(lr),
        f"{cb}particles",
        str(cfg.particles),
        f"{cb}horizon",
        str(cfg.horizon),
        f"{cb}inner_steps",
        str(cfg.inner_steps),
        f"{cb}num_episodes",
        str(episodes),
        f"{cb}seed",
        str(seed),
        "--ckpt_path",
        str(policy),
    ]
    keys = {"diffusion": "world_model_ckpt", "meanflow": "meanflow_ckpt"}
    for name, path in ckpts.items():
        args += [f"{cb}{keys[name]}", str(path)]
    if cfg.sample_steps is not None:
        args += [f"{cb}sample_steps", str(cfg.sample_steps)]
    if cfg.sample_variance is not None:
        args += [f"{cb}sample_variance", cfg.sample_variance]
    if cfg.max_episode_steps is not None:
        args += [f"{cb}max_episode_steps", str(cfg.max_episode_steps)]
    # each ITPO run is a resume point: its metrics are kept with the exact arguments and the
    # checkpoints (size, mtime) that made them; a rerun of the pipeline reuses them, and any
    # changed argument or retrained stage (a new checkpoint file) reruns it
    done = out / "itpo" / tag / "metrics.json"
    made_by = {
        "args": args,
        "checkpoints": {
            str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in [policy, *ckpts.values()]
        },
    }
    if done.is_file():
        kept = json.loads(done.read_text())
        if _canonical(kept.get("made_by")) == _canonical(made_by):
            log.info("itpo/%s: done before (%s), reusing its metrics", tag, done)
            return kept["metrics"]
    cli = lightning_main(args)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    atomic_write_json({"made_by": made_by, "metrics": metrics}, done)
    return metrics


def select_alpha(
    cfg: PipelineConfig, out: Path, ckpts: dict[str, Path], policy: Path
) -> dict[float, dict]:
    """One ITPO run per grid point on the held-out episodes (seeds ``alpha_seed + i``, i <
    ``alpha_episodes``); each run evaluates the base policy and every world model in ``ckpts``
    on the same episodes. Returns the runs' metrics by step size."""
    return {
        lr: run_itpo(
            cfg, out, f"alpha_{lr:g}", ckpts, policy, lr, cfg.alpha_seed, cfg.alpha_episodes
        )
        for lr in cfg.alpha_grid
    }


def choose_alpha(sel: dict[float, dict], name: str) -> float:
    """The grid point with the highest held-out mean return for world model ``name``, or 0 (the
    base policy) when none beats the base policy there, as the paper falls back."""
    key = f"itpo/{name}/return_mean"
    best = max(sel, key=lambda lr: sel[lr][key])
    return best if sel[best][key] > next(iter(sel.values()))["eval/return_mean"] else 0.0


def check_config(cfg: PipelineConfig) -> None:
    """Every argument checked before any stage trains (one :class:`ConfigError` each)."""
    from lit_itpo.cli import check_config_files
    from lit_itpo.data.minari_io import open_dataset

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
        if not Path(path).is_file():
            raise ConfigError(
                f"--pipeline.{name}={path} does not exist; pass a stage config, e.g. "
                f"conf/embedded/{STAGE_CONFIGS[name]}, or auto."
            )
        check_config_files(["--config", path])
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise ConfigError(
            f"--pipeline.out_dir={cfg.out_dir} is a file; pass a directory for the stages' logs."
        )
    open_dataset(cfg.dataset_id, cfg.data_dir)  # DatasetNotFoundError / DatasetFormatError


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Run (or resume) every stage; returns the results dict also written to results.json."""
    check_config(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wm = _fit_stage(cfg, out, "world_model", cfg.world_model_config, cfg.world_model_steps, [])
    policy = _fit_stage(
        cfg,
        out,
        "policy",
        cfg.policy_config,
        cfg.policy_steps,
        [
            "--trainer.callbacks.init_args.num_episodes",
            str(cfg.policy_eval_episodes),
            "--trainer.callbacks.init_args.seed",
            str(cfg.eval_seed),
            "--trainer.callbacks.init_args.max_episode_steps",
            "null" if cfg.max_episode_steps is None else str(cfg.max_episode_steps),
            *(
                []
                if cfg.policy_batch_size is None
                else ["--data.batch_size", str(cfg.policy_batch_size)]
            ),
        ],
        val_every=cfg.policy_eval_every,
    )
    meanflow = _fit_stage(
        cfg,
        out,
        "meanflow",
        cfg.meanflow_config,
        cfg.meanflow_steps,
        [
            "--model.init_args.policy_ckpt",
            str(policy),
            "--model.init_args.world_model_ckpt",
            str(wm),
        ],
    )
    ckpts = {"diffusion": wm, "meanflow": meanflow}
    sel = select_alpha(cfg, out, ckpts, policy)
    results = {
        "dataset_id": cfg.dataset_id,
        "config": asdict(cfg),
        "command": " ".join(["lit-itpo", *sys.argv[1:]]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "alpha_selection": {
            f"{lr:g}": {"base_return": m["eval/return_mean"]}
            | {f"itpo_{n}_return": m[f"itpo/{n}/return_mean"] for n in ckpts}
            for lr, m in sel.items()
        },
        "alpha": {},
    }
    for name, path in ckpts.items():
        alpha = choose_alpha(sel, name)
        final = run_itpo(
            cfg, out, f"final_{name}", {name: path}, policy, alpha, cfg.eval_seed, cfg.num_episodes
        )
        results["alpha"][name] = alpha
        results["base"] = {  # identical in each final run: same policy, same seeds
            "normalized_score": final.get("eval/normalized_score"),
            "return_mean": final["eval/return_mean"],
            "success_rate": final.get("eval/success_rate"),  # maze envs
        }
        results[f"itpo_{name}"] = {
            "alpha": alpha,
            "normalized_score": final.get(f"itpo/{name}/normalized_score"),
            "return_mean": final[f"itpo/{name}/return_mean"],
            "improvement": final.get(f"itpo/{name}/improvement"),
            "success_rate": final.get(f"itpo/{name}/success_rate"),
            "ms_per_step": final[f"time/itpo_{name}_ms_per_step"],
            "fallbacks": final[f"itpo/{name}/fallbacks"],
            "nfe_per_step": final[f"itpo/{name}/nfe_per_step"],
        }
    atomic_write_json(results, out / "results.json")
    return results


def format_table(res: dict) -> str:
    def f(x, spec=".1f"):
        return "n/a" if x is None else format(x, spec)

    b = res["base"]
    rows = [
        "| policy | normalised score | return | gain | ms / env step | net evals / step |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| ReBRAC (base) | {f(b['normalized_score'])} | {f(b['return_mean'])} | | | |",
    ]
    names = {"diffusion": "diffusion WM", "meanflow": "tilted MeanFlow WM"}
    for name, label in names.items():
        d = res.get(f"itpo_{name}")
        if d is None:
            continue
        rows.append(
            f"| ITPO, {label} (alpha {d['alpha']:g}) | {f(d['normalized_score'])} | "
            f"{f(d['return_mean'])} | {f(d['improvement'], '+.1f')} | {f(d['ms_per_step'])} | "
            f"{f(d['nfe_per_step'], '.0f')} |"
        )
    return "\n".join(rows)


def pipeline_main(args) -> dict:
    """``lit-itpo pipeline [--config F] [--pipeline.field value ...]``."""
    from lit_itpo.cli import parse_dataclass_command

    cfg, _ = parse_dataclass_command(
        "pipeline",
        PipelineConfig,
        "World model -> policy -> MeanFlow -> ITPO evaluation, resumable.",
        args,
    )
    res = run_pipeline(cfg)
    sys.stdout.write(
        f"\n{cfg.dataset_id} ({cfg.num_episodes} episodes, seeds "
        f"{cfg.eval_seed}+i)\n{format_table(res)}\n"
        f"results: {Path(cfg.out_dir) / 'results.json'}\n"
    )
    return res
