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

from cellqueue import REPO, drain, load, run_cell, scalars

NAME = "meanflow_quality"
TAGS = (
    "state_rmse",
    "reward_rmse",
    "open_loop_rmse_h5",
    "policy_state_rmse",
)


VARIANTS = {
    "eta0": ["--model.init_args.eta", "0"],
    "tilted": [],  # the config's tilt: eta calibrated to ESS 0.5, sigma 0.2, clip 10
    "eta0_adaptive_p1": ["--model.init_args.eta", "0", "--model.init_args.adaptive_p", "1.0"],
}


def cell(variant: str, args) -> dict:
    run_dir = REPO / "runs" / "meanflow_quality" / f"{args.dataset}-{variant}-{args.steps}"
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
    argv += VARIANTS[variant]
    wall = run_cell(argv, run_dir, run_dir / "log.txt")
    out = {"dataset": args.dataset, "variant": variant, "updates": args.steps, "batch": args.batch}
    for tag in TAGS:
        for model, prefix in (("meanflow", "val/"), ("diffusion", "val/diffusion/")):
            pts = scalars(run_dir, prefix + tag)
            out[f"{model}/{tag}"] = pts[-1][1] if pts else None
    ess = scalars(run_dir, "train/tilt/ess")
    eta = scalars(run_dir, "train/tilt/eta")
    out["tilt_ess"] = ess[-1][1] if ess else None
    out["tilt_eta"] = eta[-1][1] if eta else None
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
    diffusion_done = set()
    for c in payload["cells"].values():
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
        }.get(c["variant"])
        if label is None:
            label = f"MeanFlow, tilted (eta {c['tilt_eta']:.3g}, ESS {c['tilt_ess']:.2f})"
        lines.append(
            f"| {c['dataset']} | {label} | "
            + " | ".join(f(c[f"meanflow/{t}"]) for t in TAGS)
            + f" | {c['updates'] // 1000}k x {c['batch']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="halfcheetah-medium")
    p.add_argument("--world-model-ckpt")
    p.add_argument("--policy-ckpt")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--variants", nargs="+", default=["eta0", "tilted"], choices=list(VARIANTS))
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report(load(NAME)))
        return
    if not (args.world_model_ckpt and args.policy_ckpt):
        p.error("--world-model-ckpt and --policy-ckpt are required (or --report)")
    cells = [(f"{args.dataset}/{v}/{args.steps}", lambda v=v: cell(v, args)) for v in args.variants]
    meta = {"command": "python benchmarks/meanflow_quality.py " + f"--steps {args.steps}"}
    print(report(drain(NAME, cells, meta)))


if __name__ == "__main__":
    main()
