"""Accuracy vs cost of the diffusion world model's sampling steps K (one trained model,
respaced sampling), on a dataset's held-out episodes.

    lit-itpo fit --config conf/halfcheetah-medium/world_model.yaml      # trains with K = 20
    python benchmarks/world_model_k.py --ckpt <that checkpoint> \
        --dataset_id lit_itpo/halfcheetah/medium-v0 [--data_dir DIR]

For each reverse variance (DDPM's "beta" and "beta_tilde") and K: one-step state RMSE and
reward RMSE (raw units) on the held-out transitions, the H = 5 open-loop RMSE with the real
actions, and ms per ITPO-sized rollout (M = 64, H = 5, forward + backward to a 3 x 256 policy).
Writes benchmarks/results/world_model_k.json.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from common import machine, save, timeit
from world_model_speed import rollout_step

from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.modules.world_model import load_world_model
from lit_itpo.nets import TanhActor
from lit_itpo.world_models.metrics import open_loop_windows


@torch.no_grad()
def one_step(wm, data, batch: int = 8192, seed: int = 0) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    se_s, se_r, n = 0.0, 0.0, 0
    for part in data.split(batch):
        noise = torch.randn(
            (part.shape[0], wm.transition.steps, part["observation"].shape[-1]), generator=g
        )
        pred = wm.next(part["observation"], part["action"], noise)
        se_s += (pred - part["next", "observation"]).pow(2).mean(-1).sum().item()
        se_r += (
            (wm.reward(part["observation"], part["action"]) - part["next", "reward"])
            .pow(2)
            .sum()
            .item()
        )
        n += part.shape[0]
    return (se_s / n) ** 0.5, (se_r / n) ** 0.5


@torch.no_grad()
def open_loop(wm, episodes, H: int = 5, seed: int = 0) -> float:
    wins = open_loop_windows(episodes, H, 4096)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(
        (wins.shape[0], H, wm.transition.steps, wins["observation"].shape[-1]), generator=g
    )
    s = wins["observation"][:, 0]
    for j in range(H):
        s = wm.next(s, wins["action"][:, j], noise[:, j])
    return (s - wins["next", "observation"][:, -1]).pow(2).mean().sqrt().item()


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
    episodes = dm.val_episodes()
    pi = TanhActor(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, [256, 256, 256])
    s0 = dm.val_data["observation"][:1]
    rows = []
    for variance, k in [(v, int(x)) for v in ("beta", "beta_tilde") for x in args.ks.split(",")]:
        if k > wm.transition.train_steps:
            continue
        wm.transition.set_sample_steps(k, variance)
        rmse_s, rmse_r = one_step(wm, dm.val_data)
        noise = wm.sample_noise(1, 64, 5)

        row = {
            "K": k,
            "variance": variance,
            "state_rmse": rmse_s,
            "reward_rmse": rmse_r,
            "open_loop_rmse_h5": open_loop(wm, episodes),
            "ms_per_rollout_M64_H5": timeit(
                partial(rollout_step, wm, pi, s0, 64, noise), min_time=2.0
            )
            * 1e3,
        }
        rows.append(row)
        print(row, flush=True)
    out = save(
        "world_model_k",
        {
            "machine": machine(),
            "dataset_id": args.dataset_id,
            "ckpt": str(args.ckpt),
            "val_transitions": int(dm.val_data.shape[0]),
            "rows": rows,
            "command": f"python benchmarks/world_model_k.py --ckpt {args.ckpt} "
            f"--dataset_id {args.dataset_id}",
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
