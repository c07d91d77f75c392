"""One-step MeanFlow on the 1-D conditional Gaussian mixture of tests/test_meanflow.py: which
time sampling, width and budget bring one-step samples within the target tolerance (means
within 0.1, spreads within 20%, weights within 0.1).

    OMP_NUM_THREADS=1 python -m benchmarks.studies.meanflow_mixture [--steps 10000]
        [--variants authors wide ...] [--out NAME]

Each variant trains with the test's recipe (``fit_mixture``, as tests/test_meanflow.py's
``_fit_mixture``: seed 0, Adam 3e-3 with cosine decay, batch 1024, plain MSE) and reports the EM
fit of 4000 one-step samples at c = -0.5, 0, 0.5.
Writes benchmarks/results/studies/meanflow_mixture.json (one row per variant and budget, kept
across runs); a recorded row is not trained again (``--out NAME`` trains it again into
results/studies/NAME.json). Its only input is the mixture itself.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from benchmarks.common import add_out_arg, load, machine, recorded_line, save
from lit_itpo.world_models import MeanFlowTransition

NAME = "studies/meanflow_mixture"

VARIANTS = {
    # the MeanFlow authors' ImageNet sampling: logit-normal(-0.4, 1), 25% r = t (the test's 3k run)
    "authors": {"hidden": (128, 128)},
    "authors_3x256": {"hidden": (256, 256, 256)},
    "wide_2": {"hidden": (256, 256, 256), "time_mean": 0.0, "time_std": 2.0},
    "wide_3": {"hidden": (256, 256, 256), "time_mean": 0.0, "time_std": 3.0},
    "wide_3_all_r_lt_t": {
        "hidden": (256, 256, 256),
        "time_mean": 0.0,
        "time_std": 3.0,
        "equal_fraction": 0.0,
    },
    # the network's own u(z, t, t) in place of the sampled v where r < t (half the batch r = t)
    "wide_3_model_velocity": {
        "hidden": (256, 256, 256),
        "time_mean": 0.0,
        "time_std": 3.0,
        "equal_fraction": 0.5,
        "target_velocity": "model",
    },
    # 30k -> 100k updates left the minority spread at c = -0.5 where it was (0.376 -> 0.374):
    # not the budget, so more capacity
    "wide_3_all_r_lt_t_4x256": {
        "hidden": (256, 256, 256, 256),
        "time_mean": 0.0,
        "time_std": 3.0,
        "equal_fraction": 0.0,
    },
    "wide_3_all_r_lt_t_3x512": {
        "hidden": (512, 512, 512),
        "time_mean": 0.0,
        "time_std": 3.0,
        "equal_fraction": 0.0,
    },
}


# Not MeanFlow training: the same 3 x 256 network regressed on the exact one-step map (the
# mixture's quantile map, unique in 1-D) with the same optimiser, schedule and batch. It says
# whether the network can represent the map's jump between the modes at this budget.
REFERENCE = "exact_map_regression_3x256"
VARIANTS[REFERENCE] = {"hidden": (256, 256, 256), "objective": "regress the exact quantile map"}


def quantile_map(c: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x = F_c^-1(Phi(eps)) for the test's mixture, by bisection (50 halvings of [-5, 5])."""
    normal = torch.distributions.Normal(0.0, 1.0)
    w, lo_mean, hi_mean, p = 0.3 + 0.2 * c, -1.5 + c / 2, 1.5 + c / 2, normal.cdf(eps)
    lo, hi = torch.full_like(eps, -5.0), torch.full_like(eps, 5.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        cdf = w * normal.cdf((mid - lo_mean) / 0.3) + (1 - w) * normal.cdf((mid - hi_mean) / 0.3)
        lo, hi = torch.where(cdf < p, mid, lo), torch.where(cdf < p, hi, mid)
    return (lo + hi) / 2


def mixture(n: int, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, x) with x | c = w(c) N(-1.5 + c/2, 0.3^2) + (1 - w(c)) N(1.5 + c/2, 0.3^2),
    w(c) = 0.3 + 0.2 c, c ~ U(-1, 1) unless given: the test's mixture."""
    c = torch.rand(n, 1) * 2 - 1 if c is None else c
    low = torch.rand(n, 1) < 0.3 + 0.2 * c
    x = torch.where(low, -1.5 + 0.5 * c, 1.5 + 0.5 * c) + 0.3 * torch.randn(n, 1)
    return c, x


def em_two_gaussians(x: torch.Tensor, mu0: list[float], iters: int = 100):
    """Weights, means and spreads of a two-Gaussian EM fit of ``x [n]`` started at ``mu0``."""
    mu, sd, w = torch.tensor(mu0), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    for _ in range(iters):
        resp = (-0.5 * ((x[:, None] - mu) / sd) ** 2 - sd.log() + w.log()).softmax(-1)
        n = resp.sum(0)
        w, mu = n / len(x), (resp * x[:, None]).sum(0) / n
        sd = ((resp * (x[:, None] - mu) ** 2).sum(0) / n).sqrt()
    return w, mu, sd


def train(m: MeanFlowTransition, steps: int, batch_loss) -> MeanFlowTransition:
    """The test's optimiser and schedule (Adam 3e-3, cosine) on ``batch_loss(m)``."""
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = batch_loss(m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return m


def fit_mixture(steps: int, hidden=(128, 128), **time_sampling) -> MeanFlowTransition:
    """MeanFlow on the mixture as the test trains it (seed 0, batch 1024, ``adaptive_p = 0``:
    the adaptive weight down-weights the minority component)."""
    torch.manual_seed(0)
    kw = {"equal_fraction": 0.25} | time_sampling
    m = MeanFlowTransition(1, 1, [-1.0], [1.0], hidden=list(hidden), adaptive_p=0.0, **kw)
    zero = torch.zeros(1024, 1)

    def batch_loss(m):
        c, x = mixture(1024)
        return m.loss(zero, c, zero + x)[0]

    return train(m, steps, batch_loss)


@torch.no_grad()
def sampled_mixture(m: MeanFlowTransition, cv: float, steps: int = 1):
    """EM fit of 4000 ``steps``-step samples at c = ``cv``."""
    m.sample_steps = steps
    c = torch.full((4000, 1), cv)
    s = m.sample(torch.zeros(4000, 1), c, torch.randn(4000, 1)).squeeze(-1)
    return em_two_gaussians(s, [-1.5 + cv / 2, 1.5 + cv / 2])


def fit_exact_map(steps: int, hidden) -> MeanFlowTransition:
    """The reference row: ``fit_mixture``'s network, optimiser and batch, trained by MSE of its
    one-step sample against the exact quantile map."""
    torch.manual_seed(0)
    zero = torch.zeros(1024, 1)

    def batch_loss(m):
        c, eps = torch.rand(1024, 1) * 2 - 1, torch.randn(1024, 1)
        return (m.sample(zero, c, eps) - quantile_map(c, eps)).pow(2).mean()

    return train(MeanFlowTransition(1, 1, [-1.0], [1.0], hidden=list(hidden)), steps, batch_loss)


# MeanFlow training with the sampled velocity v = eps - x replaced by the exact marginal
# velocity E[v | z_t, c] (closed form for this mixture): the same JVP target, no noise in v.
ORACLE = "oracle_marginal_velocity_3x256"
VARIANTS[ORACLE] = {
    "hidden": (256, 256, 256),
    "time_mean": 0.0,
    "time_std": 3.0,
    "equal_fraction": 0.0,
    "velocity": "exact marginal E[eps - x | z_t, c]",
}


def marginal_velocity(z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """E[eps - x | z_t = z, c] for z_t = (1 - t) x + t eps and the test's mixture: per component
    (x, eps, z_t) are jointly Gaussian; the components are weighted by their posterior."""
    w = 0.3 + 0.2 * c
    means, weights = torch.cat([-1.5 + c / 2, 1.5 + c / 2], -1), torch.cat([w, 1 - w], -1)
    var = (1 - t) ** 2 * 0.09 + t**2  # Var(z_t | component)
    d = z - (1 - t) * means
    post = (weights.log() - 0.5 * d**2 / var - 0.5 * var.log()).softmax(-1)
    e_x = means + (1 - t) * 0.09 / var * d  # E[x | z_t, component]
    e_eps = t / var * d  # E[eps | z_t, component]
    return (post * (e_eps - e_x)).sum(-1, keepdim=True)


class _OracleMeanFlow(MeanFlowTransition):
    """``MeanFlowTransition`` whose loss uses ``marginal_velocity`` for v (the condition c rides
    in the action slot, as in the test)."""

    def loss(self, obs, action, next_obs, weight=None):
        x, cond = self.target(obs, next_obs), self.cond(obs, action)
        r, t = self.sample_times(x.shape[0], x.device, x.dtype)
        t_ = t.unsqueeze(-1)
        z = (1 - t_) * x + t_ * torch.randn_like(x)
        u_tgt = self.meanflow_target(z, r, t, marginal_velocity(z, t_, action), cond)
        return (self.net(z, r, t, cond) - u_tgt).pow(2).sum(-1).mean(), {}


def fit_oracle(steps: int) -> MeanFlowTransition:
    """``fit_mixture``'s recipe (seed, optimiser, schedule, batch, time sampling of the
    ``wide_3_all_r_lt_t`` row) with the oracle velocity."""
    torch.manual_seed(0)
    kw = {k: v for k, v in VARIANTS[ORACLE].items() if k not in ("hidden", "velocity")}
    m = _OracleMeanFlow(1, 1, [-1.0], [1.0], hidden=[256] * 3, adaptive_p=0.0, **kw)
    zero = torch.zeros(1024, 1)

    def batch_loss(m):
        c, x = mixture(1024)
        return m.loss(zero, c, zero + x)[0]

    return train(m, steps, batch_loss)


def report(payload: dict) -> str:
    """Markdown: one row per variant and budget, the EM fit at each c against the truth."""
    lines = [
        "| variant | settings | updates | c | minority weight (truth) | means (truth) | spreads "
        "(truth 0.3) | share between the modes (truth 0.001) | within tolerance |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in payload["rows"].values():
        settings = ", ".join(f"{k} {v}" for k, v in row["settings"].items())
        for c, v in row["per_c"].items():
            cv = float(c)
            means = " / ".join(f"{m:.2f}" for m in v["means"])
            gap = f"{v['between_modes']:.3f}" if "between_modes" in v else "n/a (older run)"
            lines.append(
                f"| {row['variant']} | {settings} | {row['steps']} | {c} | "
                f"{v['weight_minority']:.2f} ({0.3 + 0.2 * cv:.1f}) | {means} "
                f"({-1.5 + cv / 2:.2f} / {1.5 + cv / 2:.2f}) | "
                f"{' / '.join(f'{x:.2f}' for x in v['spreads'])} | {gap} | "
                f"{'yes' if v['within_tolerance'] else 'no'} |"
            )
    return "\n".join(lines)


def fit_row(name: str, steps: int) -> dict:
    """One variant trained for ``steps`` updates: the EM fit of its one-step samples per c."""
    t0 = time.perf_counter()
    if name == REFERENCE:
        m = fit_exact_map(steps, VARIANTS[name]["hidden"])
    elif name == ORACLE:
        m = fit_oracle(steps)
    else:
        m = fit_mixture(steps, **VARIANTS[name])
    per_c = {}
    for cv in (-0.5, 0.0, 0.5):
        w, mu, sd = sampled_mixture(m, cv)
        truth = torch.tensor([-1.5 + cv / 2, 1.5 + cv / 2])
        with torch.no_grad():  # one-step samples more than 3 true spreads from both modes
            x = m.sample(torch.zeros(4000, 1), torch.full((4000, 1), cv), torch.randn(4000, 1))
        gap = ((x > truth[0] + 0.9) & (x < truth[1] - 0.9)).float().mean()
        per_c[f"{cv:+.1f}"] = {
            "between_modes": float(gap),  # the true mixture puts 0.13% there
            "weight_minority": float(w[0]),
            "means": mu.tolist(),
            "spreads": sd.tolist(),
            "within_tolerance": bool(
                abs(w[0] - (0.3 + 0.2 * cv)) < 0.1
                and (mu - truth).abs().max() < 0.1
                and ((sd / 0.3 - 1).abs() < 0.2).all()
            ),
        }
    return {
        "variant": name,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[name].items()},
        "steps": steps,
        "per_c": per_c,
        "wall_s": time.perf_counter() - t0,
        "machine": machine(),
    }


def rows_of(name: str) -> dict:
    """``results/<name>.json`` as this study keeps it: its rows by ``<variant>@<steps>``."""
    payload = {k: v for k, v in load(name).items() if k != "cells"}
    return payload | {"rows": payload.get("rows", {})}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_out_arg(ap, NAME)
    args = ap.parse_args(argv)
    keys = {name: f"{name}@{args.steps}" for name in args.variants}
    done = rows_of(args.out)["rows"]
    print(recorded_line(args.out, sum(k in done for k in keys.values()), len(keys)), flush=True)
    for name, key in keys.items():
        if key in done:
            continue
        row = fit_row(name, args.steps)
        minority = {c: round(v["spreads"][0], 2) for c, v in row["per_c"].items()}
        print(name, args.steps, "minority spreads", minority, flush=True)
        # re-read before each save: a stopped sweep keeps its finished variants, and two sweeps
        # run side by side (one per core) keep each other's rows
        payload = rows_of(args.out)
        payload["command"] = (
            "python -m benchmarks.studies.meanflow_mixture --steps N --variants ..."
        )
        payload["rows"][key] = row
        save(args.out, payload)
    print(f"{args.out}: results in benchmarks/results/{args.out}.json", flush=True)


if __name__ == "__main__":
    main()
