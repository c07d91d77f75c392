"""World models vs a deterministic MLP: is each world model at least as accurate, for the mean
next state, as a plain regression trained on the same data and budget?

For a trained diffusion world model (stage 1) and tilted MeanFlow model (stage 3) of one
dataset, an MLP (4 x 200 ReLU, Adam 1e-3) is trained here on the same training split, in the
same representation (standardised (s, a) in, standardised state change out, MSE), for as many
updates at the same batch as the diffusion model had. On held-out transitions (the same
episode split, first ``--transitions``), the one-step error of the next state:

- ``single``: one sample per transition (what an imagined rollout uses);
- ``mean of N``: the mean of ``--samples`` samples (the model's estimate of the mean next
  state, which is what a deterministic MLP predicts);
- a trivial predictor (``s + mean state change``) for scale,

each in raw env units (RMSE over all state dimensions) and per-dimension standardised units
(each dimension's error over its std in the training split, then RMSE).

    OMP_NUM_THREADS=1 python -m benchmarks.studies.world_model_vs_mlp --name halfcheetah-medium-s0 \
        --dataset-id lit_itpo/halfcheetah/medium-v0 --world-model runs/.../last.ckpt \
        --meanflow runs/.../last.ckpt
    python -m benchmarks.studies.world_model_vs_mlp --report

One cell per ``--name`` in benchmarks/results/studies/world_model_vs_mlp.json; a recorded one is
not measured again (``--out NAME`` measures it again into results/studies/NAME.json). A missing
dataset or checkpoint stops the run before it starts, naming the command that makes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from benchmarks.common import (
    add_out_arg,
    load,
    require_checkpoints,
    require_dataset,
    run_in_process,
)
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.modules.meanflow import load_meanflow
from lit_itpo.modules.world_model import load_world_model
from lit_itpo.nets.mlp import MLP
from lit_itpo.world_models.metrics import step_noise

NAME = "studies/world_model_vs_mlp"


class MLPDynamics(nn.Module):
    """Deterministic next-state regression on the world model's own conditioning."""

    def __init__(self, cond, obs_dim: int, action_dim: int, hidden=(200, 200, 200, 200)):
        super().__init__()
        self.cond = cond
        self.net = MLP(obs_dim + action_dim, obs_dim, hidden)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        c = self.cond  # its normalisers only (not a world model's own mean head)
        return obs + c.delta_mean + c.delta_std * self.net(c.cond(obs, action))

    def loss(self, obs, action, next_obs) -> torch.Tensor:
        return (
            (self.net(self.cond.cond(obs, action)) - self.cond.target(obs, next_obs)).pow(2).mean()
        )


def train_mlp(
    dm: MinariDataModule,
    cond,
    steps: int,
    batch: int,
    seed: int,
    lr: float = 1e-3,
    cosine: bool = False,
) -> tuple[nn.Module, float]:
    """The MLP after ``steps`` Adam updates (``lr``, decayed to 0 on a cosine when
    ``cosine``, as the world-model stages do) on batches drawn from the training split."""
    torch.manual_seed(seed)
    model = MLPDynamics(cond, dm.obs_dim, dm.action_dim)
    opt = torch.optim.Adam(model.net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    data, g = dm.train_data, torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        b = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        loss = model.loss(b["observation"], b["action"], b["next", "observation"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval(), time.perf_counter() - t0


@torch.no_grad()
def errors(predict: Callable, data, scale: torch.Tensor, chunk: int = 4096) -> dict[str, float]:
    """RMSE of ``predict(obs, action, chunk_index) -> next_obs`` over ``data``: raw and
    per-dimension standardised units."""
    se, se_n = [], []
    for j, i in enumerate(range(0, data.shape[0], chunk)):
        b = data[i : i + chunk]
        diff = predict(b["observation"], b["action"], j) - b["next", "observation"]
        se.append(diff.pow(2).mean(-1))
        se_n.append((diff / scale).pow(2).mean(-1))
    return {
        "raw": torch.cat(se).mean().sqrt().item(),
        "standardised": torch.cat(se_n).mean().sqrt().item(),
    }


def sampled(wm, samples: int, seed: int) -> Callable:
    """``predict`` of a world model: the mean of ``samples`` next-state samples (1: one)."""
    g = torch.Generator().manual_seed(seed)

    def predict(obs, action, _):
        return torch.stack(
            [wm.next(obs, action, step_noise(wm, obs.shape[0], g)) for _ in range(samples)]
        ).mean(0)

    return predict


def measure(args) -> dict:
    """One dataset's cell: every predictor's errors on the same held-out transitions."""
    ckpt = torch.load(args.world_model, map_location="cpu", weights_only=False)
    steps = int(ckpt["global_step"])
    dm_hp = ckpt.get("datamodule_hyper_parameters", {})
    batch = int(args.batch or dm_hp.get("batch_size", 256))
    dm = MinariDataModule(
        args.dataset_id,
        data_dir=args.data_dir,
        val_fraction=dm_hp.get("val_fraction", 0.1),
        split_seed=dm_hp.get("split_seed", 0),
    )
    dm.setup("fit")
    models = {"diffusion": load_world_model(args.world_model, dataset_id=args.dataset_id)}
    if args.meanflow:
        models["meanflow"] = load_meanflow(args.meanflow, dataset_id=args.dataset_id)
    cond = models["diffusion"].transition
    scale = cond.obs_std
    val = dm.val_data[: args.transitions]
    mlp, mlp_s = train_mlp(dm, cond, steps, batch, args.seed)
    wm_lr = float(ckpt["hyper_parameters"].get("lr", 3e-4))
    mlp_wm, _ = train_mlp(dm, cond, steps, batch, args.seed, lr=wm_lr, cosine=True)
    rows = {
        "trivial (s + mean change)": errors(lambda o, a, _: o + cond.delta_mean, val, scale),
        f"MLP 4 x 200 ({steps} x {batch})": errors(lambda o, a, _: mlp(o, a), val, scale),
        f"MLP, the world model's Adam {wm_lr:g} + cosine": errors(
            lambda o, a, _: mlp_wm(o, a), val, scale
        ),
    }
    for name, wm in models.items():
        tr = wm.transition
        if tr.mean_net is not None:  # its deterministic part alone
            rows[f"{name}, mean head alone"] = errors(
                lambda o, a, _, tr=tr: tr.to_next_obs(o, torch.zeros_like(o), tr.cond(o, a)),
                val,
                scale,
            )
        rows[f"{name}, single sample"] = errors(sampled(wm, 1, args.seed), val, scale)
        rows[f"{name}, mean of {args.samples}"] = errors(
            sampled(wm, args.samples, args.seed), val, scale
        )
    return {
        "dataset_id": args.dataset_id,
        "checkpoints": {"diffusion": args.world_model, "meanflow": args.meanflow},
        "budget": {"updates": steps, "batch": batch},
        "transitions": int(val.shape[0]),
        "samples": args.samples,
        "rows": rows,
        "mlp_train_s": mlp_s,
        "summary": ", ".join(f"{k}: {v['raw']:.3f}" for k, v in rows.items()),
    }


def report(payload: dict) -> str:
    """Markdown: per cell, each predictor's one-step RMSE in both units."""
    lines = [
        "| cell | budget (updates x batch) | predictor | RMSE, raw state units | "
        "RMSE, standardised per dimension |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, c in payload["cells"].items():
        b = c["budget"]
        for name, e in c["rows"].items():
            lines.append(
                f"| {key} | {b['updates']} x {b['batch']} | {name} | {e['raw']:.3f} | "
                f"{e['standardised']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", help="the cell's key, e.g. halfcheetah-medium-s0")
    p.add_argument("--dataset-id")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--world-model", help="a WorldModelModule checkpoint (stage 1)")
    p.add_argument("--meanflow", default=None, help="a MeanFlowModule checkpoint (stage 3)")
    p.add_argument("--batch", type=int, default=None, help="default: the world model's")
    p.add_argument("--transitions", type=int, default=20_000, help="held-out transitions")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    add_out_arg(p, NAME)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        print(report(load(args.out)))
        return
    if not (args.name and args.dataset_id and args.world_model):
        p.error("--name, --dataset-id and --world-model are required to measure")
    cmd = "python -m benchmarks.studies.world_model_vs_mlp " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if v is not None and k not in ("report", "out") and v is not False
    )  # fmt: skip

    def cell() -> dict:
        result = measure(args)
        print(result["summary"], flush=True)
        return result | {"command": cmd}

    def inputs(_) -> None:
        require_dataset("world_model_vs_mlp", args.dataset_id, args.data_dir)
        given = {"--world-model": args.world_model, "--meanflow": args.meanflow}
        require_checkpoints("world_model_vs_mlp", args.dataset_id, given)

    run_in_process(args.out, [(args.name, cell)], {"command": cmd}, check=inputs)


if __name__ == "__main__":
    main()
