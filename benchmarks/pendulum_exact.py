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

    OMP_NUM_THREADS=2 python -m benchmarks.pendulum_exact [--runs DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO, load, machine, record
from lit_itpo.collect.sac import actor_policy_fn, load_behaviour_actor
from lit_itpo.data.minari_io import EMBEDDED, dataset_info, open_dataset
from lit_itpo.data.scores import normalized_score, reference_scores
from lit_itpo.evaluation import run_episodes
from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.modules.policy import load_policy
from lit_itpo.stages import StageSpec, fit_stage
from lit_itpo.stats import bootstrap_ci
from lit_itpo.world_models.exact import make_exact_model

NAME = "pendulum_exact"
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
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / NAME, help="ReBRAC runs")
    args = ap.parse_args(argv)
    info = dataset_info(open_dataset(DATASET, EMBEDDED), DATASET)
    ref = reference_scores(info.env_id, info.ref_min_score, info.ref_max_score)
    meta = {
        "machine": machine(),
        "command": f"python -m benchmarks.{NAME}",
        "episodes": f"env seeds {EPISODES[0]}..{EPISODES[-1]}",
    }
    record(NAME, "expert", {"score": expert_score(info.env_spec, ref)}, meta)
    main_job = [1_000_000 + i for i in range(20)]  # the main job's evaluation episodes
    score = expert_score(info.env_spec, ref, main_job)
    record(NAME, EXPERT_MAIN, {"score": score}, meta)
    for seed in SEEDS:
        for steps in BUDGETS:
            ckpt = train(seed, steps, args.runs)
            res = cells_of(ckpt, info.env_spec, ref)
            record(NAME, f"s{seed} {steps}", res, meta)
            print(f"seed {seed}, {steps} updates: base {res['base']['score']:.1f}", flush=True)
    print(report(load(NAME)))


if __name__ == "__main__":
    main()
