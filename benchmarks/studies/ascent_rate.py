"""Does an ITPO gradient point uphill in the real world? The "ascent rate" of a world model.

    python -m benchmarks.studies.ascent_rate --policy P.ckpt --world-model WM.ckpt \\
        [--meanflow MF.ckpt] \\
        --dataset_id lit_itpo/halfcheetah/medium-v0 [--states 200] [--particles 64] [--out NAME]

ITPO climbs J_wm(psi), the imagined H-step objective; what matters is J_true(psi), the same
objective with the MuJoCo simulator set to the real state (``lit_itpo.ascent.TrueObjective``,
which every ITPO evaluation also samples as ``itpo/<model>/ascent_rate``). Here, with more
states and probes, for each held-out real state s and each world model:

- g = grad_psi J_wm(psi_0) at s with ITPO's fixed noise (M particles), the step ITPO takes;
- the directional derivative of J_true along g / |g| by central differences (step ``--h`` in
  parameter space, float64 actor and critic, so the simulator adds no noise): **ascent** if > 0;
- the same along ``--directions`` random unit directions d: the sign agreement of the predicted
  slope g . d with the true one (50% = the gradient carries no information about d);
- the predicted slope |g| over the true one along g;
- how far the step moves the action: |d a / d psi . g|, the action change per unit alpha (its
  median over states), which sets what a given alpha does to this policy.

Any policy stage with a critic works (ITPO's view of it, ``policy_parts()``: IQL's actor is its
Tanh-Gaussian's mode).

The ascent rate is the share of states where ITPO's step raises J_true (chance: 50%). Appends
one record per run (dataset, checkpoints, K, M, h, H) to
benchmarks/results/studies/ascent_rate.json; a recorded one is not measured again (``--out
NAME`` measures it again into results/studies/NAME.json). A missing dataset or checkpoint stops
the run before it starts, naming the ``lit-itpo`` command that makes it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, jvp

from benchmarks.common import (
    add_checkpoint_args,
    add_out_arg,
    checkpoint_key,
    load_checkpoints,
    require_checkpoint_args,
    run_in_process,
)
from lit_itpo.ascent import TrueObjective
from lit_itpo.itpo import ITPOConfig, imagined_returns, objective
from lit_itpo.modules.checkpoints import read_hparams

NAME = "studies/ascent_rate"
ALGOS = {"ReBRACModule": "ReBRAC", "TD3BCModule": "TD3+BC", "IQLModule": "IQL"}


def flat(d: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def unflat(x: torch.Tensor, like: dict) -> dict:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = x[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out


def measure(
    wm, parts, true_j: TrueObjective, no_value: TrueObjective, states, cfg: ITPOConfig, args
) -> dict:
    """Ascent rate, random-direction sign agreement, predicted over true slope, the action
    change per unit step and the terminal value's share of J_true (``no_value``: the same
    objective without the critic); ``parts``: the policy as ITPO sees it (``PolicyParts``)."""
    actor32 = parts.actor
    psi32 = {k: v.detach() for k, v in actor32.named_parameters()}
    buf32 = dict(actor32.named_buffers())
    psi64 = flat({k: v.double() for k, v in psi32.items()})
    like64 = {k: v.double() for k, v in psi32.items()}
    gen = torch.Generator().manual_seed(args.seed)
    ascents, agree, ratios, q_share, action_step = [], [], [], [], []
    for s in states:
        obs = torch.as_tensor(s, dtype=torch.float32)
        noise = wm.sample_noise(1, cfg.particles, cfg.horizon, gen)[0]

        def j_wm(p, obs=obs, noise=noise):
            ret = imagined_returns({**p, **buf32}, actor32, parts.critic, wm, obs, noise, cfg)
            return objective(ret, cfg)

        g = flat(grad(j_wm)(psi32)).double()
        if not torch.isfinite(g).all() or g.norm() == 0:
            continue

        def slope(d: torch.Tensor, s=s) -> float:
            return true_j.slope(unflat(psi64, like64), unflat(d, like64), s, args.h)

        def act(p, obs=obs):
            return functional_call(actor32, {**p, **buf32}, (obs[None],))

        step = {k: v.to(psi32[k].dtype) for k, v in unflat(g, like64).items()}
        action_step.append(float(jvp(act, (psi32,), (step,))[1].norm()))
        d = g / g.norm()
        true_slope = slope(d)
        ascents.append(true_slope > 0)
        ratios.append(float(g.norm()) / true_slope if true_slope != 0 else float("nan"))
        j0 = true_j(unflat(psi64, like64), s)
        q = j0 - no_value(unflat(psi64, like64), s)  # the critic's part of J_true
        q_share.append(q / j0 if j0 != 0 else float("nan"))
        for _ in range(args.directions):
            r = torch.randn(g.shape, generator=gen, dtype=torch.float64)
            r /= r.norm()
            agree.append((float(g @ r) > 0) == (slope(r) > 0))
    ratios = np.array(ratios)
    return {
        "states": len(ascents),
        "ascent_rate": float(np.mean(ascents)),
        "random_direction_sign_agreement": float(np.mean(agree)),
        "predicted_over_true_slope_median": float(np.nanmedian(ratios)),
        "action_change_per_unit_alpha_median": float(np.median(action_step)),
        "terminal_value_share_of_j_true": float(np.nanmean(q_share)),
    }


def _updates(ckpt: str) -> int:
    """The training updates a Lightning checkpoint had (its ``global_step``)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def cell(args) -> dict:
    """One run's record: per world model the ascent rate and its companions, with the
    checkpoints' updates and settings."""
    t0 = time.perf_counter()
    dm, policy, models, val = load_checkpoints(args)
    parts = policy.policy_parts()
    cfg = ITPOConfig(particles=args.particles, horizon=args.horizon,
                     reward_scale=parts.reward_scale, reward_bias=parts.reward_bias)  # fmt: skip
    states = val.double().numpy()
    rows = {}
    for name, wm in models.items():
        true_j, no_value = (
            TrueObjective(dm.env_spec, parts.actor, critic, cfg.horizon, cfg.gamma,
                          cfg.reward_scale, cfg.reward_bias)
            for critic in (parts.critic, None)
        )  # fmt: skip
        lossy = max(true_j.set_state(s) for s in states[:50])
        measured = measure(wm, parts, true_j, no_value, states, cfg, args)
        rows[name] = measured | {"obs_set_error": lossy}
        print(name, json.dumps(rows[name]), flush=True)
    wm_hparams = {
        name: read_hparams(path)
        for name, path in (("diffusion", args.world_model), ("meanflow", args.meanflow))
        if path
    }
    return {
        "dataset_id": args.dataset_id,
        "policy": args.policy,
        "checkpoints": {"world_model": args.world_model, "meanflow": args.meanflow},
        # the world models' deterministic mean head (beyond the paper), if any, and their lr
        "mean_head": {name: hp.get("mean_hidden") for name, hp in wm_hparams.items()},
        "lr": {name: hp.get("lr") for name, hp in wm_hparams.items()},
        "world_model_updates": {
            name: _updates(path)
            for name, path in (("diffusion", args.world_model), ("meanflow", args.meanflow))
            if path
        },
        "policy_updates": _updates(args.policy),
        "policy_algo": ALGOS.get(type(policy).__name__, type(policy).__name__),
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    add_checkpoint_args(ap, states=200)
    ap.add_argument("--directions", type=int, default=2, help="random directions per state")
    ap.add_argument("--h", type=float, default=1e-3, help="finite-difference step")
    ap.add_argument("--horizon", type=int, default=ITPOConfig.horizon, help="H imagined steps")
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    key = f"{checkpoint_key(args)}|K{args.sample_steps}|M{args.particles}|h{args.h}"
    if args.horizon != ITPOConfig.horizon:
        key += f"|H{args.horizon}"
    command = (
        "python -m benchmarks.studies.ascent_rate --policy <policy.ckpt> "
        "--world-model <world_model.ckpt> "
        "[--meanflow <meanflow.ckpt>] --dataset_id <id>"
    )
    run_in_process(
        args.out,
        [(key, lambda: cell(args))],
        {"command": command},
        check=lambda _: require_checkpoint_args("ascent_rate", args),
    )


def report(payload: dict) -> str:
    """Markdown: per run and world model, the ascent rate and its companions."""
    lines = [
        "| dataset | policy (updates) | world model | updates | M | states | "
        "ascent rate (95% CI) | sign agreement, random directions | "
        "predicted / true slope (median) | action change per unit alpha (median) | "
        "terminal value share of J_true |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        st = c["settings"]
        for name, r in c["rows"].items():
            p = r["ascent_rate"]
            ci = 1.96 * (p * (1 - p) / r["states"]) ** 0.5  # normal approximation
            model = f"diffusion (K = {st['sample_steps']})" if name == "diffusion" else name
            if c.get("mean_head", {}).get(name):
                model += ", mean head"
            if c.get("lr", {}).get(name, 3e-4) != 3e-4:  # the paper's lr
                model += f", lr {c['lr'][name]:g}"
            if st["h"] != 1e-3:  # the finite-difference step
                model += f", h {st['h']:g}"
            if st.get("horizon", ITPOConfig.horizon) != ITPOConfig.horizon:
                model += f", H {st['horizon']}"
            updates = c.get("world_model_updates", {}).get(name, "?")
            step = r.get("action_change_per_unit_alpha_median")
            lines.append(
                f"| {c['dataset_id']} | {c['policy_algo']} {c.get('policy_updates', '?')} | "
                f"{model} | {updates} | "
                f"{st['particles']} | {r['states']} | "
                f"{100 * p:.0f}% ({100 * (p - ci):.0f}-{100 * (p + ci):.0f}%) | "
                f"{100 * r['random_direction_sign_agreement']:.0f}% | "
                f"{r['predicted_over_true_slope_median']:.2f} | "
                f"{'n/a' if step is None else f'{step:.3g}'} | "
                f"{100 * r['terminal_value_share_of_j_true']:.0f}% |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
