"""A plain-PyTorch TD3+BC (CORL's single-file math, no TorchRL, no Lightning) on a local
dataset: the reference that tells a wiring problem in ``TD3BCModule`` (TorchRL's ``TD3BCLoss``)
from the algorithm's own behaviour at a given budget. Same data pipeline, normaliser and
evaluation episodes as the module.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.td3bc_reference \\
        [--dataset_id lit_itpo/halfcheetah/medium-v0] [--steps 20000] [--eval-every 5000] \\
        [--out NAME]

Writes benchmarks/results/studies/td3bc_reference.json, once: where that file exists nothing
runs, and ``--out NAME`` runs it again into results/studies/NAME.json. A missing dataset stops
the run before it trains, naming the ``lit-itpo collect`` command that makes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from benchmarks.common import add_out_arg, load, machine, require_dataset, run_once
from benchmarks.corl_reference import corl_td3bc
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.evaluation import run_episodes

NAME = "studies/td3bc_reference"


def measure(args) -> dict:
    """The reference trained for ``--steps`` updates, its score every ``--eval-every``."""
    require_dataset("td3bc_reference", args.dataset_id, args.data_dir)
    torch.manual_seed(args.seed)
    dm = MinariDataModule(args.dataset_id, data_dir=args.data_dir, batch_size=256, val_fraction=0.1)
    dm.setup("fit")
    mean, std = dm.stats["obs_mean"], dm.stats["obs_std"]
    actor, update = corl_td3bc(dm.train_data, mean, std, batch=256, seed=args.seed)

    def act(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return actor((obs - mean) / std)

    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        update(step)
        if step % args.eval_every == 0:
            res = run_episodes(act, dm.env_spec, [1_000_000 + i for i in range(args.episodes)])
            score = sum(dm.normalized_score(float(x)) for x in res["return"]) / args.episodes
            curve.append((step, score))
            print(f"step {step}: normalised {score:.1f} ({time.perf_counter() - t0:.0f} s)")
    return {
        "machine": machine(),
        "dataset_id": args.dataset_id,
        "updates": args.steps,
        "batch": 256,
        "curve": curve,
        "command": "python -m benchmarks.studies.td3bc_reference "
        f"--dataset_id {args.dataset_id} "
        f"--steps {args.steps}",
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset_id", default="lit_itpo/halfcheetah/medium-v0")
    ap.add_argument("--data_dir", default=None, help="Minari root (default: the usual ones)")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--eval-every", type=int, default=5_000)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    run_once(args.out, lambda: measure(args))


if __name__ == "__main__":
    main()


def budget_report(payload: dict) -> str:
    """Markdown: the module's TD3+BC curve (``policy_quality --out td3bc_budget``) beside this
    reference's (CORL's math on the same data), score by updates."""
    ref = dict(load(NAME).get("curve", []))
    lines = ["| updates | TD3BCModule (lit-itpo fit) | CORL's TD3+BC math (td3bc_reference) |",
             "| --- | --- | --- |"]  # fmt: skip
    for c in payload["cells"].values():
        for step, score in c["curve"]:
            step = round(step, -3)  # logged at the 0-based step of the batch: 9999 for 10k
            other = ref.get(step)
            lines.append(f"| {step} | {score:.1f} | {'' if other is None else f'{other:.1f}'} |")
    return "\n".join(lines)
