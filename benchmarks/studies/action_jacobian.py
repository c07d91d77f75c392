"""Do the world models know how the next state and reward move with the state and action?

ITPO's gradient reaches the policy through the world model's one-step derivatives. This
benchmark compares them with the simulator's on held-out real states (MuJoCo set to the
state, as in ``benchmarks.ascent_rate``) at the policy's own action ``a = pi(s)``:

- the simulator: ``d s'/d a``, ``d s'/d s`` and ``d r/d a`` by central differences (float64,
  step ``--h``);
- each world model: the same derivatives of its prediction by autograd, for one noise sample
  (what one imagined particle sees) and for the mean of ``--samples`` samples (the model's mean
  next state);
- a deterministic MLP (4 x 200, Adam 1e-3) trained here for as many updates at the same batch
  as the diffusion model had: a plain regression's derivatives, for scale (``--no-mlp`` skips).

States are in standardised units (each dimension over its std; actions are already in
[-1, 1]); the state Jacobian is that of the change ``s' - s`` (the identity would dominate).
Per state: the cosine between the model's and the simulator's flattened Jacobian, its relative
error ``||J_model - J_sim|| / ||J_sim||``, and the cosine of the reward gradients in the
action; the table gives medians over states and the share of states with a positive reward
cosine. The world models share stage 1's reward model (MeanFlow takes it from there).

    OMP_NUM_THREADS=1 python -m benchmarks.studies.action_jacobian --policy <policy.ckpt> \\
        --world-model <world_model.ckpt> [--meanflow <meanflow.ckpt>] --dataset_id <id> \\
        [--out NAME]

One cell per dataset, checkpoints and K in benchmarks/results/studies/action_jacobian.json; a
recorded cell is not measured again (``--out NAME`` measures it again into
results/studies/NAME.json). A missing dataset or checkpoint stops the run before it starts,
naming the ``lit-itpo`` command that makes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from benchmarks.common import (
    add_checkpoint_args,
    add_out_arg,
    checkpoint_key,
    load_checkpoints,
    require_checkpoint_args,
    run_in_process,
)
from lit_itpo.ascent import TrueObjective
from lit_itpo.world_models.metrics import step_noise

NAME = "studies/action_jacobian"


def model_jacobians(
    next_fn: Callable, reward_fn: Callable | None, obs: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A differentiable prediction's derivatives with respect to ``x = (obs, action)`` at one
    state ``obs [obs_dim]`` and action ``action [act_dim]``: ``(d next / d x [obs_dim,
    obs_dim + act_dim], d reward / d x [obs_dim + act_dim] or None)``; ``next_fn(obs, action)
    -> [obs_dim]`` has its noise fixed inside, likewise ``reward_fn`` (None: a model that
    predicts no reward)."""
    n = obs.shape[0]
    x = torch.cat([obs, action]).detach()
    j_next = torch.autograd.functional.jacobian(lambda x: next_fn(x[:n], x[n:]), x)
    if reward_fn is None:
        return j_next, None
    return j_next, torch.autograd.functional.jacobian(
        lambda x: reward_fn(x[:n], x[n:]).reshape(()), x
    )


def compare(j_model, r_model, j_sim, r_sim, scale: np.ndarray) -> dict[str, float]:
    """A model's one-step derivatives (``model_jacobians``' layout) against the simulator's,
    states in standardised units (each dimension over its std; actions are in [-1, 1]):
    cosine and relative error of ``d s' / d a`` and of ``d (s' - s) / d s`` (the identity
    taken out, or it would dominate), and the cosine of ``d r / d a`` (NaN without a reward)."""
    n = scale.shape[0]
    jm, js = _array(j_model), _array(j_sim)
    jm[:, :n] -= np.eye(n)
    js[:, :n] -= np.eye(n)
    unit = np.concatenate([scale, np.ones(jm.shape[1] - n)])
    jm, js = jm / scale[:, None] * unit, js / scale[:, None] * unit
    out = {}
    for part, cols in (("action", slice(n, None)), ("state", slice(0, n))):
        m, t = jm[:, cols].ravel(), js[:, cols].ravel()
        out[f"{part}_cosine"] = _cosine(m, t)
        out[f"{part}_relative_error"] = float(np.linalg.norm(m - t) / max(np.linalg.norm(t), 1e-12))
    out["reward_cosine"] = float("nan")
    if r_model is not None:
        out["reward_cosine"] = _cosine(_array(r_model)[n:], _array(r_sim)[n:])
    return out


def _array(x) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (the caller's stays as it was)."""
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float64)


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12))


def predictors(models: dict, samples: int, seed: int, mlp=None) -> dict[str, tuple]:
    """Name -> ``(next_fn(obs, action), reward_fn(obs, action))`` for one state at a time; the
    noise of each world model is drawn once here from ``seed``, so every state sees the same."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, wm in models.items():
        noise = step_noise(wm, samples, g)

        def mean_next(o, a, wm=wm, noise=noise):
            n = noise.shape[0]
            return wm.next(o.expand(n, -1), a.expand(n, -1), noise).mean(0)

        def one_next(o, a, wm=wm, noise=noise):
            return wm.next(o[None], a[None], noise[:1])[0]

        def reward(o, a, wm=wm):
            return wm.reward(o[None], a[None])

        out[f"{name}, single sample"] = (one_next, reward)
        out[f"{name}, mean of {samples}"] = (mean_next, reward)
    if mlp is not None:
        out["MLP 4 x 200"] = (lambda o, a: mlp(o[None], a[None])[0], None)
    return out


def measure(args) -> dict:
    from benchmarks.studies.world_model_vs_mlp import train_mlp

    dm, policy, models, states = load_checkpoints(args)
    diffusion = models.get("diffusion") or next(iter(models.values()))
    scale = diffusion.transition.obs_std.double().numpy()
    mlp, updates = None, None
    if args.mlp:
        ckpt = torch.load(args.world_model, map_location="cpu", weights_only=False)
        updates = int(ckpt["global_step"])
        batch = int(ckpt.get("datamodule_hyper_parameters", {}).get("batch_size", 256))
        mlp, _ = train_mlp(dm, diffusion.transition, updates, batch, args.seed)
    preds = predictors(models, args.samples, args.seed, mlp)
    sim = TrueObjective(dm.env_spec, policy.actor, None, 1, 1.0)
    per: dict[str, list[dict]] = {name: [] for name in preds}
    lossy = 0
    for s in states:
        obs = s.double().numpy()
        if sim.set_state(obs) > 1e-6:  # a clipped velocity: the state cannot be set exactly
            lossy += 1
            continue
        with torch.no_grad():
            a = policy.actor(s[None])[0]
        j_sim, r_sim = sim.step_jacobian(obs, a.double().numpy(), args.h)
        for name, (next_fn, reward_fn) in preds.items():
            j, r = model_jacobians(next_fn, reward_fn, s, a)
            per[name].append(compare(j, r, j_sim, r_sim, scale))
    rows = {}
    for name, vals in per.items():
        rows[name] = {"states": len(vals)}
        for k in vals[0]:
            x = np.array([v[k] for v in vals])
            rows[name][f"{k}_median"] = None if np.isnan(x).all() else float(np.median(x))
        rc = np.array([v["reward_cosine"] for v in vals])
        rows[name]["reward_cosine_positive"] = (
            None if np.isnan(rc).all() else float(np.mean(rc > 0))
        )
    return {"rows": rows, "states_not_settable": lossy, "mlp_updates": updates}


def report(payload: dict) -> str:
    """Markdown: per cell and predictor, the median agreement with the simulator's derivatives."""

    def f(x, pct=False):
        return "n/a" if x is None else (f"{100 * x:.0f}%" if pct else f"{x:.2f}")

    lines = [
        "| dataset | world-model updates | predictor | states | d s'/d a: cosine | "
        "d s'/d a: relative error | d (s' - s)/d s: cosine | d (s' - s)/d s: relative error | "
        "d r/d a: cosine | d r/d a: cosine > 0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        for name, r in c["rows"].items():
            lines.append(
                f"| {c['dataset_id']} | {c['world_model_updates']} | {name} | {r['states']} | "
                f"{f(r['action_cosine_median'])} | {f(r['action_relative_error_median'])} | "
                f"{f(r['state_cosine_median'])} | {f(r['state_relative_error_median'])} | "
                f"{f(r['reward_cosine_median'])} | {f(r['reward_cosine_positive'], True)} |"
            )
    return "\n".join(lines)


def cell(args) -> dict:
    """One run's record: every predictor's medians, the checkpoints and their updates."""
    t0 = time.perf_counter()
    result = measure(args)
    ck = torch.load(args.world_model, map_location="cpu", weights_only=True)
    return result | {
        "dataset_id": args.dataset_id,
        "checkpoints": {
            "policy": args.policy,
            "world_model": args.world_model,
            "meanflow": args.meanflow,
        },
        "world_model_updates": int(ck["global_step"]),
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_checkpoint_args(ap, states=200)
    ap.add_argument("--samples", type=int, default=16, help="noise samples of the mean")
    ap.add_argument("--h", type=float, default=1e-4, help="the simulator's action step")
    ap.add_argument("--no-mlp", dest="mlp", action="store_false", help="skip the MLP peer")
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    key = f"{checkpoint_key(args)}|K{args.sample_steps}"
    command = (
        "python -m benchmarks.studies.action_jacobian --policy <policy.ckpt> --world-model "
        "<world_model.ckpt> [--meanflow <meanflow.ckpt>] --dataset_id <id>"
    )
    payload = run_in_process(
        args.out,
        [(key, lambda: cell(args))],
        {"command": command},
        check=lambda _: require_checkpoint_args("action_jacobian", args),
    )
    for name, r in payload["cells"][key]["rows"].items():
        print(name, r, flush=True)


if __name__ == "__main__":
    main()
