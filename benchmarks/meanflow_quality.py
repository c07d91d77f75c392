"""MeanFlow vs diffusion world-model accuracy on a local dataset, untilted (eta = 0) and tilted
toward a trained policy: one-step state / reward RMSE on held-out data, H-step open-loop RMSE,
and the one-step state RMSE on the policy's own state-action distribution (real episodes of the
policy). Both models are scored by the same code on the same transitions
(``lit_itpo.world_models.metrics``; the diffusion figures are the ``val/diffusion/*`` metrics).
A resumable queue: each finished cell goes to benchmarks/results/meanflow_quality.json.

    OMP_NUM_THREADS=1 python benchmarks/meanflow_quality.py \\
        --world-model-ckpt <WorldModelModule ckpt> --policy-ckpt <ReBRAC ckpt> \\
        [--dataset halfcheetah-medium] [--steps 4000] [--batch 256]
    python benchmarks/meanflow_quality.py --report
"""

from __future__ import annotations

import argparse

from cellqueue import REPO, drain, load, read_scalars, run_cell

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


def side_by_side(run_dir, tags=TAGS) -> dict:
    """A MeanFlow stage's last logged errors, its own (``meanflow/<tag>``, from ``val/``) and
    the diffusion model's on the same data (``diffusion/<tag>``, from ``val/diffusion/``), and
    the tilt's ``tilt_ess`` / ``tilt_eta``; ``None`` where a tag was not logged."""
    names = {
        f"{model}/{tag}": prefix + tag
        for tag in tags
        for model, prefix in (("meanflow", "val/"), ("diffusion", "val/diffusion/"))
    }
    names |= {"tilt_ess": "train/tilt/ess", "tilt_eta": "train/tilt/eta"}
    series = read_scalars(run_dir, names.values())
    return {key: (series[tag][-1][1] if series[tag] else None) for key, tag in names.items()}


def cell(variant: str, args) -> dict:
    tag = f"{args.dataset}-{variant}-{args.steps}" + (f"-s{args.seed}" if args.seed else "")
    run_dir = REPO / "runs" / "meanflow_quality" / tag
    run_dir.mkdir(parents=True, exist_ok=True)
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
    argv += VARIANTS[variant] + ["--seed_everything", str(args.seed)]
    wall = run_cell(argv, run_dir, run_dir / "log.txt")
    out = {"dataset": args.dataset, "variant": variant, "updates": args.steps, "batch": args.batch}
    out["seed"] = args.seed
    out |= side_by_side(run_dir)
    out["wall_s"] = wall
    out["command"] = "lit-itpo " + " ".join(argv)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="halfcheetah-medium")
    p.add_argument("--world-model-ckpt")
    p.add_argument("--policy-ckpt")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="training seed (seed_everything)")
    p.add_argument("--variants", nargs="+", default=["eta0", "tilted"], choices=list(VARIANTS))
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report(load(NAME)))
        return
    if not (args.world_model_ckpt and args.policy_ckpt):
        p.error("--world-model-ckpt and --policy-ckpt are required (or --report)")
    seed = f"/s{args.seed}" if args.seed else ""  # seed 0's keys predate the option
    cells = [
        (f"{args.dataset}/{v}/{args.steps}{seed}", lambda v=v: cell(v, args)) for v in args.variants
    ]
    meta = {"command": "python benchmarks/meanflow_quality.py " + f"--steps {args.steps}"}
    print(report(drain(NAME, cells, meta)))


if __name__ == "__main__":
    main()
