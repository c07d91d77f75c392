"""ITPO cost study: score gain vs milliseconds per env step across M (particles),
H (horizon) and E (inner steps) for the diffusion and the one-step MeanFlow world model, and the
share of each ITPO step spent in the imagined rollout (forward) vs backpropagation through it.

One factor at a time around the default (M 64, H 5, E 1): M in {16, 64, 256}, H in {1, 3, 5, 10},
E in {1, 2, 4}. Each point runs real evaluation episodes (the dataset's env through TorchRL) with
ITPO and with the base policy on the same seeds; the gain is the mean return difference, the
time is the wall time of the ITPO step per env step. The rollout/backprop split times, on the
same observations and noise, the vmapped objective alone (forward) and its gradient (forward
and backward): backprop = grad - forward.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.cost_study [--run-dir runs/pipeline/embedded]
        [--episodes 5] [--steps 200] [--quick] [--out NAME]
    OMP_NUM_THREADS=1 python -m benchmarks.studies.cost_study --cell halfcheetah-medium/s0
    python -m benchmarks.studies.cost_study --report [--cell ...]

Uses the checkpoints of a ``lit-itpo pipeline`` run (``--run-dir``; the recorded points read
the embedded halfcheetah sample's, made by ``lit-itpo pipeline --pipeline.dataset_id
lit_itpo/halfcheetah/medium-small-v0 --pipeline.out_dir runs/pipeline/embedded``, the command a
missing run's error names), or with ``--cell`` those of a score-suite run on this machine
(``runs/suite/<dataset>-s<seed>``; a policy trained to the suite's budget on a D4RL-style
dataset, so the gain is also given in normalised points). Alpha per world model is the one the
pipeline chose (the paper's grid; 5e-5 where the pipeline kept the base policy). The points
run one after another in this process (they are timings); each finished point is written to
benchmarks/results/studies/cost_study[_<dataset>-s<seed>].json at once, and a rerun measures
the rest: a recorded point is not measured again, and where all are the run loads nothing
(``--out NAME`` measures them again into results/studies/NAME.json).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.common import (
    REPO,
    add_out_arg,
    checkpoint_run,
    load,
    require,
    require_dataset,
    run_in_process,
    timeit,
)
from lit_itpo.itpo import ITPOConfig, ITPOEngine, episode_generators, episode_noise

NAME = "studies/cost_study"
DEFAULT = {"M": 64, "H": 5, "E": 1}
GRID = {"M": [16, 64, 256], "H": [1, 3, 5, 10], "E": [1, 2, 4]}
EMBEDDED_SAMPLE = "lit_itpo/halfcheetah/medium-small-v0"  # the main job's run's dataset


def points() -> list[dict]:
    """The default point and every one-factor change of it, once each."""
    out = [dict(DEFAULT)]
    for k, values in GRID.items():
        out += [DEFAULT | {k: v} for v in values if v != DEFAULT[k]]
    return out


class Setup:
    """The main job's policy and world models on the embedded dataset, loaded once."""

    def __init__(self, run_dir: Path):
        from lit_itpo.data.datamodule import MinariDataModule
        from lit_itpo.modules import load_policy
        from lit_itpo.modules.meanflow import load_meanflow
        from lit_itpo.modules.world_model import load_world_model

        res = json.loads((run_dir / "results.json").read_text())
        self.dm = MinariDataModule(res["dataset_id"], data_dir=res["config"]["data_dir"])
        self.dm.setup()
        ckpts = res["checkpoints"]
        self.policy = load_policy(ckpts["policy"])
        self.world_models = {
            "diffusion": load_world_model(ckpts["world_model"]),
            "meanflow": load_meanflow(ckpts["meanflow"]),
        }
        steps, var = res["config"]["sample_steps"], res["config"]["sample_variance"]
        tr = self.world_models["diffusion"].transition
        tr.set_sample_steps(steps or tr.steps, var)
        self.alpha = {n: a or 5e-5 for n, a in res["alpha"].items()}
        self.run_dir = run_dir

    def episodes(self, act, n: int, steps: int) -> torch.Tensor:
        from lit_itpo.evaluation import run_episodes

        res = run_episodes(
            act,
            self.dm.env_spec,
            [1_000_000 + i for i in range(n)],
            obs_keys=self.dm.info.obs_keys,
            max_episode_steps=steps,
        )
        return res["return"]


def require_run(args) -> None:
    """Stop, one line, where the run the points read (``--run-dir`` or ``--cell``'s) or its
    dataset is missing, naming the command that makes it."""
    found = REPO / args.run_dir / "results.json"
    if args.cell and not found.is_file():
        from benchmarks.studies.score_suite import parse_cell

        ds, seed = parse_cell(args.cell, "cost_study")
        raise SystemExit(
            f"cost_study: --cell {args.cell} needs a finished score-suite run in "
            f"{args.run_dir}; run `python -m benchmarks.studies.score_suite --datasets {ds} "
            f"--seeds "
            f"{seed}` (--rerun for a committed cell) first."
        )
    out, command = checkpoint_run(EMBEDDED_SAMPLE)
    where = f"{args.run_dir}/results.json"
    require("cost_study", "--run-dir", where, f"{command} (then pass --run-dir {out})")
    res = json.loads(found.read_text())
    require_dataset("cost_study", res["dataset_id"], res["config"]["data_dir"])


def measure(setup: Setup, name: str, pt: dict, args, base: torch.Tensor) -> dict:
    wm = setup.world_models[name]
    cfg = ITPOConfig(horizon=pt["H"], particles=pt["M"], inner_steps=pt["E"], lr=setup.alpha[name])
    engine = ITPOEngine.for_policy(setup.policy.policy_parts(), wm, cfg)
    gens = episode_generators([1_000_000 + i for i in range(args.episodes)])  # as ITPOCallback
    spent = {"t": 0.0, "n": 0}

    def act(obs):
        t0 = time.perf_counter()
        noise = episode_noise(wm, gens, cfg.particles, cfg.horizon)
        a = engine.step(obs, noise)
        spent["t"] += time.perf_counter() - t0
        spent["n"] += 1
        return a

    with torch.enable_grad():
        ret = setup.episodes(act, args.episodes, args.steps)
        # rollout (forward) vs backprop: the same observations and noise, timed alone (the
        # loaded networks are frozen and psi is detached, so the forward builds no graph either
        # way: objective's no_grad costs it nothing)
        obs = torch.as_tensor(setup.dm.transitions["observation"][: args.episodes])
        noise = wm.sample_noise(args.episodes, cfg.particles, cfg.horizon, gens[0])
        engine.reset(args.episodes)
        fwd = timeit(lambda: engine.objective(obs, noise), min_time=args.min_time)
        full = timeit(lambda: engine.grad_and_value(obs, noise), min_time=args.min_time)
    gain = ret - base
    ref = setup.dm.ref_scores  # gain in normalised points: 100 * return gain / (max - min)
    scale = 100.0 / (ref[1] - ref[0]) if ref else None
    ms = 1e3 * spent["t"] / max(spent["n"], 1)
    return {
        "world_model": name,
        **pt,
        "alpha": cfg.lr,
        "episodes": args.episodes,
        "steps": args.steps,
        "gain_mean": float(gain.mean()),
        "gain_std": float(gain.std(unbiased=False)),
        "gain_normalized_mean": None if scale is None else scale * float(gain.mean()),
        "gain_normalized_std": None if scale is None else scale * float(gain.std(unbiased=False)),
        "base_return": float(base.mean()),
        "itpo_return": float(ret.mean()),
        "ms_per_env_step": ms,
        "nfe_per_step": wm.nfe_per_step * pt["H"] * pt["E"],
        "ms_rollout_forward": 1e3 * fwd,
        "ms_forward_backward": 1e3 * full,
        "rollout_share": fwd / full,
        "backprop_share": 1 - fwd / full,
        "summary": f"gain {float(gain.mean()):+.1f}, {ms:.0f} ms",
    }


def report(payload: dict) -> str:
    cells = sorted(
        payload["cells"].values(), key=lambda c: (c["world_model"], c["M"], c["H"], c["E"])
    )
    normalised = any(c.get("gain_normalized_mean") is not None for c in cells)
    extra = " gain (normalised points) |" if normalised else ""
    lines = [
        "| world model | alpha | M | H | E | net evals / step | ms / env step | "
        f"gain (return, mean ± std) |{extra} rollout : backprop |",
        "| --- " * (9 + normalised) + "|",
    ]
    for c in cells:
        norm = ""
        if normalised:
            g, sd = c.get("gain_normalized_mean"), c.get("gain_normalized_std")
            norm = " n/a |" if g is None else f" {g:+.2f} ± {sd:.2f} |"
        lines.append(
            f"| {c['world_model']} | {c['alpha']:g} | {c['M']} | {c['H']} | {c['E']} | "
            f"{c['nfe_per_step']} | {c['ms_per_env_step']:.0f} | "
            f"{c['gain_mean']:+.1f} ± {c['gain_std']:.1f} |{norm} "
            f"{100 * c['rollout_share']:.0f}% : {100 * c['backprop_share']:.0f}% |"
        )
    if cells:
        c = cells[0]
        lines.append(
            f"\nBase policy: mean return {c['base_return']:.1f} over {c['episodes']} episodes of "
            f"{c['steps']} steps (the same seeds for every point)."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", default="runs/pipeline/embedded")
    p.add_argument(
        "--cell",
        help="a score-suite cell run on this machine (<dataset>/s<seed>) instead of --run-dir",
    )
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="2 episodes x 20 steps, M 16 only")
    p.add_argument("--report", action="store_true")
    add_out_arg(p, None, f"{NAME}[_<dataset>-s<seed>][_quick]")
    args = p.parse_args(argv)
    name = NAME
    if args.cell:
        from benchmarks.studies.score_suite import parse_cell, run_dir

        ds, seed = parse_cell(args.cell, "cost_study")
        args.run_dir = str(run_dir(ds, seed).relative_to(REPO))
        name = f"{NAME}_{ds}-s{seed}"
    pts = points()
    if args.quick:
        args.episodes, args.steps, args.min_time, name = 2, 20, 0.1, name + "_quick"
        pts = [DEFAULT | {"M": 16}]
    name = args.out or name
    if args.report:
        print(report(load(name)))
        return

    @functools.cache
    def prepared() -> tuple[Setup, torch.Tensor]:
        """The run's policy and world models, and the base policy's returns (loaded and run
        once, where a point is to be measured)."""
        torch.manual_seed(0)
        setup = Setup(REPO / args.run_dir)
        with torch.no_grad():
            return setup, setup.episodes(setup.policy.act, args.episodes, args.steps)

    cells = [
        (
            f"{wm}/M{pt['M']}/H{pt['H']}/E{pt['E']}",
            lambda wm=wm, pt=pt: measure(prepared()[0], wm, pt, args, prepared()[1]),
        )
        for wm in ("meanflow", "diffusion")
        for pt in pts
    ]
    meta = {
        "command": "python -m benchmarks.studies.cost_study "
        + (f"--cell {args.cell}" if args.cell else f"--run-dir {args.run_dir}")
        + f" --episodes {args.episodes} --steps {args.steps}",
        "torch_threads": torch.get_num_threads(),
    }
    payload = run_in_process(name, cells, meta, check=lambda _: require_run(args))
    print(report(payload))


if __name__ == "__main__":
    main()
