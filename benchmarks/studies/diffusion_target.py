"""The diffusion world model's denoiser target, eps vs v: accuracy and the noisiest reverse step.

    python -m benchmarks.studies.diffusion_target --dataset halfcheetah-medium [--steps 5000] \\
        [--out NAME]

For each target, stage 1 is trained as its shipped config (``conf/<dataset>/world_model.yaml``,
through LightningCLI, same seed, data and budget ``--steps``), then scored on the held-out
transitions at K = 1, 2 and 5 respaced sampling steps: one-step state RMSE in raw env units and
per-dimension normalised units (the stage's own metric code), reward RMSE, and the share of the
noisiest step's x0 estimate that the +-clip_x0 clip cuts (an eps model divides by
sqrt(alpha_bar) ~ 0.0025 there; clipped entries carry no signal and no gradient).
Adds one cell per dataset to benchmarks/results/studies/diffusion_target.json, with the config
it trained on by content; a recorded cell is not run again (``--out NAME`` runs it again into
results/studies/NAME.json, naming the config values changed since). A missing dataset stops the
run before it trains, naming the ``lit-itpo collect`` command that makes it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import torch
import yaml

from benchmarks.common import REPO, add_out_arg, require_dataset, run_in_process
from lit_itpo.lightning_cli import lightning_main
from lit_itpo.world_models.metrics import one_step_errors

NAME = "studies/diffusion_target"


def first_step_clip_fraction(tr, data, seed: int = 0) -> float:
    """Share of the noisiest step's x0-estimate entries beyond the clip."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(data.shape[0], tr.obs_dim, generator=g)
    clip, tr.clip_x0 = tr.clip_x0, None
    try:
        with torch.no_grad():
            x0 = tr.x0_estimate(x, tr.steps - 1, tr.cond(data["observation"], data["action"]))
    finally:
        tr.clip_x0 = clip
    return (x0.abs() > clip).float().mean().item()


def train(dataset: str, prediction: str, steps: int):
    args = [  # run=False: LightningCLI takes no subcommand, only the config
        "--config",
        str(REPO / config(dataset)),
        "--model.init_args.prediction",
        prediction,
        "--trainer.max_steps",
        str(steps),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    t0 = time.perf_counter()
    cli = lightning_main(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.model.world_model.eval(), cli.datamodule, time.perf_counter() - t0


def measure(args) -> dict:
    """One dataset's cell: each target trained, then scored at every K."""
    rows = []
    for prediction in ("eps", "v"):
        wm, dm, wall = train(args.dataset, prediction, args.steps)
        tr, val = wm.transition, dm.val_data
        for k in (int(x) for x in args.ks.split(",")):
            tr.set_sample_steps(k)
            err = one_step_errors(wm, val)
            row = {
                "prediction": prediction,
                "K": k,
                "variance": tr.variance,
                "state_rmse_raw": err["state"].mean().sqrt().item(),
                "state_rmse_normalised": err["state_normalised"].mean().sqrt().item(),
                "reward_rmse": err["reward"].mean().sqrt().item(),
                "first_step_clip_fraction": first_step_clip_fraction(tr, val),
                "train_wall_s": round(wall, 1),
            }
            rows.append(row)
            print(row, flush=True)
    return {
        "dataset_id": dm.hparams.dataset_id,
        "steps": args.steps,
        "val_transitions": int(val.shape[0]),
        "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
        "rows": rows,
    }


def config(dataset: str) -> str:
    """The stage-1 config the study trains on (relative to the repository)."""
    return f"conf/{dataset}/world_model.yaml"


def require_data(dataset: str) -> None:
    """Stop, one line, where the dataset the config trains on is missing, naming the command
    that makes it."""
    data = yaml.safe_load((REPO / config(dataset)).read_text()).get("data", {})
    data = data.get("init_args", data)
    require_dataset("diffusion_target", data["dataset_id"], data.get("data_dir"))


def main(argv: Sequence[str] | None = None) -> None:
    folders = sorted(p.parent.name for p in (REPO / "conf").glob("*/world_model.yaml"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True, choices=folders, help="a conf/<dataset>/ folder")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--ks", default="1,2,5")
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    command = (
        "python -m benchmarks.studies.diffusion_target --dataset <conf/ folder> "
        f"--steps {args.steps}"
    )
    run_in_process(
        args.out,
        [(args.dataset, lambda: measure(args))],
        {"command": command},
        configs=[config(args.dataset)],
        check=lambda _: require_data(args.dataset),
    )


def report(payload: dict) -> str:
    """Markdown: per dataset and target, the errors at each K and the clip share."""
    lines = [
        "| dataset | budget | target | K | one-step state RMSE, raw units | normalised units | "
        "reward RMSE | noisiest step: x0 entries clipped | machine, date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ds, run in payload["cells"].items():
        m = run["machine"]
        where = f"{m['cpu']}, {run['threads']} thread(s), fp32, {m['date'][:10]}"
        for r in run["rows"]:
            lines.append(
                f"| {ds} | {run['steps']} | {r['prediction']} | {r['K']} | "
                f"{r['state_rmse_raw']:.3f} | {r['state_rmse_normalised']:.3f} | "
                f"{r['reward_rmse']:.3f} | {100 * r['first_step_clip_fraction']:.1f}% | {where} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
