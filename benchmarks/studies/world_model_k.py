"""Superseded in part by diffusion_target (measured with the eps target; v is the default).

Accuracy vs cost of the diffusion world model's sampling steps K (one trained model,
respaced sampling), on a dataset's held-out episodes.

    lit-itpo fit --config conf/halfcheetah-medium/world_model.yaml      # trains with K = 20
    python -m benchmarks.studies.world_model_k --ckpt <that checkpoint> \
        --dataset_id lit_itpo/halfcheetah/medium-v0 [--data_dir DIR]

For each reverse variance (DDPM's "beta" and "beta_tilde") and K: one-step state RMSE and
reward RMSE (raw units) on the held-out transitions, the H = 5 open-loop RMSE with the real
actions (both from ``lit_itpo.world_models.metrics``, as the training modules log them), and
ms per ITPO-sized rollout (M = 64, H = 5, forward + backward to a 3 x 256 policy).
Writes benchmarks/results/world_model_k.json.
"""

from __future__ import annotations

import argparse
from functools import partial

from benchmarks.common import machine, save, timeit
from benchmarks.world_model_speed import rollout_step
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.modules.world_model import load_world_model
from lit_itpo.nets import TanhActor
from lit_itpo.world_models.metrics import one_step_errors, open_loop_rmse, open_loop_windows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--dataset_id", required=True)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--ks", default="1,2,5,10,20")
    args = ap.parse_args()
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
    out = save(
        "studies/world_model_k",
        {
            "machine": machine(),
            "dataset_id": args.dataset_id,
            "ckpt": str(args.ckpt),
            "val_transitions": int(dm.val_data.shape[0]),
            "rows": rows,
            "command": f"python -m benchmarks.studies.world_model_k --ckpt {args.ckpt} "
            f"--dataset_id {args.dataset_id}",
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
