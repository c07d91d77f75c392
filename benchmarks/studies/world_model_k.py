"""Superseded in part by diffusion_target (measured with the eps target; v is the default).

Accuracy vs cost of the diffusion world model's sampling steps K (one trained model,
respaced sampling), on a dataset's held-out episodes.

    lit-itpo fit --config conf/halfcheetah-medium/world_model.yaml      # trains with K = 20
    python -m benchmarks.studies.world_model_k --ckpt <that checkpoint> \
        --dataset_id lit_itpo/halfcheetah/medium-v0 [--data_dir DIR] [--out NAME]

For each reverse variance (DDPM's "beta" and "beta_tilde") and K: one-step state RMSE and
reward RMSE (raw units) on the held-out transitions, the H = 5 open-loop RMSE with the real
actions (both from ``lit_itpo.world_models.metrics``, as the training modules log them), and
ms per ITPO-sized rollout (M = 64, H = 5, forward + backward to a 3 x 256 policy).
Writes benchmarks/results/studies/world_model_k.json, once: where that file exists nothing runs,
and ``--out NAME`` runs it again into results/studies/NAME.json. A missing dataset or checkpoint
(``--ckpt``, also ``--world-model``) stops the run before it starts, naming the command that
makes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial

from benchmarks.common import (
    add_out_arg,
    machine,
    require_checkpoints,
    require_dataset,
    run_once,
    shown_path,
    timeit,
)
from benchmarks.world_model_speed import rollout_step
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.modules.world_model import load_world_model
from lit_itpo.nets import TanhActor
from lit_itpo.world_models.metrics import one_step_errors, open_loop_rmse, open_loop_windows

NAME = "studies/world_model_k"


def measure(args) -> dict:
    """Every (variance, K) row of the checkpoint on the held-out transitions."""
    require_dataset("world_model_k", args.dataset_id, args.data_dir)
    require_checkpoints("world_model_k", args.dataset_id, {"--world-model": args.ckpt})
    dm = MinariDataModule(args.dataset_id, data_dir=args.data_dir)
    dm.setup()
    wm = load_world_model(
        args.ckpt, obs_dim=dm.obs_dim, action_dim=dm.action_dim, dataset_id=args.dataset_id
    )
    windows = open_loop_windows(dm.val_episodes(), 5, 4096)
    pi = TanhActor(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, [256, 256, 256])
    s0 = dm.val_data["observation"][:1]
    rows = []
    for variance, k in [(v, int(x)) for v in ("beta", "beta_tilde") for x in args.ks.split(",")]:
        if k > wm.transition.train_steps:
            continue
        wm.transition.set_sample_steps(k, variance)
        err = one_step_errors(wm, dm.val_data)  # the training modules' own metric code
        noise = wm.sample_noise(1, 64, 5)

        row = {
            "K": k,
            "variance": variance,
            "state_rmse": err["state"].mean().sqrt().item(),
            "reward_rmse": err["reward"].mean().sqrt().item(),
            "open_loop_rmse_h5": open_loop_rmse(wm, windows)[-1].item(),
            "ms_per_rollout_M64_H5": timeit(
                partial(rollout_step, wm, pi, s0, 64, noise), min_time=2.0
            )
            * 1e3,
        }
        rows.append(row)
        print(row, flush=True)
    return {
        "machine": machine(),
        "dataset_id": args.dataset_id,
        "ckpt": shown_path(args.ckpt),
        "val_transitions": int(dm.val_data.shape[0]),
        "rows": rows,
        "command": f"python -m benchmarks.studies.world_model_k --ckpt {args.ckpt} "
        f"--dataset_id {args.dataset_id}",
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", "--world-model", dest="ckpt", required=True)
    ap.add_argument("--dataset_id", required=True)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--ks", default="1,2,5,10,20")
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    run_once(args.out, lambda: measure(args))


if __name__ == "__main__":
    main()
