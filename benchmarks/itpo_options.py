"""ITPO options beyond the paper, measured: each is one ``lit-itpo validate`` of the ITPO
callback on the same policy, world models and episode seeds (base policy, diffusion-ITPO and
MeanFlow-ITPO), so the rows differ only in the option. A resumable queue: each finished cell
goes to benchmarks/results/itpo_options.json.

    OMP_NUM_THREADS=1 python benchmarks/itpo_options.py --run runs/pipeline/embedded \\
        [--alpha 5e-5] [--episodes 5] [--max-steps 200]
    python benchmarks/itpo_options.py --report

``--run`` is a finished ``lit-itpo pipeline`` output directory (its ``policy.ckpt``,
``world_model.ckpt`` and ``meanflow.ckpt``; the embedded dataset unless ``--dataset_id``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cellqueue import REPO, drain, load, run_cell, scalars

NAME = "itpo_options"
OPTIONS = {
    "paper (sgd, psi carried over)": [],
    "reset every step": ["reset_every_step", "true"],
    "adam": ["optimizer", "adam"],
    "proximity 1e3": ["proximity", "1000.0"],
    "uncertainty penalty 1.0": ["uncertainty_penalty", "1.0"],
}
MODELS = ("diffusion", "meanflow")


def cell(option: str, args) -> dict:
    run = Path(args.run).resolve()
    slug = option.split(" (")[0].replace(" ", "_")
    run_dir = REPO / "runs" / "itpo_options" / slug
    run_dir.mkdir(parents=True, exist_ok=True)
    cb = "--trainer.callbacks.init_args."
    argv = [
        "validate",
        "--config", "conf/embedded/itpo.yaml",
        "--data.dataset_id", args.dataset_id,
        "--data.data_dir", args.data_dir,
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        f"{cb}world_model_ckpt", str(run / "world_model.ckpt"),
        f"{cb}meanflow_ckpt", str(run / "meanflow.ckpt"),
        f"{cb}lr", str(args.alpha),
        f"{cb}num_episodes", str(args.episodes),
        f"{cb}max_episode_steps", str(args.max_steps),
        f"{cb}sample_steps", "5",
        f"{cb}sample_variance", "beta_tilde",
        "--ckpt_path", str(run / "policy.ckpt"),
    ]  # fmt: skip
    opt = OPTIONS[option]
    if opt:
        argv += [f"{cb}{opt[0]}", opt[1]]
    wall = run_cell(argv, run_dir, run_dir / "log.txt")
    last = lambda tag: (scalars(run_dir, tag) or [(0, None)])[-1][1]  # noqa: E731
    out = {"option": option, "alpha": args.alpha, "episodes": args.episodes, "wall_s": wall}
    out["base_return"] = last("eval/return_mean")
    for m in MODELS:
        out[f"{m}_return"] = last(f"itpo/{m}/return_mean")
        out[f"{m}_ms_per_step"] = last(f"time/itpo_{m}_ms_per_step")
        out[f"{m}_objective_gain"] = (last(f"itpo/{m}/objective_after") or 0.0) - (
            last(f"itpo/{m}/objective_before") or 0.0
        )
    out["command"] = "lit-itpo " + " ".join(argv)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", default="runs/pipeline/embedded")
    p.add_argument("--dataset_id", default="lit_itpo/halfcheetah/medium-small-v0")
    p.add_argument("--data_dir", default="embedded")
    p.add_argument("--alpha", type=float, default=5e-5)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report(load(NAME)))
        return
    cells = [(o, lambda o=o: cell(o, args)) for o in OPTIONS]
    meta = {
        "command": f"python benchmarks/itpo_options.py --run {args.run} --alpha {args.alpha} "
        f"--episodes {args.episodes} --max-steps {args.max_steps}"
    }
    print(report(drain(NAME, cells, meta)))


if __name__ == "__main__":
    main()
