"""MeanFlow vs diffusion world-model accuracy on a local dataset, untilted (eta = 0) and tilted
toward a trained policy: one-step state / reward RMSE on held-out data, H-step open-loop RMSE,
and the one-step state RMSE on the policy's own state-action distribution (real episodes of the
policy). Both models are scored by the same code on the same transitions
(``lit_itpo.world_models.metrics``; the diffusion figures are the ``val/diffusion/*`` metrics).
Each cell (variant) is one ``lit-itpo fit`` command (``--ckpt_path last``: a stopped cell
continues), run in parallel here or on SLURM (``--executor``, see ``benchmarks.cells``); each
finished cell goes to benchmarks/results/meanflow_quality.json.

    OMP_NUM_THREADS=1 python -m benchmarks.meanflow_quality \\
        --world-model-ckpt <WorldModelModule ckpt> --policy-ckpt <ReBRAC ckpt> \\
        [--dataset halfcheetah-medium] [--steps 4000] [--batch 256] [--out NAME]
    python -m benchmarks.meanflow_quality --report

The two checkpoints: ``lit-itpo pipeline --pipeline.dataset_id <id> --pipeline.out_dir <dir>``
(``benchmarks.common.checkpoint_run``: the command a missing one's error names) leaves them at
``<dir>/world_model/tb/version_0/checkpoints/last.ckpt`` and ``<dir>/policy/...``; the recorded
cells read a 20k-update world model and a 20k x 256 ReBRAC (halfcheetah-medium) or a score-suite
cell's (the others). The dataset: ``lit-itpo collect --config conf/collect/<env>.yaml``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks.cells import Cell, add_executor_args, run_cells
from benchmarks.common import DATASETS, REPO, add_out_arg, load, require_checkpoints, side_by_side

NAME = "meanflow_quality"
TAGS = (
    "state_rmse",
    "reward_rmse",
    "open_loop_rmse_h5",
    "policy_state_rmse",
)


_MIXTURE_TIME = [
    "--model.init_args.time_mean", "0",
    "--model.init_args.time_std", "3",
    "--model.init_args.equal_fraction", "0.5",
]  # fmt: skip
VARIANTS = {
    "eta0": ["--model.init_args.eta", "0"],
    "tilted": [],  # the config's tilt: eta calibrated to ESS 0.5, sigma 0.2, clip 10
    "eta0_adaptive_p1": ["--model.init_args.eta", "0", "--model.init_args.adaptive_p", "1.0"],
    # the settings that reach the 1-D mixture tolerance (tests/test_meanflow.py, slow test):
    # logit-normal(0, 3) times, half the batch r = t, and the network's own velocity u(z, t, t)
    # in the target; the "_time" variant changes only the time sampling, to tell the two apart
    "eta0_mixture_time": ["--model.init_args.eta", "0", *_MIXTURE_TIME],
    "eta0_model_velocity": [
        "--model.init_args.eta",
        "0",
        *_MIXTURE_TIME,
        "--model.init_args.target_velocity",
        "model",
    ],
}


def make_cell(variant: str, args) -> Cell:
    """The ``lit-itpo fit`` command of one MeanFlow variant on the given checkpoints."""
    tag = f"{args.dataset}-{variant}-{args.steps}" + (f"-s{args.seed}" if args.seed else "")
    run_dir = REPO / "runs" / "meanflow_quality" / tag
    argv = [
        "fit",
        "--config", f"conf/{args.dataset}/meanflow.yaml",
        "--trainer.max_steps", str(args.steps),
        "--trainer.val_check_interval", str(args.steps // 2),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        "--data.batch_size", str(args.batch),
        "--model.init_args.policy_ckpt", args.policy_ckpt,
        "--model.init_args.world_model_ckpt", args.world_model_ckpt,
    ]  # fmt: skip
    argv += VARIANTS[variant] + ["--seed_everything", str(args.seed), "--ckpt_path", "last"]
    key = f"{args.dataset}/{variant}/{args.steps}"
    key += f"/s{args.seed}" if args.seed else ""  # seed 0's keys predate the option
    return Cell(key, tuple(argv), run_dir, {"variant": variant})


def summarise(cell: Cell, done: dict, args) -> dict:
    """A finished cell's record: both models' last validation errors from its logs."""
    out = {"dataset": args.dataset, "variant": cell.info["variant"], "updates": args.steps}
    out |= {"batch": args.batch, "seed": args.seed}
    out |= side_by_side(cell.run_dir, TAGS)
    out["wall_s"] = done["wall_s"]
    out["command"] = cell.command
    out["summary"] = (
        f"state {out['meanflow/state_rmse']:.3f} (diffusion {out['diffusion/state_rmse']:.3f}), "
        f"policy-dist {out['meanflow/policy_state_rmse']:.3f} "
        f"(diffusion {out['diffusion/policy_state_rmse']:.3f})"
    )
    return out


def report(payload: dict) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        "| dataset | model | one-step state RMSE | reward RMSE | H=5 open-loop RMSE | "
        "state RMSE on policy's (s, a) | budget |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    datasets = list(dict.fromkeys(c["dataset"] for c in payload["cells"].values()))
    diffusion_done = set()
    for c in sorted(payload["cells"].values(), key=lambda c: datasets.index(c["dataset"])):
        if c["dataset"] not in diffusion_done:
            diffusion_done.add(c["dataset"])
            lines.append(
                f"| {c['dataset']} | diffusion (stage 1 checkpoint) | "
                + " | ".join(f(c[f"diffusion/{t}"]) for t in TAGS)
                + " | stage 1 |"
            )
        label = {
            "eta0": "MeanFlow, eta = 0",
            "eta0_adaptive_p1": "MeanFlow, eta = 0, adaptive weight p = 1",
            "eta0_mixture_time": "MeanFlow, eta = 0, times logit-normal(0, 3), 50% r = t",
            "eta0_model_velocity": (
                "MeanFlow, eta = 0, times logit-normal(0, 3), 50% r = t, target velocity u(z, t, t)"
            ),
        }.get(c["variant"])
        if label is None:
            label = f"MeanFlow, tilted (eta {c['tilt_eta']:.3g}, ESS {c['tilt_ess']:.2f})"
        lines.append(
            f"| {c['dataset']} | {label} | "
            + " | ".join(f(c[f"meanflow/{t}"]) for t in TAGS)
            + f" | {c['updates'] // 1000}k x {c['batch']}"
            + (f", seed {c['seed']}" if c.get("seed") else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="halfcheetah-medium")
    p.add_argument("--world-model-ckpt")
    p.add_argument("--policy-ckpt")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="training seed (seed_everything)")
    p.add_argument("--variants", nargs="+", default=["eta0", "tilted"], choices=list(VARIANTS))
    p.add_argument("--report", action="store_true")
    add_out_arg(p, NAME)
    add_executor_args(p)
    args = p.parse_args(argv)
    if args.report:
        print(report(load(args.out)))
        return
    if not (args.world_model_ckpt and args.policy_ckpt):
        p.error("--world-model-ckpt and --policy-ckpt are required (or --report)")
    cells = [make_cell(v, args) for v in args.variants]
    if any(c.key not in load(args.out)["cells"] for c in cells):  # a cell to run reads them
        given = {"--world-model-ckpt": args.world_model_ckpt, "--policy-ckpt": args.policy_ckpt}
        require_checkpoints(NAME, DATASETS.get(args.dataset, args.dataset), given)
    meta = {"command": "python -m benchmarks.meanflow_quality " + f"--steps {args.steps}"}
    print(report(run_cells(args.out, cells, lambda c, d: summarise(c, d, args), meta, args)))


if __name__ == "__main__":
    main()
