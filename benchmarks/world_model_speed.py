"""World-model speed: imagined-rollout throughput (forward + backward to the policy) vs M and K,
a naive per-particle loop for reference, training updates/s, and FLOP/s as a share of the
machine's measured fp32 matmul throughput.

    python -m benchmarks.world_model_speed [--device cpu] [--quick] [--out NAME]

Sizes are the paper's (HalfCheetah: obs 17, action 6; denoiser and reward 3 x 512; policy
3 x 256). Writes benchmarks/results/world_model_speed_<device>.json (``--quick``:
world_model_speed_<device>_quick), once: where that file exists nothing runs, and ``--out NAME``
runs it again into results/NAME.json.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from benchmarks.common import add_out_arg, flops, machine, matmul_peak, run_once, timeit
from lit_itpo.nets import TanhActor
from lit_itpo.world_models import DiffusionTransition, DiffusionWorldModel, RewardModel

OBS, ACT, H = 17, 6, 5


def build(K: int, device: str) -> tuple[DiffusionWorldModel, TanhActor]:
    tr = DiffusionTransition(OBS, ACT, [-1.0] * ACT, [1.0] * ACT, steps=K)
    rw = RewardModel(OBS, ACT, [-1.0] * ACT, [1.0] * ACT)
    wm = DiffusionWorldModel(tr, rw).to(device).eval().requires_grad_(False)
    pi = TanhActor(OBS, ACT, [-1.0] * ACT, [1.0] * ACT, [256, 256, 256]).to(device)
    return wm, pi


def rollout_flops(wm: DiffusionWorldModel, pi: TanhActor, transitions: int) -> float:
    """FLOPs of ``transitions`` imagined steps, forward + backward to the policy parameters."""
    return (
        flops(wm.transition.denoiser, transitions * wm.nfe_per_step, trainable=False)
        + flops(wm.reward_model, transitions, trainable=False)
        + flops(pi, transitions, trainable=True)
    )


def rollout_step(wm, pi, s0, M, noise) -> None:
    """One ITPO-sized step: M particles x H steps, backward to the policy parameters."""
    pi.zero_grad(set_to_none=True)
    wm.rollout(s0, pi, H, M, noise=noise)["next", "reward"].mean().backward()


def naive_step(wm, pi, s0, M, noise) -> None:
    """Naive reference: one particle at a time, M separate graphs."""
    pi.zero_grad(set_to_none=True)
    for m in range(M):
        td = wm.rollout(s0, pi, H, 1, noise=noise[:, m : m + 1])
        (td["next", "reward"].mean() / M).backward()


def update(wm, opt, s, a, s2, r) -> None:
    lt, _ = wm.transition.loss(s, a, s2)
    lr_, _ = wm.reward_model.loss(s, a, r)
    opt.zero_grad(set_to_none=True)
    (lt + lr_).backward()
    opt.step()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer settings (smoke test)")
    add_out_arg(ap, None, "world_model_speed_<device>[_quick]")
    args = ap.parse_args(argv)
    name = args.out or f"world_model_speed_{args.device}" + ("_quick" if args.quick else "")
    run_once(name, lambda: measure(args))


def measure(args) -> dict:
    """The rollout and training rows (the results file)."""
    dev = args.device
    peak = matmul_peak(device=dev)
    Ks = [1, 2] if args.quick else [1, 2, 5, 10, 20]
    Ms = [16] if args.quick else [16, 64, 256]
    rows = []
    for K in Ks:
        wm, pi = build(K, dev)
        for M in Ms:
            s0 = torch.randn(1, OBS, device=dev)
            noise = wm.sample_noise(1, M, H)

            sec = timeit(
                partial(rollout_step, wm, pi, s0, M, noise), min_time=0.5 if args.quick else 2.0
            )
            fl = rollout_flops(wm, pi, M * H)
            row = {
                "K": K,
                "M": M,
                "H": H,
                "ms": sec * 1e3,
                "transitions_per_s": M * H / sec,
                "gflop": fl / 1e9,
                "gflop_per_s": fl / sec / 1e9,
                "share_of_matmul_peak": fl / sec / peak,
            }
            if M == Ms[0]:
                row["naive_ms"] = (
                    timeit(
                        partial(naive_step, wm, pi, s0, M, noise),
                        min_time=0.5 if args.quick else 2.0,
                    )
                    * 1e3
                )
            rows.append(row)
            print(row, flush=True)
    # training throughput at the paper's sizes, batch 256 (plain loop of the module's math)
    train = []
    for K in [10] if args.quick else [10, 20]:
        wm, _ = build(K, dev)
        wm.train().requires_grad_(True)
        opt = torch.optim.Adam(wm.parameters(), lr=3e-4)
        B = 256
        s, a, s2 = (
            torch.randn(B, OBS, device=dev),
            torch.rand(B, ACT, device=dev) * 2 - 1,
            torch.randn(B, OBS, device=dev),
        )
        r = torch.randn(B, 1, device=dev)

        sec = timeit(partial(update, wm, opt, s, a, s2, r), min_time=1.0 if args.quick else 3.0)
        fl = flops(wm.transition.denoiser, B, trainable=True) + flops(
            wm.reward_model, B, trainable=True
        )
        train.append(
            {
                "K": K,
                "batch": B,
                "updates_per_s": 1 / sec,
                "gflop_per_s": fl / sec / 1e9,
                "share_of_matmul_peak": fl / sec / peak,
            }
        )
        print(train[-1], flush=True)
    return {
        "machine": machine(),
        "matmul_peak_gflop_per_s": peak / 1e9,
        "rollout": rows,
        "training": train,
        "command": "python -m benchmarks.world_model_speed --device "
        + dev
        + (" --quick" if args.quick else ""),
    }


if __name__ == "__main__":
    main()
