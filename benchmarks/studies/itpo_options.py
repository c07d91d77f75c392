"""ITPO options beyond the paper, measured: each is one ``lit-itpo validate`` of the ITPO
callback on the same policy, world models and episode seeds (base policy, diffusion-ITPO and
MeanFlow-ITPO), so the rows differ only in the option. Each cell is that command (run here or
on SLURM: ``--executor``, see ``benchmarks.cells``); each finished cell goes to
benchmarks/results/itpo_options.json at once, and a rerun runs only the missing ones.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.itpo_options --run runs/pipeline/embedded \\
        [--alpha 5e-5] [--episodes 5] [--max-steps 200]
    python -m benchmarks.studies.itpo_options --report

``--run`` is a finished ``lit-itpo pipeline`` output directory (the policy, world-model and
MeanFlow checkpoints its ``results.json`` names; the embedded dataset unless ``--dataset_id``).
Each cell also keeps every episode's return (the callback's ``itpo_episodes.json``), so each
option is compared with the paper's rule episode by episode (paired, 95% bootstrap interval).
A recorded cell is not run again; ``--out NAME`` (a bare NAME under results/studies/) runs the
options again into results/studies/NAME.json, their runs under runs/studies/NAME/. A missing
dataset, ``--run`` or checkpoint stops the run before it starts, naming the ``lit-itpo
pipeline`` command that makes it.

The hopper-medium study (carry-over vs reset vs proximity, and the guards against hurting: the
acceptance test and termination-aware imagination), its protocol fixed before its runs: the
pipeline run ``lit-itpo pipeline --pipeline.dataset_id lit_itpo/hopper/medium-v0
--pipeline.out_dir runs/pipeline/hopper-medium-s0 --pipeline.max_episode_steps null`` (seed 0,
the pipeline's default budgets), every option below at alpha 5e-5 on the same 10 full-length
episodes (seeds 1000000 + i), with the MeanFlow world model (the diffusion model's ITPO steps
cost ~5x more CPU time: not affordable for every option here), each cell run once:

    OMP_NUM_THREADS=1 python -m benchmarks.studies.itpo_options --out itpo_options_hopper \\
        --run runs/pipeline/hopper-medium-s0 --dataset_id lit_itpo/hopper/medium-v0 \\
        --data_dir null --episodes 10 --max-steps 0 --models meanflow
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.cells import Cell, add_executor_args, run_cells
from benchmarks.common import (
    REPO,
    add_out_arg,
    checkpoint_run,
    load,
    recorded_line,
    require,
    require_checkpoints,
    require_dataset,
    scalars,
)
from lit_itpo.stats import bootstrap_ci

NAME = "studies/itpo_options"
OPTIONS = {
    "paper (sgd, psi carried over)": [],
    "reset every step": ["itpo.reset_every_step", "true"],
    "adam": ["itpo.optimizer", "adam"],
    "proximity 1e3": ["itpo.proximity", "1000.0"],
    "uncertainty penalty 1.0": ["itpo.uncertainty_penalty", "1.0"],
    "acceptance test z 1": ["itpo.accept_z", "1.0"],
    "termination rule": ["itpo.termination", "rule"],  # envs that terminate (Hopper, Walker2d)
}
PAPER = "paper (sgd, psi carried over)"
MODELS = ("diffusion", "meanflow")


def checkpoints(args) -> dict[str, str]:
    """The policy, world-model and MeanFlow checkpoints: ``--run``'s ``results.json``, each
    replaced by ``--policy`` / ``--world-model`` / ``--meanflow`` where given."""
    given = {"policy": args.policy, "world_model": args.world_model, "meanflow": args.meanflow}
    if all(given.values()):
        return given
    ckpts = json.loads((Path(args.run) / "results.json").read_text())["checkpoints"]
    return ckpts | {k: v for k, v in given.items() if v}


def require_inputs(args) -> None:
    """Stop, one line, where the dataset, ``--run`` (where a checkpoint is not given) or a
    checkpoint the cells read is missing, naming the command that makes it."""
    who = "itpo_options"
    require_dataset(who, args.dataset_id, None if args.data_dir == "null" else args.data_dir)
    out, command = checkpoint_run(args.dataset_id)
    if not all((args.policy, args.world_model, args.meanflow)):
        require(who, "--run", f"{args.run}/results.json", f"{command} (then pass --run {out})")
    ckpts = checkpoints(args)
    read = {"policy": True, "world_model": "diffusion" in args.models}
    read["meanflow"] = "meanflow" in args.models
    flags = {f"--{k.replace('_', '-')}": ckpts[k] for k, used in read.items() if used}
    require_checkpoints(who, args.dataset_id, flags)


def make_cell(option: str, args) -> Cell:
    """The ``lit-itpo validate`` command of the ITPO callback with ``option`` set."""
    ckpts = checkpoints(args)
    slug = option.split(" (")[0].replace(" ", "_")
    run_dir = REPO / "runs" / args.out / slug
    cb = "--trainer.callbacks.init_args."
    argv = [
        "validate",
        "--config", "conf/embedded/itpo.yaml",
        "--data.dataset_id", args.dataset_id,
        "--data.data_dir", args.data_dir,
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        *([f"{cb}world_model_ckpt", ckpts["world_model"]] if "diffusion" in args.models else []),
        *([f"{cb}meanflow_ckpt", ckpts["meanflow"]] if "meanflow" in args.models else []),
        f"{cb}itpo.lr", str(args.alpha),
        f"{cb}num_episodes", str(args.episodes),
        f"{cb}max_episode_steps", str(args.max_steps or "null"),
        f"{cb}sample_steps", "5",
        f"{cb}sample_variance", "beta_tilde",
        "--ckpt_path", ckpts["policy"],
    ]  # fmt: skip
    opt = OPTIONS[option]
    if opt:
        argv += [f"{cb}{opt[0]}", opt[1]]
    return Cell(option, tuple(argv), run_dir)


def summarise(cell: Cell, done: dict, args) -> dict:
    """A finished cell's record: base and ITPO returns, ms per step and imagined gain."""
    last = lambda tag: (scalars(cell.run_dir, tag) or [(0, None)])[-1][1]  # noqa: E731
    out = {"option": cell.key, "alpha": args.alpha, "episodes": args.episodes}
    out["wall_s"] = done["wall_s"]
    out["base_return"] = last("eval/return_mean")
    for m in args.models:
        out[f"{m}_return"] = last(f"itpo/{m}/return_mean")
        out[f"{m}_ms_per_step"] = last(f"time/itpo_{m}_ms_per_step")
        out[f"{m}_objective_gain"] = (last(f"itpo/{m}/objective_after") or 0.0) - (
            last(f"itpo/{m}/objective_before") or 0.0
        )
    found = sorted(Path(cell.run_dir).glob("tb/*/itpo_episodes.json"))
    if found:  # every episode's return: the paired comparisons of the report
        eps = json.loads(found[-1].read_text())
        out["episode_returns"] = {"base": eps["base"]} | {
            m: eps["itpo"][m]["return"] for m in args.models if m in eps["itpo"]
        }
    out["command"] = cell.command
    out["summary"] = f"base {out['base_return']:.1f}, " + ", ".join(
        f"{m} {out[f'{m}_return']:.1f}" for m in args.models
    )
    return out


def _paired(c: dict, ref: dict | None, m: str) -> str:
    """Mean per-episode return difference to the paper's rule, with its 95% interval."""
    if ref is None or "episode_returns" not in c or c is ref:
        return ""
    d = np.subtract(c["episode_returns"][m], ref["episode_returns"][m])
    lo, hi = bootstrap_ci(d)
    return f"; vs paper {d.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]"


def report(payload: dict) -> str:
    cells = payload["cells"]
    ref = next((c for c in cells.values() if c["option"] == PAPER), None)
    lines = [
        "| option | base return | ITPO diffusion: return, ms/step, imagined gain | "
        "ITPO MeanFlow: return, ms/step, imagined gain |",
        "| --- | --- | --- | --- |",
    ]
    for c in cells.values():
        cols = [
            f"{c[f'{m}_return']:.1f}, {c[f'{m}_ms_per_step']:.0f}, {c[f'{m}_objective_gain']:+.3f}"
            + _paired(c, ref, m)
            if f"{m}_return" in c
            else "not run"
            for m in MODELS
        ]
        lines.append(f"| {c['option']} | {c['base_return']:.1f} | {cols[0]} | {cols[1]} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", default="runs/pipeline/embedded")
    p.add_argument("--policy", default=None, help="a policy checkpoint (instead of --run's)")
    p.add_argument("--world-model", default=None, help="a stage-1 checkpoint (ditto)")
    p.add_argument("--meanflow", default=None, help="a stage-3 checkpoint (ditto)")
    p.add_argument("--dataset_id", default="lit_itpo/halfcheetah/medium-small-v0")
    p.add_argument("--data_dir", default="embedded")
    p.add_argument("--alpha", type=float, default=5e-5)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=200, help="0: the env's own limit")
    add_out_arg(p, NAME)
    p.add_argument("--options", nargs="*", default=None, help="a subset of the options")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--report", action="store_true")
    add_executor_args(p)
    args = p.parse_args(argv)
    options = args.options or list(OPTIONS)
    recorded = load(args.out)["cells"]
    if args.report or all(o in recorded for o in options):  # nothing to run: no input read
        if not args.report:
            print(recorded_line(args.out, len(options), len(options)))
        print(report(load(args.out)))
        return
    require_inputs(args)
    meta = {
        "command": f"python -m benchmarks.studies.itpo_options --out {args.out} "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in checkpoints(args).items())
        + " "
        f"--dataset_id {args.dataset_id} --data_dir {args.data_dir} --alpha {args.alpha} "
        f"--episodes {args.episodes} --max-steps {args.max_steps} --models {' '.join(args.models)}"
    }
    cells = [make_cell(o, args) for o in options]
    print(report(run_cells(args.out, cells, lambda c, d: summarise(c, d, args), meta, args)))


if __name__ == "__main__":
    main()
