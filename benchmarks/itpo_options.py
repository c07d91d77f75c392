"""ITPO options beyond the paper, measured: each is one ``lit-itpo validate`` of the ITPO
callback on the same policy, world models and episode seeds (base policy, diffusion-ITPO and
MeanFlow-ITPO), so the rows differ only in the option. Each cell is that command (run here or
on SLURM: ``--executor``, see ``benchmarks.cells``); each finished cell goes to
benchmarks/results/itpo_options.json at once, and a rerun runs only the missing ones.

    OMP_NUM_THREADS=1 python -m benchmarks.itpo_options --run runs/pipeline/embedded \\
        [--alpha 5e-5] [--episodes 5] [--max-steps 200]
    python -m benchmarks.itpo_options --report

``--run`` is a finished ``lit-itpo pipeline`` output directory (the policy, world-model and
MeanFlow checkpoints its ``results.json`` names; the embedded dataset unless ``--dataset_id``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cells import Cell, add_executor_args, run_cells
from benchmarks.common import REPO, load, scalars

NAME = "itpo_options"
OPTIONS = {
    "paper (sgd, psi carried over)": [],
    "reset every step": ["itpo.reset_every_step", "true"],
    "adam": ["itpo.optimizer", "adam"],
    "proximity 1e3": ["itpo.proximity", "1000.0"],
    "uncertainty penalty 1.0": ["itpo.uncertainty_penalty", "1.0"],
}
MODELS = ("diffusion", "meanflow")


def make_cell(option: str, args) -> Cell:
    """The ``lit-itpo validate`` command of the ITPO callback with ``option`` set."""
    ckpts = json.loads((Path(args.run) / "results.json").read_text())["checkpoints"]
    slug = option.split(" (")[0].replace(" ", "_")
    run_dir = REPO / "runs" / "itpo_options" / slug
    cb = "--trainer.callbacks.init_args."
    argv = [
        "validate",
        "--config", "conf/embedded/itpo.yaml",
        "--data.dataset_id", args.dataset_id,
        "--data.data_dir", args.data_dir,
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        f"{cb}world_model_ckpt", ckpts["world_model"],
        f"{cb}meanflow_ckpt", ckpts["meanflow"],
        f"{cb}itpo.lr", str(args.alpha),
        f"{cb}num_episodes", str(args.episodes),
        f"{cb}max_episode_steps", str(args.max_steps),
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
    for m in MODELS:
        out[f"{m}_return"] = last(f"itpo/{m}/return_mean")
        out[f"{m}_ms_per_step"] = last(f"time/itpo_{m}_ms_per_step")
        out[f"{m}_objective_gain"] = (last(f"itpo/{m}/objective_after") or 0.0) - (
            last(f"itpo/{m}/objective_before") or 0.0
        )
    out["command"] = cell.command
    out["summary"] = (
        f"base {out['base_return']:.1f}, diffusion {out['diffusion_return']:.1f}, "
        f"meanflow {out['meanflow_return']:.1f}"
    )
    return out


def report(payload: dict) -> str:
    lines = [
        "| option | base return | ITPO diffusion: return, ms/step, imagined gain | "
        "ITPO MeanFlow: return, ms/step, imagined gain |",
        "| --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        cols = [
            f"{c[f'{m}_return']:.1f}, {c[f'{m}_ms_per_step']:.0f}, {c[f'{m}_objective_gain']:+.3f}"
            for m in MODELS
        ]
        lines.append(f"| {c['option']} | {c['base_return']:.1f} | {cols[0]} | {cols[1]} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", default="runs/pipeline/embedded")
    p.add_argument("--dataset_id", default="lit_itpo/halfcheetah/medium-small-v0")
    p.add_argument("--data_dir", default="embedded")
    p.add_argument("--alpha", type=float, default=5e-5)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--report", action="store_true")
    add_executor_args(p)
    args = p.parse_args(argv)
    if args.report:
        print(report(load(NAME)))
        return
    meta = {
        "command": f"python -m benchmarks.itpo_options --run {args.run} --alpha {args.alpha} "
        f"--episodes {args.episodes} --max-steps {args.max_steps}"
    }
    cells = [make_cell(o, args) for o in OPTIONS]
    print(report(run_cells(NAME, cells, lambda c, d: summarise(c, d, args), meta, args)))


if __name__ == "__main__":
    main()
