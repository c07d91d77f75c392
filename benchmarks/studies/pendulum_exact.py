"""Why does ITPO with Pendulum's exact dynamics not beat its base? A grid over the factors the
main job fixed: the critic's training budget, psi carried over or reset every step, the horizon,
the step size alpha; beside the headroom (the SAC expert on the same episodes).

Protocol (diagnosis, not a gain claim):
- Checkpoints: ReBRAC on ``lit_itpo/pendulum/medium-v0`` with the main job's config
  (``conf/pendulum-medium/rebrac.yaml``), training seeds 1 and 2 (the main job is seed 0), at
  the main job's 5k updates and at 30k; trained here by the stage runner into ``--runs``.
- Episodes: 20 per cell, env seeds 2000000+i (neither the main job's evaluation seeds nor its
  held-out ones), full length (200 steps); every cell of a checkpoint on the same episodes.
- ITPO: exact dynamics (``PendulumWorldModel``), one particle, E = 1, gamma 0.99, plain ascent;
  the alphas of one (rule, horizon) run together in one batch (per-episode step sizes).
- Per cell: mean normalised score, the paired gain over the base with its 95% bootstrap
  interval, and the number of collapsed episodes (a return more than 500 below the base's on the
  same episode: the pendulum was not swung up).

Confirmation (``--confirm``; protocol v2 of docs/notes/2026-12-07-pendulum-mechanism-check.md,
fixed before its runs): the main job's pipeline on new training seeds 3 and 4 with the exact arm
under both rules (``--pipeline.itpo_models '[exact, exact_carry]'``), alpha per rule on the
held-out episodes; per rule the 40 paired episode gains pooled, the mean with a 95% bootstrap
interval stratified by seed. The pipeline reuses finished runs, so rerunning only recomputes.

    OMP_NUM_THREADS=2 python -m benchmarks.studies.pendulum_exact [--runs DIR] [--confirm] \\
        [--out NAME]

A cell recorded in benchmarks/results/studies/pendulum_exact.json is not run again; ``--out
NAME`` runs them again into results/studies/NAME.json (the ReBRAC runs under runs/studies/NAME/
unless ``--runs``). Its inputs ship with the package: the embedded Pendulum dataset and the SAC
expert; the confirmation adds the main job's exact arm where ``runs/main_job`` holds it.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO, add_out_arg, load, machine, run_in_process
from lit_itpo.collect.sac import actor_policy_fn, load_behaviour_actor
from lit_itpo.data.minari_io import EMBEDDED, dataset_info, open_dataset
from lit_itpo.data.scores import normalized_score, reference_scores
from lit_itpo.evaluation import run_episodes
from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.modules.policy import load_policy
from lit_itpo.stages import StageSpec, fit_stage
from lit_itpo.stats import bootstrap_ci, stratified_bootstrap_ci
from lit_itpo.world_models.exact import make_exact_model

NAME = "studies/pendulum_exact"
DATASET = "lit_itpo/pendulum/medium-v0"
CONFIG = "conf/pendulum-medium/rebrac.yaml"
EXPERT = REPO / "lit_itpo" / "assets" / "behaviour" / "pendulum-s0" / "expert.pt"
SEEDS = (1, 2)
BUDGETS = (5000, 30000)
EPISODES = [2_000_000 + i for i in range(20)]
ALPHAS = (5e-5, 5e-4, 5e-3, 5e-2, 5e-1)
# (rule, horizon): the paper's rule at H = 5, then one factor changed at a time, then both
VARIANTS = (("carry", 5), ("reset", 5), ("carry", 20), ("reset", 20))
COLLAPSE = 500.0  # return units below the base's on the same episode
EXPERT_MAIN = "expert on the main job's episodes"
MAIN_JOB = REPO / "runs" / "main_job"  # python -m benchmarks.main_job's run


def train(seed: int, steps: int, runs: Path) -> Path:
    spec = StageSpec(
        "fit",
        str(REPO / CONFIG),
        str(runs / f"rebrac-s{seed}-{steps}"),
        DATASET,
        EMBEDDED,
        seed,
        max_steps=steps,
        val_every=5000,
    )
    return fit_stage(spec).checkpoint


def cells_of(ckpt: Path, env_spec: str, ref) -> dict:
    pol = load_policy(ckpt)
    parts = pol.policy_parts()
    wm = make_exact_model("auto", env_spec)
    norm = lambda r: normalized_score(float(r), ref)  # noqa: E731

    def episodes(act, seeds):
        with torch.inference_mode(False), torch.enable_grad():
            return run_episodes(act, env_spec, seeds)["return"].numpy()

    with torch.no_grad():
        base = episodes(pol.act, EPISODES)
    out = {"base": {"score": np.mean([norm(r) for r in base])}, "cells": {}}
    for rule, horizon in VARIANTS:
        cfg = ITPOConfig(
            horizon=horizon, particles=1, inner_steps=1, gamma=0.99,
            reset_every_step=rule == "reset",
        )  # fmt: skip
        engine = ITPOEngine.for_policy(parts, wm, cfg)
        engine.set_step_sizes([a for a in ALPHAS for _ in EPISODES])
        noise = torch.zeros(len(ALPHAS) * len(EPISODES), 1, horizon, 0)
        t0 = time.perf_counter()
        seeds = [s for _ in ALPHAS for s in EPISODES]
        rets = episodes(lambda o, e=engine, z=noise: e.step(o, z), seeds)
        wall = time.perf_counter() - t0
        for i, a in enumerate(ALPHAS):
            r = rets[i * len(EPISODES) : (i + 1) * len(EPISODES)]
            gains = [norm(x) - norm(b) for x, b in zip(r, base, strict=True)]
            lo, hi = bootstrap_ci(gains)
            out["cells"][f"{rule} H{horizon} alpha {a:g}"] = {
                "rule": rule,
                "horizon": horizon,
                "alpha": a,
                "score": float(np.mean([norm(x) for x in r])),
                "gain": float(np.mean(gains)),
                "gain_ci": [float(lo), float(hi)],
                "collapsed": int(np.sum(r < base - COLLAPSE)),
                "wall_s_of_run": round(wall, 1),
            }
    return out


def expert_score(env_spec: str, ref, seeds: list[int] = EPISODES) -> float:
    """The SAC run's best checkpoint (the reference maximum), deterministic, on ``seeds``."""
    fn = actor_policy_fn(load_behaviour_actor(EXPERT)[0], deterministic=True)
    act = lambda obs: torch.as_tensor(fn(obs.numpy()))  # noqa: E731
    rets = run_episodes(act, env_spec, seeds)["return"].numpy()
    return float(np.mean([normalized_score(float(r), ref) for r in rets]))


CONFIRM_SEEDS = (3, 4)
CONFIRM_ARMS = {"exact": "psi reset every step", "exact_carry": "psi carried over"}


def confirm(runs: Path, ref) -> dict:
    """Run (or reuse) the confirmation's pipelines and pool their paired episode gains."""
    gains: dict[str, dict[str, list[float]]] = {a: {} for a in CONFIRM_ARMS}
    per_seed = {}
    for seed in CONFIRM_SEEDS:
        out = Path(runs) / "confirm" / f"s{seed}"
        cmd = [
            sys.executable, "-m", "lit_itpo", "pipeline", "--pipeline.seed", str(seed),
            "--pipeline.itpo_models", "[" + ", ".join(CONFIRM_ARMS) + "]",
            "--pipeline.out_dir", str(out),
        ]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
        res = json.loads((out / "results.json").read_text())
        per_seed[f"s{seed}"] = {"base": res["base"]["normalized_score"]}
        for arm in CONFIRM_ARMS:
            g = episode_gains(out / "itpo" / f"final_{arm}", ref)
            gains[arm][f"s{seed}"] = g
            per_seed[f"s{seed}"][arm] = {"gain": float(np.mean(g)), "alpha": res["alpha"][arm]}
    pooled = {}
    for arm, strata in gains.items():
        lo, hi = stratified_bootstrap_ci(strata)
        every = [x for g in strata.values() for x in g]
        pooled[arm] = {"gain": float(np.mean(every)), "gain_ci": [float(lo), float(hi)]}
        pooled[arm] |= spread(every)
    return {"per_seed": per_seed, "pooled": pooled, "episodes": len(every)}


def episode_gains(final_run: Path, ref) -> list[float]:
    """Per evaluation episode, ITPO's normalised score minus the base's, from an ITPO run's
    ``itpo_episodes.json`` (one world model, one alpha)."""
    ep = json.loads(next(Path(final_run).glob("tb/*/itpo_episodes.json")).read_text())
    (arm,) = ep["itpo"].values()
    return [
        normalized_score(x, ref) - normalized_score(b, ref)
        for x, b in zip(arm["return"], ep["base"], strict=True)
    ]


def spread(gains: list[float]) -> dict:
    """How the paired gains are spread: how many episodes gain, the median, the worst."""
    return {
        "episodes_gaining": int(np.sum(np.array(gains) > 0)),
        "median": float(np.median(gains)),
        "worst": float(np.min(gains)),
    }


def _spread_text(d: dict, n: int) -> str:
    return (
        f"{d['episodes_gaining']} of {n} gain, median {d['median']:+.1f}, worst {d['worst']:+.1f}"
    )


def report(payload: dict) -> str:
    """Per checkpoint: the base, then gain [95% CI] (collapsed episodes) per rule and horizon
    (rows) and alpha (columns)."""
    cells = payload["cells"]
    lines = [
        f"SAC expert (the reference maximum's policy) on these episodes: "
        f"{cells['expert']['score']:.1f}"
        + (
            f"; on the main job's evaluation episodes: {cells[EXPERT_MAIN]['score']:.1f}"
            if EXPERT_MAIN in cells
            else ""
        ),
        "",
        "| checkpoint | base | rule, H | " + " | ".join(f"alpha {a:g}" for a in ALPHAS) + " |",
        "| --- | --- | --- | " + "--- | " * len(ALPHAS),
    ]
    for key, c in cells.items():
        if "cells" not in c:
            continue
        seed, steps = key.split()
        for i, (rule, horizon) in enumerate(VARIANTS):
            row = []
            for a in ALPHAS:
                d = c["cells"][f"{rule} H{horizon} alpha {a:g}"]
                lo, hi = d["gain_ci"]
                row.append(f"{d['gain']:+.1f} [{lo:+.1f}, {hi:+.1f}] ({d['collapsed']})")
            head = f"seed {seed[1:]}, {int(steps) // 1000}k updates" if i == 0 else ""
            base = f"{c['base']['score']:.1f}" if i == 0 else ""
            lines.append(f"| {head} | {base} | {rule}, {horizon} | " + " | ".join(row) + " |")
    job = cells.get("main job episodes")
    if job is not None:
        rule = "psi reset every step" if job["reset_every_step"] else "psi carried over"
        lines += [
            "",
            f"The main job's exact arm ({rule}), per episode: mean {job['gain']:+.1f}; "
            + _spread_text(job, job["episodes"])
            + ".",
        ]
    conf = cells.get("confirmation")
    if conf is not None:
        lines += [
            "",
            f"Confirmation (`python -m benchmarks.{NAME.replace('/', '.')} --confirm`; protocol "
            f"v2, training seeds "
            f"{', '.join(conf['per_seed'])}, the main job's pipeline, alpha per rule on its "
            f"held-out episodes; {conf['episodes']} paired episodes pooled, interval stratified "
            "by seed):",
            "",
            "| rule | " + " | ".join(f"{s}: base, gain (alpha)" for s in conf["per_seed"])
            + " | pooled gain [95% CI] | episodes |",
            "| --- | " + "--- | " * len(conf["per_seed"]) + "--- | --- |",
        ]  # fmt: skip
        for arm, rule in CONFIRM_ARMS.items():
            p = conf["pooled"][arm]
            seeds = [
                f"{v['base']:.1f}, {v[arm]['gain']:+.1f} ({v[arm]['alpha']:g})"
                for v in conf["per_seed"].values()
            ]
            lines.append(
                f"| {rule} | " + " | ".join(seeds)
                + f" | {p['gain']:+.1f} [{p['gain_ci'][0]:+.1f}, {p['gain_ci'][1]:+.1f}] | "
                + _spread_text(p, conf["episodes"]) + " |"
            )  # fmt: skip
    return "\n".join(lines)


@functools.cache
def reference() -> tuple[str, object]:
    """``(env spec, reference scores)`` of the Pendulum dataset (embedded: always here)."""
    info = dataset_info(open_dataset(DATASET, EMBEDDED), DATASET)
    return info.env_spec, reference_scores(info.env_id, info.ref_min_score, info.ref_max_score)


def main_job_episodes() -> dict:
    """The main job's exact arm (``python -m benchmarks.main_job``'s run) per episode."""
    env_spec, ref = reference()
    rule = json.loads((MAIN_JOB / "results.json").read_text())
    gains = episode_gains(MAIN_JOB / "itpo" / "final_exact", ref)
    rec = spread(gains) | {"gain": float(np.mean(gains)), "episodes": len(gains)}
    return rec | {"reset_every_step": rule["config"]["reset_every_step"]}


def checkpoint_cells(seed: int, steps: int, runs: Path) -> dict:
    """One training seed and budget: its checkpoint trained (or reused), then every cell."""
    env_spec, ref = reference()
    res = cells_of(train(seed, steps, runs), env_spec, ref)
    print(f"seed {seed}, {steps} updates: base {res['base']['score']:.1f}", flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=None, help="ReBRAC runs (default runs/<out>)")
    ap.add_argument("--confirm", action="store_true", help="the confirmation on seeds 3-4")
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    runs = args.runs or REPO / "runs" / args.out
    main_eps = [1_000_000 + i for i in range(20)]  # the main job's evaluation episodes
    expert_main = (EXPERT_MAIN, lambda: {"score": expert_score(*reference(), main_eps)})
    if args.confirm:
        cells = [("confirmation", lambda: confirm(runs, reference()[1])), expert_main]
        job = "main job episodes"  # where this machine has the main job's run, or recorded
        if (MAIN_JOB / "itpo" / "final_exact").is_dir() or job in load(args.out)["cells"]:
            cells.append((job, main_job_episodes))
        run_in_process(args.out, cells, {})
        print(report(load(args.out)))
        return
    meta = {
        "machine": machine(),
        "command": "python -m benchmarks.studies.pendulum_exact"
        + (f" --out {args.out}" if args.out != NAME else ""),
        "episodes": f"env seeds {EPISODES[0]}..{EPISODES[-1]}",
    }
    cells = [("expert", lambda: {"score": expert_score(*reference())}), expert_main]
    cells += [
        (f"s{seed} {steps}", lambda seed=seed, steps=steps: checkpoint_cells(seed, steps, runs))
        for seed in SEEDS
        for steps in BUDGETS
    ]
    run_in_process(args.out, cells, meta)
    print(report(load(args.out)))


if __name__ == "__main__":
    main()
