"""ITPO step cost with each world model: ms per env step, network evaluations per step, and
FLOP/s as a share of the machine's measured fp32 matmul throughput, vs M and E (H = 5), for one
episode and for 10 episodes batched (per-episode parameters, vmapped). The world models are the
diffusion DWM at the K chosen on accuracy (5 respaced steps;
benchmarks/studies/world_model_k.py) and
the one-step (and two-step) MeanFlow model, all at the paper's sizes (HalfCheetah: obs 17,
action 6; transition and reward 3 x 512, policy and twin critic 3 x 256). Untrained weights:
cost does not depend on them.

    python -m benchmarks.itpo_speed [--device cpu] [--quick] [--out NAME]

Also MeanFlow training updates/s (the JVP target) beside the diffusion model's.
Writes benchmarks/results/itpo_speed_<device>.json (``--quick``: itpo_speed_<device>_quick), once:
where that file exists nothing runs, and ``--out NAME`` runs it again into results/NAME.json.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import add_out_arg, flops, machine, matmul_peak, run_once, timeit
from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.world_models import (
    DiffusionTransition,
    DiffusionWorldModel,
    MeanFlowTransition,
    MeanFlowWorldModel,
    RewardModel,
)

OBS, ACT, H = 17, 6, 5
LOW, HIGH = [-1.0] * ACT, [1.0] * ACT


def world_model(kind: str, device: str):
    rw = RewardModel(OBS, ACT, LOW, HIGH)
    if kind.startswith("diffusion"):
        tr = DiffusionTransition(OBS, ACT, LOW, HIGH, steps=20, sample_steps=int(kind[-1]))
        wm = DiffusionWorldModel(tr, rw)
    else:
        tr = MeanFlowTransition(OBS, ACT, LOW, HIGH, sample_steps=int(kind[-1]))
        wm = MeanFlowWorldModel(tr, rw)
    return wm.to(device).eval().requires_grad_(False)


def transition_net(wm):
    return wm.transition.denoiser if hasattr(wm.transition, "denoiser") else wm.transition.net


def step_flops(wm, actor, critic, n_env: int, M: int, E: int) -> float:
    """FLOPs of one ITPO env step (common.py's counting rule): E x (rollout forward + backward
    to the policy) + the terminal critic; the final action is negligible."""
    t = n_env * M * H
    per_inner = (
        flops(transition_net(wm), t * wm.nfe_per_step, trainable=False)
        + flops(wm.reward_model, t, trainable=False)
        + flops(actor, t + n_env * M, trainable=True)
        + flops(critic, n_env * M, trainable=False)
    )
    return E * per_inner


def itpo_ms(wm, actor, critic, n_env: int, M: int, E: int, device: str, min_time: float):
    cfg = ITPOConfig(horizon=H, particles=M, inner_steps=E, lr=1e-4)
    engine = ITPOEngine(actor, critic, wm, cfg)
    obs = torch.randn(n_env, OBS, device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def one():
        engine.step(obs, wm.sample_noise(n_env, M, H, gen))

    return timeit(one, min_time=min_time) * 1e3


def train_rate(kind: str, device: str, min_time: float) -> float:
    wm = world_model(kind, device).train().requires_grad_(True)
    opt = torch.optim.Adam(wm.parameters(), lr=3e-4)
    B = 256
    s, a = torch.randn(B, OBS, device=device), torch.rand(B, ACT, device=device) * 2 - 1
    s2, r = torch.randn(B, OBS, device=device), torch.randn(B, 1, device=device)

    def update():
        lt, _ = wm.transition.loss(s, a, s2)
        lr_, _ = wm.reward_model.loss(s, a, r)
        opt.zero_grad(set_to_none=True)
        (lt + lr_).backward()
        opt.step()

    return 1 / timeit(update, min_time=min_time)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    add_out_arg(ap, None, "itpo_speed_<device>[_quick]")
    args = ap.parse_args(argv)
    name = args.out or f"itpo_speed_{args.device}" + ("_quick" if args.quick else "")
    run_once(name, lambda: measure(args))


def measure(args) -> dict:
    """Every row of the table, the cost ratios and the training rates (the results file)."""
    dev, t = args.device, 0.5 if args.quick else 2.0
    torch.manual_seed(0)
    peak = matmul_peak(device=dev)
    actor = TanhActor(OBS, ACT, LOW, HIGH, [256, 256, 256]).to(dev)
    critic = TwinCritic(OBS, ACT, [256, 256, 256]).to(dev).requires_grad_(False)
    kinds = ["diffusion_k5", "meanflow_k1", "meanflow_k2"]
    Ms = [16, 64] if args.quick else [16, 64, 256]
    if dev.startswith("cuda") and not args.quick:
        Ms += [1024, 4096]  # the paper's GPU particle count (GPU timing: M 4096, E 1)
    Es = [1] if args.quick else [1, 5]
    rows = []
    for kind in kinds:
        wm = world_model(kind, dev)
        for E in Es:
            for M in Ms:
                for n_env in (1, 10):
                    if n_env == 10 and M >= 256 and E == 5 and not dev.startswith("cuda"):
                        continue  # ~seconds per step on 2 cores; adds nothing to the picture
                    ms = itpo_ms(wm, actor, critic, n_env, M, E, dev, t)
                    fl = step_flops(wm, actor, critic, n_env, M, E)
                    row = {
                        "world_model": kind,
                        "M": M,
                        "E": E,
                        "H": H,
                        "episodes": n_env,
                        "ms_per_env_step": ms,
                        "nfe_per_step": wm.nfe_per_step * H * E,
                        "gflop_per_s": fl / (ms / 1e3) / 1e9,
                        "share_of_matmul_peak": fl / (ms / 1e3) / peak,
                    }
                    rows.append(row)
                    print(row, flush=True)
    ratio = {}
    for r in rows:
        if r["world_model"] == "meanflow_k1":
            d = next(
                x
                for x in rows
                if x["world_model"] == "diffusion_k5"
                and all(x[k] == r[k] for k in ("M", "E", "episodes"))
            )
            ratio[f"M{r['M']}_E{r['E']}_N{r['episodes']}"] = (
                d["ms_per_env_step"] / r["ms_per_env_step"]
            )
    training = {k: train_rate(k, dev, t) for k in ("diffusion_k5", "meanflow_k1")}
    print("diffusion / meanflow cost ratio", ratio, "training updates/s", training)
    return {
        "machine": machine(),
        "matmul_peak_gflop_per_s": peak / 1e9,
        "rows": rows,
        "diffusion_k5_over_meanflow_k1": ratio,
        "training_updates_per_s_batch256": training,
        "command": f"python -m benchmarks.itpo_speed --device {dev}"
        + (" --quick" if args.quick else ""),
    }


if __name__ == "__main__":
    main()
