"""ITPO's imagined rollout in bfloat16 (``itpo.precision: bf16-mixed``) against float32, on
trained checkpoints and real states: the cost of an env step and whether the action moves as
float32's does.

    python -m benchmarks.studies.itpo_precision --policy P.ckpt --world-model WM.ckpt \\
        [--meanflow MF.ckpt] --dataset_id lit_itpo/hopper/medium-v0 [--states 40] [--out NAME]

For each world model, on ``--states`` held-out real states batched as episodes (M particles,
H 5, E 1):

- ms per ITPO env step for 10 episodes batched (the evaluation's shape), float32 and bf16;
- at each alpha of the paper's grid, the move of the action off the base action with the
  rollout in bf16 against float32's on the same noise: cosine, and the distance over float32's
  own Monte-Carlo error (how far float32's move shifts with another draw of the M noise
  sequences), and over float32's move itself. The tolerance tests/test_itpo.py checks: cosine
  >= 0.98, and the distance under half the Monte-Carlo error or within 10% of the move;
  reported as the share of states within it.

Appends one record per run (dataset, checkpoints, M) to
benchmarks/results/studies/itpo_precision.json; a recorded one is not measured again (``--out
NAME`` measures it again into results/studies/NAME.json). A missing dataset or checkpoint stops
the run before it starts, naming the ``lit-itpo`` command that makes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from benchmarks.common import (
    add_checkpoint_args,
    add_out_arg,
    checkpoint_key,
    load_checkpoints,
    require_checkpoint_args,
    run_in_process,
    timeit,
)
from lit_itpo.itpo import ITPOConfig, ITPOEngine

NAME = "studies/itpo_precision"
ALPHAS = (5e-7, 5e-6, 5e-5, 5e-4)
PRECISIONS = ("32-true", "bf16-mixed")


def agreement(policy, wm, obs: torch.Tensor, cfg: ITPOConfig, seed: int) -> dict:
    """Per alpha: cosine of the bf16 move with float32's, and their distance over float32's
    Monte-Carlo error (medians and the share of states within the tolerance)."""
    noise, other = (
        wm.sample_noise(obs.shape[0], cfg.particles, cfg.horizon, torch.Generator().manual_seed(s))
        for s in (seed, seed + 1)
    )
    with torch.no_grad():
        base = policy.actor(obs)

    def move(alpha: float, precision: str, eps: torch.Tensor) -> torch.Tensor:
        c = ITPOConfig(**{**vars(cfg), "lr": alpha, "precision": precision})
        return ITPOEngine.for_policy(policy, wm, c).step(obs, eps) - base

    out = {}
    for alpha in ALPHAS:
        m32, m16 = move(alpha, "32-true", noise), move(alpha, "bf16-mixed", noise)
        mc = (move(alpha, "32-true", other) - m32).norm(dim=-1)
        cos = torch.nn.functional.cosine_similarity(m16, m32, dim=-1)
        err = (m16 - m32).norm(dim=-1)
        ratio = err / mc.clamp_min(1e-30)
        rel = err / m32.norm(dim=-1).clamp_min(1e-30)
        within = (cos >= 0.98) & ((ratio < 0.5) | (rel <= 0.1))
        out[f"{alpha:g}"] = {
            "cosine_median": float(cos.median()),
            "cosine_min": float(cos.min()),
            "error_over_mc_median": float(ratio.median()),
            "error_over_mc_max": float(ratio.max()),
            "relative_error_median": float(rel.median()),
            "relative_error_max": float(rel.max()),
            "within_tolerance": float(within.float().mean()),
            "moved": float((m16.norm(dim=-1) > 0).float().mean()),
            "move_norm_median": float(m32.norm(dim=-1).median()),
        }
    return out


def step_ms(policy, wm, obs: torch.Tensor, cfg: ITPOConfig, precision: str) -> float:
    """Median ms of one ITPO env step for ``obs``'s episodes at ``precision``."""
    c = ITPOConfig(**{**vars(cfg), "lr": 5e-5, "precision": precision})
    engine = ITPOEngine.for_policy(policy, wm, c)
    gen = torch.Generator().manual_seed(0)
    return 1e3 * timeit(lambda: engine.step(obs, generator=gen), min_time=3.0)


def cell(args) -> dict:
    """One run's record: per world model the step cost in each precision and the agreement."""
    t0 = time.perf_counter()
    _, policy, models, obs = load_checkpoints(args)
    policy = policy.policy_parts()
    cfg = ITPOConfig(particles=args.particles)
    obs = obs.float()
    rows = {}
    for name, wm in models.items():
        ms = {p: step_ms(policy, wm, obs[:10], cfg, p) for p in PRECISIONS}
        rows[name] = {"ms_per_step": ms} | {"alphas": agreement(policy, wm, obs, cfg, args.seed)}
        print(name, rows[name], flush=True)
    return {
        "dataset_id": args.dataset_id,
        "checkpoints": {"policy": args.policy, "world_model": args.world_model}
        | {"meanflow": args.meanflow},
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    add_checkpoint_args(ap, states=40)
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    key = f"{checkpoint_key(args)}|M{args.particles}"
    command = (
        "python -m benchmarks.studies.itpo_precision --policy <policy.ckpt> --world-model "
        "<world_model.ckpt> --meanflow <meanflow.ckpt> --dataset_id <id>"
    )
    run_in_process(
        args.out,
        [(key, lambda: cell(args))],
        {"command": command},
        check=lambda _: require_checkpoint_args("itpo_precision", args),
    )


def report(payload: dict) -> str:
    """Markdown: per run and world model, the step cost in each precision and, per alpha, how
    the bf16 move compares with float32's."""
    lines = [
        "| dataset | world model | states | ms / env step, float32 -> bf16 (10 episodes) | "
        "alpha | cosine, median (min) | distance / float32's move, median (max) | "
        "distance / float32's MC error, median (max) | states within tolerance |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        st = c["settings"]
        for name, r in c["rows"].items():
            ms = r["ms_per_step"]
            cost = f"{ms['32-true']:.0f} -> {ms['bf16-mixed']:.0f}"
            model = f"diffusion (K = {st['sample_steps']})" if name == "diffusion" else name
            for i, (alpha, a) in enumerate(r["alphas"].items()):
                lines.append(
                    f"| {c['dataset_id'] if i == 0 else ''} | {model if i == 0 else ''} | "
                    f"{st['states'] if i == 0 else ''} | {cost if i == 0 else ''} | {alpha} | "
                    f"{a['cosine_median']:.3f} ({a['cosine_min']:.3f}) | "
                    f"{a['relative_error_median']:.3f} ({a['relative_error_max']:.2f}) | "
                    f"{a['error_over_mc_median']:.2f} ({a['error_over_mc_max']:.2f}) | "
                    f"{100 * a['within_tolerance']:.0f}% |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
