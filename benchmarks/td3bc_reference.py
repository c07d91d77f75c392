"""A plain-PyTorch TD3+BC (CORL's single-file math, no TorchRL, no Lightning) on a local
dataset: the reference that tells a wiring problem in ``TD3BCModule`` (TorchRL's ``TD3BCLoss``)
from the algorithm's own behaviour at a given budget. Same data pipeline, normaliser and
evaluation episodes as the module.

    OMP_NUM_THREADS=1 python benchmarks/td3bc_reference.py \\
        [--dataset_id lit_itpo/halfcheetah/medium-v0] [--steps 20000] [--eval-every 5000]

Writes benchmarks/results/td3bc_reference.json.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from common import machine, save
from torch import nn

from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.evaluation import run_episodes


def mlp(i: int, o: int, h: int = 256) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset_id", default="lit_itpo/halfcheetah/medium-v0")
    ap.add_argument("--data_dir", default=None, help="Minari root (default: the usual ones)")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--eval-every", type=int, default=5_000)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    dm = MinariDataModule(args.dataset_id, data_dir=args.data_dir, batch_size=256, val_fraction=0.1)
    dm.setup("fit")
    data = dm.train_data
    mean, std = dm.stats["obs_mean"], dm.stats["obs_std"]
    o, a = dm.obs_dim, dm.action_dim
    actor = nn.Sequential(mlp(o, a), nn.Tanh())
    q1, q2 = mlp(o + a, 1), mlp(o + a, 1)
    actor_t, q1_t, q2_t = (copy.deepcopy(m).requires_grad_(False) for m in (actor, q1, q2))
    opt_a = torch.optim.Adam(actor.parameters(), 3e-4)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], 3e-4)
    gamma, tau, alpha, noise, clip = 0.99, 0.005, 2.5, 0.2, 0.5

    def act(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return actor((obs - mean) / std)

    curve, t0 = [], time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        b = data[torch.randint(0, data.shape[0], (256,), generator=g)]
        s, act_, r = (b["observation"] - mean) / std, b["action"], b["next", "reward"]
        s2, term = (b["next", "observation"] - mean) / std, b["next", "terminated"].float()
        with torch.no_grad():
            eps = (torch.randn_like(act_) * noise).clamp(-clip, clip)
            a2 = (actor_t(s2) + eps).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], -1)
            target = r + gamma * (1 - term) * torch.min(q1_t(sa2), q2_t(sa2))
        sa = torch.cat([s, act_], -1)
        q_loss = F.mse_loss(q1(sa), target) + F.mse_loss(q2(sa), target)
        opt_q.zero_grad()
        q_loss.backward()
        opt_q.step()
        if step % 2 == 0:
            pi = actor(s)
            q = q1(torch.cat([s, pi], -1))
            lmbda = alpha / q.abs().mean().detach()
            a_loss = -lmbda * q.mean() + F.mse_loss(pi, act_)
            opt_a.zero_grad()
            a_loss.backward()
            opt_a.step()
            with torch.no_grad():
                for net, tgt in ((actor, actor_t), (q1, q1_t), (q2, q2_t)):
                    for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                        tp.lerp_(p, tau)
        if step % args.eval_every == 0:
            res = run_episodes(act, dm.env_spec, [1_000_000 + i for i in range(args.episodes)])
            score = sum(dm.normalized_score(float(x)) for x in res["return"]) / args.episodes
            curve.append((step, score))
            print(f"step {step}: normalised {score:.1f} ({time.perf_counter() - t0:.0f} s)")
    out = save(
        "td3bc_reference",
        {
            "machine": machine(),
            "dataset_id": args.dataset_id,
            "updates": args.steps,
            "batch": 256,
            "curve": curve,
            "command": f"python benchmarks/td3bc_reference.py --dataset_id {args.dataset_id} "
            f"--steps {args.steps}",
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
