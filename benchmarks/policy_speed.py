"""Offline-policy training throughput (Lightning module vs a plain PyTorch loop of the same
math, in float32 and in bfloat16 autocast) against CORL's single-file updates measured in the
same process, and evaluation throughput (10 episodes batched vs one at a time).

    python -m benchmarks.policy_speed [--steps 600] [--repeats 3] [--quick] [--out NAME]
    python -m benchmarks.policy_speed --count-flops   # only add FLOPs per update to the JSON

Uses the embedded halfcheetah-medium sample with device-resident sampling. Sizes: CORL's
(TD3+BC and IQL: 2 x 256, batch 256; ReBRAC at batch 256 with its 3 x 256 nets, and at its
paper batch 1024). The CORL peer (``corl_reference.py``) runs in float32 as CORL does, and
also under the same bfloat16 autocast for a like-for-like view. ``bf16-mixed`` is Lightning's
``--trainer.precision bf16-mixed`` (matmuls in bfloat16, which CPUs with AVX512-BF16 or AMX run
several times faster; parameters and optimiser state stay float32).
Each rate is the best of ``--repeats`` timed runs, measured in turn: this VM's speed drifts
by up to ~25% between runs a few minutes apart, which a single run per row mixes into the ratios.
Every row also gets its matmul FLOPs per update (``torch.utils.flop_counter``), and the run
measures the fp32 matmul peak, so the report shows each update's share of the machine's peak.
Writes benchmarks/results/policy_speed.json (``--quick``: policy_speed_quick), once: where that
file exists nothing runs, and ``--out NAME`` runs it again into results/NAME.json
(``--count-flops`` adds the FLOP counts to that file in place).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import lightning.pytorch as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    RESULTS,
    GlobalOnly,
    add_out_arg,
    machine,
    matmul_peak,
    run_once,
    save,
    shown_command,
    shown_path,
)
from benchmarks.corl_reference import corl_iql, corl_td3bc
from lit_itpo.data.datamodule import MinariDataModule, TransitionSampler
from lit_itpo.evaluation import run_episodes
from lit_itpo.modules import IQLModule, ReBRACModule, TD3BCModule

DID = "lit_itpo/halfcheetah/medium-small-v0"
PRECISIONS = ("32-true", "bf16-mixed")


def autocast(precision: str):
    """The autocast Lightning's ``bf16-mixed`` applies on CPU, for the plain loops."""
    if precision == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _StepTimer(pl.Callback):
    """Wall time between the ``skip``-th and the last training batch."""

    def __init__(self, skip: int):
        self.skip, self.t0, self.t1, self.n = skip, None, None, 0

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.skip:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        self.t1 = time.perf_counter()
        self.n = trainer.global_step - self.skip


def lightning_rate(cls, kwargs: dict, dm: MinariDataModule, steps: int, precision: str) -> float:
    model = cls(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, DID, **kwargs)
    timer = _StepTimer(skip=50)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[timer],
        enable_model_summary=False,
        log_every_n_steps=50,
        precision=precision,
    )
    trainer.fit(model, datamodule=dm)
    return timer.n / (timer.t1 - timer.t0)


def plain_rate(cls, kwargs: dict, dm: MinariDataModule, steps: int, precision: str) -> float:
    """The same losses and optimisers in a bare loop: no Trainer, no logging."""
    return timed_rate(plain_update(cls, kwargs, dm, steps), steps, precision)


def plain_update(cls, kwargs: dict, dm: MinariDataModule, steps: int):
    """``update(i)``: update ``i`` of ``cls``'s losses and optimisers on the next batch."""
    m = cls(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, DID, **kwargs)
    opts = m.configure_optimizers()
    sampler = iter(TransitionSampler(dm.train_data, dm.hparams.batch_size, steps, seed=0))
    hp = m.hparams

    def step(i: int, batch) -> None:
        if cls is IQLModule:
            for o in opts:
                o.zero_grad(set_to_none=True)
            m.loss(batch)[0].backward()
            for o in opts:
                o.step()
            with torch.no_grad():
                torch._foreach_lerp_(
                    list(m.critic_target.parameters()), list(m.critic.parameters()), hp.tau
                )
            return
        c, _ = m.critic_loss(batch)
        opts[1].zero_grad(set_to_none=True)
        c.backward()
        opts[1].step()
        if i % hp.policy_freq == 0:
            m.critic.requires_grad_(False)
            a, _ = m.actor_loss(batch)
            m.critic.requires_grad_(True)
            opts[0].zero_grad(set_to_none=True)
            a.backward()
            opts[0].step()
            m.update_targets()

    return lambda i: step(i, next(sampler))


def corl_rate(make, dm: MinariDataModule, steps: int, precision: str) -> float:
    """CORL's own update (``corl_reference``, 1-based) on the same data and sampling."""
    return timed_rate(corl_update(make, dm), steps, precision)


def corl_update(make, dm: MinariDataModule):
    _, update = make(dm.train_data, dm.stats["obs_mean"], dm.stats["obs_std"], batch=256)
    return lambda i: update(i + 1)


def update_flops(update, warmup: int = 4, count: int = 4) -> float:
    """Matmul FLOPs (forward and backward, as ``torch.utils.flop_counter`` counts them) per
    update, averaged over ``count`` updates (an even number: the delayed actor moves every
    second one) after ``warmup``."""
    for i in range(warmup):
        update(i)
    fc = FlopCounterMode(display=False)
    fc.mod_tracker = GlobalOnly()
    with fc:
        for i in range(warmup, warmup + count):
            update(i)
    return fc.get_total_flops() / count


def timed_rate(update, steps: int, precision: str, warmup: int = 50) -> float:
    """Updates/s of ``update(i)`` for i in ``[warmup, steps)``, after ``warmup`` untimed ones,
    each update in its own ``precision`` autocast region, as Lightning enters one per training
    step. One region around all updates would be wrong: autocast caches the bfloat16 copy of
    every parameter until the region ends, so the optimiser's in-place updates would never
    reach the matmuls (and the per-step casts would go untimed)."""

    def one(i: int) -> None:
        with autocast(precision):
            update(i)

    for i in range(warmup):
        one(i)
    t0 = time.perf_counter()
    for i in range(warmup, steps):
        one(i)
    return (steps - warmup) / (time.perf_counter() - t0)


def eval_rates(dm: MinariDataModule, episodes: int = 10, max_steps: int = 1000) -> dict:
    m = ReBRACModule(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, DID)
    seeds = list(range(episodes))
    t0 = time.perf_counter()
    res = run_episodes(m.act, dm.env_spec, seeds, max_episode_steps=max_steps)
    batched = float(res["length"].sum()) / (time.perf_counter() - t0)
    t0, n = time.perf_counter(), 0
    for s in seeds:
        n += int(run_episodes(m.act, dm.env_spec, [s], max_episode_steps=max_steps)["length"].sum())
    single = n / (time.perf_counter() - t0)
    return {
        "episodes": episodes,
        "max_steps": max_steps,
        "batched_env_steps_per_s": batched,
        "one_at_a_time_env_steps_per_s": single,
    }


def report(payload: dict) -> str:
    """Markdown: each module in each precision beside CORL's update measured in the same run."""
    peer = {(p["algorithm"], p["precision"]): p["updates_per_s"] for p in payload["corl_reference"]}
    lines = [
        "| algorithm | batch | precision | Lightning updates/s | plain loop | Lightning overhead "
        "| CORL's update, same run (float32 / bf16) | Lightning / CORL float32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["training"]:
        p32, p16 = peer.get((r["algorithm"], "32-true")), peer.get((r["algorithm"], "bf16-mixed"))
        same = p32 is not None and r["batch"] == 256
        lines.append(
            f"| {r['algorithm']} | {r['batch']} | {r['precision']} | "
            f"{r['lightning_updates_per_s']:.0f} | {r['plain_updates_per_s']:.0f} | "
            f"{100 * r['lightning_overhead']:.0f}% | "
            + (
                f"{p32:.0f} / {p16:.0f} | {r['lightning_updates_per_s'] / p32:.2f}x |"
                if same
                else " | |"
            )
        )
    if all("flops_per_update" in r for r in payload["training"] + payload["corl_reference"]):
        lines += ["", *flops_table(payload)]
    ev = payload["evaluation"]
    lines.append(
        f"\nEvaluation: {ev['episodes']} episodes of {ev['max_steps']} steps stepped together: "
        f"{ev['batched_env_steps_per_s']:.0f} env steps/s; one at a time: "
        f"{ev['one_at_a_time_env_steps_per_s']:.0f} env steps/s."
    )
    return "\n".join(lines)


def flops_table(payload: dict) -> list[str]:
    """Float32 rows: matmul FLOPs per update (counted), the FLOP/s they reach (counted FLOPs x
    plain-loop updates/s) and, when the run measured it, the share of the machine's fp32 matmul
    peak; plus what 1.5x CORL's rate would need at CORL's FLOPs per update."""
    peak = payload.get("matmul_peak_flops")
    lines = [
        "| float32 update | batch | MFLOP per update | updates/s | GFLOP/s"
        + (f" | share of the matmul peak ({peak / 1e9:.0f} GFLOP/s) |" if peak else " |"),
        "| --- | --- | --- | --- | ---" + (" | --- |" if peak else " |"),
    ]
    rows = [
        (f"CORL {p['algorithm']}", p["batch"], p["flops_per_update"], p["updates_per_s"])
        for p in payload["corl_reference"]
        if p["precision"] == "32-true"
    ] + [
        (
            f"lit_itpo {r['algorithm']} (plain loop)",
            r["batch"],
            r["flops_per_update"],
            r["plain_updates_per_s"],
        )
        for r in payload["training"]
        if r["precision"] == "32-true"
    ]
    for name, batch, f, rate in rows:
        share = f" | {100 * f * rate / peak:.0f}% |" if peak else " |"
        lines.append(
            f"| {name} | {batch} | {f / 1e6:.0f} | {rate:.0f} | {f * rate / 1e9:.0f}{share}"
        )
    for name, _, f, rate in rows[: len(payload["corl_reference"]) // 2]:
        lines.append(
            f"\n1.5x {name}'s rate ({1.5 * rate:.0f} updates/s) at its FLOPs per update needs "
            f"{1.5 * f * rate / 1e9:.0f} GFLOP/s"
            + (f" ({100 * 1.5 * f * rate / peak:.0f}% of the peak)." if peak else ".")
        )
    cmd = shown_command(payload.get("flops_command", payload["command"]))
    return [*lines, f"\nFLOPs counted by `{cmd}` (torch.utils.flop_counter, matmuls only)."]


SETTINGS = [
    ("TD3+BC", TD3BCModule, {}, 256),
    ("IQL", IQLModule, {}, 256),
    ("ReBRAC", ReBRACModule, {}, 256),
    ("ReBRAC", ReBRACModule, {}, 1024),
]
CORL = {"TD3+BC": corl_td3bc, "IQL": corl_iql}


def row_flops(name: str, batch: int, corl: bool = False) -> float:
    """FLOPs per update of one row (float32 counting; bf16 autocast runs the same matmuls)."""
    dm = MinariDataModule(DID, data_dir="embedded", batch_size=batch, epoch_steps=16)
    dm.setup()
    if corl:
        return update_flops(corl_update(CORL[name], dm))
    cls, kw = next((c, k) for n, c, k, _ in SETTINGS if n == name)
    return update_flops(plain_update(cls, kw, dm, 16))


def annotate_flops(name: str = "policy_speed") -> None:
    """Add ``flops_per_update`` to every row of ``results/<name>.json`` (the committed
    policy_speed.json by default)."""
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    for r in payload["training"]:
        r["flops_per_update"] = row_flops(r["algorithm"], r["batch"])
    for p in payload["corl_reference"]:
        p["flops_per_update"] = row_flops(p["algorithm"], p["batch"], corl=True)
    payload["flops_command"] = "python -m benchmarks.policy_speed --count-flops"
    print(f"{name}: wrote {shown_path(save(name, payload))}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--count-flops",
        action="store_true",
        help="only count the FLOPs per update of every row of the committed results (no "
        "timing; FLOP counts do not depend on the machine or its load)",
    )
    add_out_arg(ap, None, "policy_speed[_quick]")
    args = ap.parse_args(argv)
    name = args.out or "policy_speed" + ("_quick" if args.quick else "")
    if args.count_flops:
        return annotate_flops(name)
    run_once(name, lambda: measure(args))


def measure(args) -> dict:
    """The CORL peers, the training rows and the evaluation rates (the results file)."""
    steps = 120 if args.quick else args.steps
    reps = 1 if args.quick else args.repeats
    settings = SETTINGS[:1] if args.quick else SETTINGS
    rows, peers = [], []
    for name, make in CORL.items():
        if args.quick and name != "TD3+BC":
            continue
        dm = MinariDataModule(DID, data_dir="embedded", batch_size=256, epoch_steps=steps)
        dm.setup()
        for precision in PRECISIONS:
            peers.append(
                {
                    "algorithm": name,
                    "batch": 256,
                    "precision": precision,
                    "updates_per_s": max(
                        corl_rate(make, dm, steps, precision) for _ in range(reps)
                    ),
                    "flops_per_update": row_flops(name, 256, corl=True),
                }
            )
            print(peers[-1], flush=True)
    corl32 = {p["algorithm"]: p["updates_per_s"] for p in peers if p["precision"] == "32-true"}
    for name, cls, kw, batch in settings:
        dm = MinariDataModule(DID, data_dir="embedded", batch_size=batch, epoch_steps=steps)
        dm.setup()
        for precision in PRECISIONS:
            light, plain = [], []
            for _ in range(reps):  # alternate, so both see the same drift
                light.append(lightning_rate(cls, kw, dm, steps, precision))
                plain.append(plain_rate(cls, kw, dm, steps, precision))
            light, plain = max(light), max(plain)
            row = {
                "algorithm": name,
                "batch": batch,
                "precision": precision,
                "lightning_updates_per_s": light,
                "plain_updates_per_s": plain,
                "lightning_overhead": plain / light - 1,
                "flops_per_update": row_flops(name, batch),
            }
            if name in corl32 and batch == 256:
                row["vs_corl_float32"] = light / corl32[name]
            rows.append(row)
            print(row, flush=True)
    dm = MinariDataModule(DID, data_dir="embedded")
    ev = eval_rates(dm, max_steps=200 if args.quick else 1000)
    print(ev)
    return {
        "machine": machine(),
        "dataset_id": DID,
        "training": rows,
        "corl_reference": peers,
        "evaluation": ev,
        "matmul_peak_flops": matmul_peak(),
        "repeats": reps,
        "command": "python -m benchmarks.policy_speed"
        + (" --quick" if args.quick else f" --steps {steps} --repeats {reps}"),
    }


if __name__ == "__main__":
    main()
