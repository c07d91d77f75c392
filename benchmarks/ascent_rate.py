"""Does an ITPO gradient point uphill in the real world? The "ascent rate" of a world model.

    python -m benchmarks.ascent_rate --policy P.ckpt --world-model WM.ckpt [--meanflow MF.ckpt] \\
        --dataset_id lit_itpo/halfcheetah/medium-v0 [--states 200] [--particles 64]

ITPO climbs J_wm(psi), the imagined H-step objective (rewards through the world model, then the
critic's min(Q1, Q2) at s_H). What matters is J_true(psi): the same objective with the MuJoCo
simulator set to the real state in place of the world model (HalfCheetah, Hopper and Walker2d v5
are deterministic; the state is set from the observation, qpos = (0, obs[:nq-1]), qvel =
obs[nq-1:], the x position not mattering; an episode that terminates inside the horizon stops
there, with no terminal value). For each held-out real state s and each world model:

- g = grad_psi J_wm(psi_0) at s with ITPO's fixed noise (M particles), the step ITPO takes;
- the directional derivative of J_true along g / |g| by central differences (step ``--h`` in
  parameter space, float64 actor and critic, so the simulator adds no noise): **ascent** if > 0;
- the same along ``--directions`` random unit directions d: the sign agreement of the predicted
  slope g . d with the true one (50% = the gradient carries no information about d);
- the predicted slope |g| over the true one along g.

The ascent rate is the share of states where ITPO's step raises J_true (chance: 50%). Appends
one record per run to benchmarks/results/ascent_rate.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from torch.func import functional_call, grad

from benchmarks.common import machine, record
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.envs import make_gym_env
from lit_itpo.itpo import ITPOConfig
from lit_itpo.itpo.step import imagined_objective
from lit_itpo.modules import load_meanflow, load_policy, load_world_model

NAME = "ascent_rate"


class TrueObjective:
    """J_true(psi) at a real state: the simulator set to it, H steps of pi_psi (float64)."""

    def __init__(self, env_spec: str, actor, critic, cfg: ITPOConfig):
        self.env = make_gym_env(env_spec)
        self.env.reset(seed=0)
        self.sim = self.env.unwrapped
        self.nq = self.sim.model.nq
        self.actor, self.critic, self.cfg = actor.double(), critic.double(), cfg
        self.buffers = dict(self.actor.named_buffers())

    def set_state(self, obs: np.ndarray) -> float:
        """Set the simulator from ``obs``; returns how far its own observation then is from it
        (0 unless a clipped velocity made the observation lossy)."""
        qpos = np.concatenate([[0.0], obs[: self.nq - 1]])
        self.sim.set_state(qpos, obs[self.nq - 1 :])
        return float(np.abs(self.sim._get_obs() - obs).max())

    @torch.no_grad()
    def __call__(self, params: dict, obs: np.ndarray) -> tuple[float, float]:
        """``(J_true, its terminal-value part)``."""
        cfg = self.cfg
        self.set_state(obs)
        s, total = obs, 0.0
        low, high = self.sim.action_space.low, self.sim.action_space.high
        for j in range(cfg.horizon):
            o = torch.as_tensor(s, dtype=torch.float64)[None]
            a = functional_call(self.actor, {**params, **self.buffers}, (o,))[0].numpy()
            s, r, terminated, _, _ = self.sim.step(np.clip(a, low, high))
            total += cfg.gamma**j * (r * cfg.reward_scale + cfg.reward_bias)
            if terminated:
                return total, 0.0
        o = torch.as_tensor(s, dtype=torch.float64)[None]
        a = functional_call(self.actor, {**params, **self.buffers}, (o,))
        q = cfg.gamma**cfg.horizon * float(self.critic(o, a).min(0).values)
        return total + q, q


def flat(d: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def unflat(x: torch.Tensor, like: dict) -> dict:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = x[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out


def measure(wm, policy, true_j: TrueObjective, states, cfg: ITPOConfig, args) -> dict:
    actor32 = policy.actor
    psi32 = {k: v.detach() for k, v in actor32.named_parameters()}
    buf32 = dict(actor32.named_buffers())
    psi64 = flat({k: v.double() for k, v in psi32.items()})
    like64 = {k: v.double() for k, v in psi32.items()}
    gen = torch.Generator().manual_seed(args.seed)
    ascents, agree, ratios, q_share = [], [], [], []
    for s in states:
        obs = torch.as_tensor(s, dtype=torch.float32)
        noise = wm.sample_noise(1, cfg.particles, cfg.horizon, gen)[0]

        def j_wm(p, obs=obs, noise=noise):
            return imagined_objective({**p, **buf32}, actor32, policy.critic, wm, obs, noise, cfg)

        g = flat(grad(j_wm)(psi32)).double()
        if not torch.isfinite(g).all() or g.norm() == 0:
            continue

        def slope(d: torch.Tensor, s=s) -> float:
            jp = true_j(unflat(psi64 + args.h * d, like64), s)[0]
            jm = true_j(unflat(psi64 - args.h * d, like64), s)[0]
            return (jp - jm) / (2 * args.h)

        d = g / g.norm()
        true_slope = slope(d)
        ascents.append(true_slope > 0)
        ratios.append(float(g.norm()) / true_slope if true_slope != 0 else float("nan"))
        j0, q = true_j(unflat(psi64, like64), s)
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
        "terminal_value_share_of_j_true": float(np.nanmean(q_share)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--world-model", default=None, help="stage 1 checkpoint (diffusion)")
    ap.add_argument("--meanflow", default=None, help="stage 3 checkpoint (MeanFlow)")
    ap.add_argument("--dataset_id", required=True)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--states", type=int, default=200)
    ap.add_argument("--particles", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=5, help="diffusion reverse steps")
    ap.add_argument("--directions", type=int, default=2, help="random directions per state")
    ap.add_argument("--h", type=float, default=1e-3, help="finite-difference step")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    dm = MinariDataModule(args.dataset_id, data_dir=args.data_dir)
    dm.setup()
    policy = load_policy(args.policy, dataset_id=args.dataset_id)
    hp = policy.hparams
    cfg = ITPOConfig(particles=args.particles, reward_scale=hp.reward_scale,
                     reward_bias=hp.reward_bias)  # fmt: skip
    val = dm.val_data["observation"]
    pick = torch.randperm(val.shape[0], generator=torch.Generator().manual_seed(args.seed))
    states = val[pick[: args.states]].double().numpy()
    models = {}
    if args.world_model:
        wm = load_world_model(args.world_model, dataset_id=args.dataset_id)
        wm.transition.set_sample_steps(args.sample_steps, "beta_tilde")
        models["diffusion"] = wm
    if args.meanflow:
        models["meanflow"] = load_meanflow(args.meanflow, dataset_id=args.dataset_id)
    rows = {}
    for name, wm in models.items():
        p64 = copy.deepcopy(policy)
        true_j = TrueObjective(dm.env_spec, p64.actor, p64.critic, cfg)
        lossy = max(true_j.set_state(s) for s in states[:50])
        rows[name] = measure(wm, policy, true_j, states, cfg, args) | {"obs_set_error": lossy}
        print(name, json.dumps(rows[name]), flush=True)
    key = f"{args.dataset_id}|{args.policy}|K{args.sample_steps}|M{args.particles}|h{args.h}"
    command = (
        "python -m benchmarks.ascent_rate --policy <policy.ckpt> --world-model <world_model.ckpt> "
        "[--meanflow <meanflow.ckpt>] --dataset_id <id>"
    )
    result = {
        "machine": machine(),
        "dataset_id": args.dataset_id,
        "policy": args.policy,
        "checkpoints": {"world_model": args.world_model, "meanflow": args.meanflow},
        "policy_updates": torch.load(args.policy, weights_only=True)["global_step"],
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }
    record(NAME, key, result, {"command": command})
    print(f"recorded {key} in benchmarks/results/{NAME}.json")


def report(payload: dict) -> str:
    """Markdown: per run and world model, the ascent rate and its companions."""
    lines = [
        "| dataset | policy (updates) | world model | M | states | ascent rate (95% CI) | "
        "sign agreement, "
        "random directions | predicted / true slope (median) | terminal value share of J_true |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        st = c["settings"]
        for name, r in c["rows"].items():
            p = r["ascent_rate"]
            ci = 1.96 * (p * (1 - p) / r["states"]) ** 0.5  # normal approximation
            model = f"diffusion (K = {st['sample_steps']})" if name == "diffusion" else name
            lines.append(
                f"| {c['dataset_id']} | {c.get('policy_updates', '?')} | {model} | "
                f"{st['particles']} | {r['states']} | "
                f"{100 * p:.0f}% ({100 * (p - ci):.0f}-{100 * (p + ci):.0f}%) | "
                f"{100 * r['random_direction_sign_agreement']:.0f}% | "
                f"{r['predicted_over_true_slope_median']:.2f} | "
                f"{100 * r['terminal_value_share_of_j_true']:.0f}% |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
